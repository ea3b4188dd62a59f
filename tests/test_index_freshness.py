"""The warm index notices every change that feeds a package's cards, on both of its paths.

``aged``: the stamp is older than the racy window, so freshness is decided by stat
signatures alone (the fast path every discovery of an unchanged home takes).
``racy``: the files changed just before they were stamped, so the index re-walks the
package and compares contents before trusting its row.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

import skillyard.index
from skillyard import SyncRuntime
from skillyard.index import PackageIndex
from skillyard.manifests import load_package
from skillyard.roots import Discovery, discover
from skillyard.store import Store

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "skills"
AGED = -(10**18)  # no stamp is racy
RACY = 10**18  # every stamp is racy


class Home:
    def __init__(self, tmp_path: Path, mode: str) -> None:
        self.tmp = tmp_path
        self.mode = mode
        self.roots = {"root": [tmp_path / "root"], "project": [], "user": [tmp_path / "user"]}
        self.user = tmp_path / "user"
        self.pkg = self.user / "text-tools"
        shutil.copytree(EXAMPLES / "text-tools", self.pkg)
        self.store = Store(tmp_path / "state.db")

    def discover(self) -> Discovery:
        return discover(self.roots, index=PackageIndex(self.store))

    def stamps(self) -> dict[str, tuple[list[int], str | None]]:
        """Each package's stat signatures and racy content hash, as stored."""
        rows = self.store.query("SELECT path, sig, racy FROM package_index")
        return {Path(p).name: (orjson.loads(sig), racy) for p, sig, racy in rows}

    def settle(self) -> None:
        """In ``aged`` mode, make sure the next edit gets a later ctime than any stamp."""
        if self.mode != "aged":
            return
        newest = max(
            os.lstat(os.path.join(d, n)).st_ctime_ns
            for d, dirs, files in os.walk(self.tmp)
            for n in [".", *dirs, *files]
        )
        probe = self.tmp / "tick-probe"
        deadline = time.monotonic() + 5
        while True:
            probe.write_bytes(b"x")
            if os.stat(probe).st_ctime_ns > newest:
                return
            assert time.monotonic() < deadline, "the file system clock did not advance"


@pytest.fixture(params=["aged", "racy"])
def home(request, tmp_path, monkeypatch):
    # Pin the window so that a slow machine cannot turn one mode into the other.
    monkeypatch.setattr(skillyard.index, "RACY_NS", AGED if request.param == "aged" else RACY)
    h = Home(tmp_path, request.param)
    found = h.discover()
    assert "text-tools" in found.packages and not found.problems
    racy = h.stamps()["text-tools"][1]
    assert (racy is None) == (request.param == "aged")
    h.settle()
    yield h
    h.store.close()


def expect_fresh(h: Home) -> Discovery:
    """A warm discovery that agrees with loading the package from scratch."""
    found = h.discover()
    again = load_package(h.pkg, root="user")
    assert found.packages["text-tools"].cards == again.cards
    assert found.packages["text-tools"].digest == again.digest
    return found


def test_unchanged_package_is_served_without_loading_it(home, monkeypatch):
    import skillyard.roots

    def refuse(*a, **k):
        raise AssertionError("the package was loaded again although nothing changed")

    monkeypatch.setattr(skillyard.roots, "load_package", refuse)
    for _ in range(2):
        found = home.discover()
        assert list(found.packages) == ["text-tools"] and not found.problems


def test_in_place_edit_of_the_entry_file_with_the_same_size_and_mtime(home):
    before = home.discover().packages["text-tools"].digest
    entry = home.pkg / "tools.py"
    st = entry.stat()
    data = entry.read_bytes()
    assert b"import" in data
    with open(entry, "r+b") as f:  # same inode, same size, mtime put back
        f.write(data.replace(b"import", b"IMPORT", 1))
    os.utime(entry, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert entry.stat().st_size == st.st_size and entry.stat().st_mtime_ns == st.st_mtime_ns
    found = expect_fresh(home)
    assert found.packages["text-tools"].digest != before


def test_edited_schema_file_changes_the_card(home):
    schema = home.pkg / "schemas" / "stats.input.json"
    schema.write_text(schema.read_text().replace('"maximum": 50', '"maximum": 70'))
    found = expect_fresh(home)
    card = next(c for c in found.packages["text-tools"].cards if c.method == "stats")
    assert card.input_schema["properties"]["top"]["maximum"] == 70


def test_added_file_changes_the_digest(home):
    before = home.discover().packages["text-tools"].digest
    home.settle()
    (home.pkg / "schemas" / "notes.txt").write_text("new")
    assert expect_fresh(home).packages["text-tools"].digest != before


def test_added_sub_directory_changes_the_digest(home):
    before = home.discover().packages["text-tools"].digest
    home.settle()
    (home.pkg / "data").mkdir()
    (home.pkg / "data" / "words.txt").write_text("alpha")
    assert expect_fresh(home).packages["text-tools"].digest != before


def test_removed_file_changes_the_digest_and_a_removed_reference_breaks(home):
    extra = home.pkg / "help" / "extra.md"
    extra.write_text("more help")
    with_extra = expect_fresh(home).packages["text-tools"].digest
    home.settle()
    extra.unlink()
    assert expect_fresh(home).packages["text-tools"].digest != with_extra
    home.settle()
    (home.pkg / "schemas" / "stats.output.json").unlink()
    found = home.discover()
    assert found.packages == {}
    assert found.problems[0].kind == "broken" and "stats.output.json" in found.problems[0].message


def test_removed_package_is_gone_and_so_is_its_row(home):
    other = home.user / "other-tools"
    shutil.copytree(EXAMPLES / "text-tools", other)
    assert "other-tools" in home.discover().packages
    elsewhere = discover({"user": [home.tmp / "elsewhere"]}, index=PackageIndex(home.store))
    assert elsewhere.packages == {}
    assert set(home.stamps()) == {"text-tools", "other-tools"}  # other roots keep their rows
    shutil.rmtree(home.pkg)
    found = home.discover()
    assert list(found.packages) == ["other-tools"] and found.problems == []
    assert set(home.stamps()) == {"other-tools"}


def test_package_replaced_by_a_copy_with_the_same_times_is_loaded_again(home):
    # copytree keeps mtimes; the new inodes and ctimes still tell the copy apart.
    shutil.rmtree(home.pkg)
    shutil.copytree(EXAMPLES / "text-tools", home.pkg)
    manifest = home.pkg / "skill.toml"
    st = manifest.stat()
    manifest.write_text(manifest.read_text().replace('"1.0.0"', '"1.0.1"', 1))
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert expect_fresh(home).packages["text-tools"].version == "1.0.1"


def test_broken_manifest_is_reported_every_time_then_fixed(home):
    manifest = home.pkg / "skill.toml"
    good = manifest.read_text()
    manifest.write_text(good.replace('runtime = "python"', 'runtime = "fortran"'))
    for _ in range(2):  # broken packages are never cached: the error comes back each time
        found = home.discover()
        assert found.packages == {}
        (problem,) = found.problems
        assert problem.kind == "broken" and "fortran" in problem.message
        assert problem.error is not None and "skill.toml" in str(problem.error)
    home.settle()
    manifest.write_text(good)
    found = expect_fresh(home)
    assert not found.problems


def test_manifest_removed_makes_the_directory_no_package(home):
    (home.pkg / "skill.toml").unlink()
    found = home.discover()
    assert found.packages == {} and found.problems == []


def test_layering_is_the_same_with_a_warm_index(home):
    for layer in ("root", "project"):
        shutil.copytree(EXAMPLES / "text-tools", home.tmp / layer / "text-tools")
    home.roots["project"] = [home.tmp / "project"]
    for _ in range(2):  # cold for the new packages, then warm for all of them
        found = home.discover()
        assert found.packages["text-tools"].root == "root"
        kinds = sorted((p.layer, p.kind) for p in found.problems)
        assert kinds == [("project", "owned"), ("user", "owned")]
    shutil.rmtree(home.tmp / "root" / "text-tools")
    found = home.discover()
    assert found.packages["text-tools"].root == "project"
    assert [(p.layer, p.kind) for p in found.problems] == [("user", "shadowed")]


def test_same_tick_edit_behind_equal_signatures_is_caught_by_content(tmp_path, monkeypatch):
    monkeypatch.setattr(skillyard.index, "RACY_NS", RACY)
    # Simulates an edit made within one timestamp tick of the stamp: every stat the stamp
    # holds still matches, and only the content hash of a racy stamp can tell.
    h = Home(tmp_path, "racy")
    h.discover()
    entry = h.pkg / "tools.py"
    entry.write_bytes(entry.read_bytes().replace(b"import", b"IMPORT", 1))
    assert h.stamps()["text-tools"][1] is not None
    stamp = skillyard.index.scan(str(h.pkg))
    (names,) = h.store.query("SELECT names FROM package_index")[0]
    assert stamp is not None and stamp[0] == names.decode().split("\0")
    h.store.execute("UPDATE package_index SET sig = ?", (orjson.dumps(stamp[1]),))
    expect_fresh(h)


def test_a_racy_stamp_is_stored_clean_once_the_files_have_aged(tmp_path, monkeypatch):
    monkeypatch.setattr(skillyard.index, "RACY_NS", RACY)
    h = Home(tmp_path, "racy")
    h.discover()
    assert h.stamps()["text-tools"][1] is not None
    monkeypatch.setattr(skillyard.index, "RACY_NS", AGED)
    assert "text-tools" in h.discover().packages
    assert h.stamps()["text-tools"][1] is None
    assert "text-tools" in expect_fresh(h).packages


def test_a_damaged_stamp_is_a_miss(tmp_path, monkeypatch):
    monkeypatch.setattr(skillyard.index, "RACY_NS", RACY)
    h = Home(tmp_path, "racy")
    h.discover()
    damage = [
        ("sig", b"["),
        ("sig", b"[1, 2]"),
        ("names", b""),
        ("names", b"\0/nothing-here"),
        ("names", b"\xff"),
        ("racy", "0" * 64),
        ("version", "0"),
    ]
    for column, bad in damage:
        h.store.execute(f"UPDATE package_index SET {column} = ?", (bad,))
        found = h.discover()
        assert "text-tools" in found.packages and not found.problems
        assert h.stamps()["text-tools"][1] is not None  # stamped again from scratch


def test_runtime_lists_the_same_tools_cold_and_warm(tmp_path):
    home = tmp_path / "home"
    shutil.copytree(EXAMPLES / "text-tools", home / "skills" / "user" / "text-tools")
    names = []
    for _ in range(2):
        rt = SyncRuntime.open(home)
        try:
            names.append(sorted(c.name for c in rt.list()))
            assert rt.call("text-tools-slugify", {"text": "Hello World"}).output == {
                "slug": "hello-world"
            }
        finally:
            rt.close()
    assert names[0] == names[1] and "text-tools-stats" in names[0]


def test_a_file_name_that_is_not_utf8_never_breaks_discovery(tmp_path):
    h = Home(tmp_path, "racy")
    with open(os.fsencode(h.pkg) + b"/\xff.txt", "wb") as f:
        f.write(b"x")
    for _ in range(2):  # the loader's verdict every time, and nothing stored that cannot be read
        found = h.discover()
        assert found.packages == {}
        assert found.problems[0].kind == "broken" and found.problems[0].skill_id == "text-tools"
    assert h.stamps() == {}


def test_a_state_file_that_cannot_be_written_only_costs_a_reload(tmp_path, monkeypatch):
    h = Home(tmp_path, "racy")

    def locked(rows):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(PackageIndex, "_write", lambda self, rows, gone: locked(rows))
    for _ in range(2):
        found = h.discover()
        assert list(found.packages) == ["text-tools"] and not found.problems
    assert h.stamps() == {}
    monkeypatch.undo()
    h.discover()
    assert list(h.stamps()) == ["text-tools"]


def test_content_hash_never_opens_a_fifo_that_replaced_a_file(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "data.txt").write_text("x")
    stamp = skillyard.index.scan(str(pkg))
    assert stamp is not None
    (pkg / "data.txt").unlink()
    os.mkfifo(pkg / "data.txt")  # swapped after the walk: must not block on open
    with pytest.raises(OSError, match="no longer a regular file"):
        skillyard.index.content_hash(str(pkg), *stamp)


def test_a_package_too_large_to_hash_is_loaded_but_not_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(skillyard.index, "RACY_NS", RACY)
    monkeypatch.setattr(skillyard.index, "MAX_PACKAGE_BYTES", 100)
    h = Home(tmp_path, "racy")
    for _ in range(2):
        found = h.discover()
        assert list(found.packages) == ["text-tools"] and not found.problems
    assert h.stamps() == {}


@pytest.mark.parametrize("enabled", [True, False])
def test_discovery_leaves_the_cyclic_collector_as_it_found_it(tmp_path, monkeypatch, enabled):
    import gc

    import skillyard.roots

    seen = []
    real = skillyard.roots.load_package

    def load(*a, **k):
        seen.append(gc.isenabled())  # loaders run with the collector the host chose
        return real(*a, **k)

    monkeypatch.setattr(skillyard.roots, "load_package", load)
    h = Home(tmp_path, "racy")
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        h.discover()
        h.discover()
        assert gc.isenabled() is enabled and seen == [enabled]
    finally:
        (gc.enable if was else gc.disable)()
