"""fs.*: the happy paths, and the attack suite (traversal, symlinks, races, /proc, devices)."""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path

import pytest

from tests.host.conftest import Probe

PERMS = {"fs": [{"path": "data", "mode": "ro"}, {"path": "out", "mode": "rw"}]}


@pytest.fixture
def probe(make_probe, workspace: Path) -> Probe:
    (workspace / "data").mkdir()
    (workspace / "out").mkdir()
    (workspace / "data" / "a.txt").write_text("alpha\nbeta\n")
    (workspace / "secret.txt").write_text("top secret")
    return make_probe(PERMS)


def test_read_write_list_stat_roundtrip(probe: Probe, workspace: Path) -> None:
    assert probe.value("fs.read_text", path="data/a.txt") == "alpha\nbeta\n"
    assert probe.value("fs.write_text", path="out/b.txt", text="héllo") == {"bytes": 6}
    assert probe.value("fs.write_text", path="out/b.txt", text="!", append=True) == {"bytes": 1}
    assert (workspace / "out" / "b.txt").read_text() == "héllo!"
    raw = base64.b64encode(b"\x00\x01\xff").decode()
    probe.value("fs.write_bytes", path="out/bin", data_b64=raw)
    assert probe.value("fs.read_bytes", path="out/bin") == {"data_b64": raw}
    names = [e["name"] for e in probe.value("fs.list", path="out")]
    assert names == ["b.txt", "bin"]
    st = probe.value("fs.stat", path="out/b.txt")
    assert st["type"] == "file" and st["size"] == 7
    assert probe.value("fs.exists", path="out/b.txt") is True
    assert probe.value("fs.exists", path="out/nope") is False


def test_mkdir_copy_rename_remove(probe: Probe, workspace: Path) -> None:
    probe.value("fs.mkdir", path="out/x/y", parents=True)
    probe.value("fs.copy", src="data/a.txt", dst="out/x/y/a.txt")
    probe.value("fs.rename", src="out/x/y/a.txt", dst="out/moved.txt")
    assert (workspace / "out" / "moved.txt").read_text() == "alpha\nbeta\n"
    probe.value("fs.remove", path="out/x", recursive=True)
    assert not (workspace / "out" / "x").exists()
    assert probe.error("fs.mkdir", path="out/moved.txt")["code"] == "exists"
    assert probe.error("fs.read_text", path="out/none.txt")["code"] == "not_found"


def test_glob_and_grep(probe: Probe, workspace: Path) -> None:
    (workspace / "data" / "sub").mkdir()
    (workspace / "data" / "sub" / "c.md").write_text("beta again\n")
    assert probe.value("fs.glob", pattern="data/**/*.md") == ["data/sub/c.md"]
    assert probe.value("fs.glob", pattern="*.txt", root="data") == ["data/a.txt"]
    hits = probe.value("fs.grep", pattern="^beta", path="data")
    assert {(h["path"], h["line"]) for h in hits} == {("data/a.txt", 2), ("data/sub/c.md", 1)}
    assert probe.error("fs.grep", pattern="(", path="data")["code"] == "invalid_argument"


# -- attacks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "../secret.txt",
        "data/../secret.txt",
        "data/../../ws/secret.txt",
        "secret.txt",
        "/etc/passwd",
        "/proc/self/environ",
        "/proc/self/root/etc/passwd",
        "/dev/zero",
        ".",
    ],
    ids=[
        "dotdot",
        "inner-dotdot",
        "deep-dotdot",
        "sibling",
        "absolute",
        "proc-environ",
        "proc-root",
        "device",
        "base-dir",
    ],
)
def test_reads_outside_the_grant_are_refused(probe: Probe, path: str) -> None:
    message = probe.denied("fs.read_text", path=path)
    assert "outside every directory" in message and "[permissions].fs" in message


@pytest.mark.parametrize(
    "method,params",
    [
        ("fs.write_text", {"path": "data/new.txt", "text": "x"}),
        ("fs.write_text", {"path": "../escape.txt", "text": "x"}),
        ("fs.write_text", {"path": "/tmp/escape.txt", "text": "x"}),
        ("fs.mkdir", {"path": "data/d"}),
        ("fs.remove", {"path": "data/a.txt"}),
        ("fs.rename", {"src": "data/a.txt", "dst": "out/a.txt"}),
        ("fs.copy", {"src": "out/x", "dst": "data/x"}),
        ("fs.copy", {"src": "../secret.txt", "dst": "out/stolen.txt"}),
    ],
    ids=[
        "ro-dir",
        "dotdot",
        "absolute",
        "mkdir-ro",
        "remove-ro",
        "rename-from-ro",
        "copy-to-ro",
        "copy-from-outside",
    ],
)
def test_writes_outside_rw_are_refused_and_nothing_changes(
    probe: Probe, workspace: Path, method: str, params: dict
) -> None:
    before = sorted(str(p) for p in workspace.parent.rglob("*"))
    probe.denied(method, **params)
    assert sorted(str(p) for p in workspace.parent.rglob("*")) == before
    assert (workspace / "data" / "a.txt").read_text() == "alpha\nbeta\n"


def test_symlink_planted_inside_pointing_out_is_refused(probe: Probe, workspace: Path) -> None:
    os.symlink(workspace / "secret.txt", workspace / "data" / "link.txt")
    os.symlink("/etc", workspace / "out" / "etc")
    os.symlink(workspace, workspace / "out" / "up")
    assert "resolves to" in probe.denied("fs.read_text", path="data/link.txt")
    probe.denied("fs.read_text", path="out/etc/passwd")
    probe.denied("fs.write_text", path="out/up/secret.txt", text="owned")
    probe.denied("fs.write_text", path="out/etc/evil", text="x")
    assert (workspace / "secret.txt").read_text() == "top secret"
    # Listing shows the link as a link; globbing and grepping skip what it points to.
    assert {"name": "link.txt", "type": "symlink"}.items() <= next(
        e for e in probe.value("fs.list", path="data") if e["name"] == "link.txt"
    ).items()
    assert "secret" not in str(probe.value("fs.grep", pattern="secret", path="data"))
    assert probe.value("fs.glob", pattern="**/passwd") == []


def test_dangling_symlink_write_is_refused(probe: Probe, workspace: Path, tmp_path: Path) -> None:
    target = tmp_path / "created-outside.txt"
    os.symlink(target, workspace / "out" / "dangling")
    probe.denied("fs.write_text", path="out/dangling", text="x")
    assert not target.exists()


def test_fifo_and_device_inside_the_grant_are_refused(probe: Probe, workspace: Path) -> None:
    os.mkfifo(workspace / "out" / "pipe")
    message = probe.denied("fs.read_text", path="out/pipe")
    assert "not a regular file" in message
    probe.denied("fs.write_text", path="out/pipe", text="x")


def test_symlink_swapped_in_after_the_check_is_refused(
    probe: Probe, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: the path is checked, then a directory on it is replaced by a link out."""
    from skillyard.host import access

    (workspace / "out" / "dir").mkdir()
    (workspace / "out" / "dir" / "f.txt").write_text("inside")
    real_resolve = access.Effective.fs_resolve

    def resolve_then_swap(self, path, **kw):  # type: ignore[no-untyped-def]
        real = real_resolve(self, path, **kw)
        if path == "out/dir/f.txt":
            os.rename(workspace / "out" / "dir", workspace / "out" / "gone")
            os.symlink(workspace.parent, workspace / "out" / "dir")
        return real

    monkeypatch.setattr(access.Effective, "fs_resolve", resolve_then_swap)
    (workspace.parent / "f.txt").write_text("outside")
    out = probe("fs.write_text", path="out/dir/f.txt", text="pwned")
    assert out["code"] == "permission_denied" and "changed while" in out["message"]
    assert (workspace.parent / "f.txt").read_text() == "outside"


def test_concurrent_symlink_flipping_never_escapes(probe: Probe, workspace: Path) -> None:
    """A thread flips out/flip between a real dir and a link out; no read ever escapes."""
    outside = workspace.parent / "outside"
    outside.mkdir()
    (outside / "f.txt").write_text("SECRET")
    inside = workspace / "out" / "real"
    inside.mkdir()
    (inside / "f.txt").write_text("fine")
    flip = workspace / "out" / "flip"
    stop = threading.Event()

    def flipper() -> None:
        while not stop.is_set():
            try:
                os.symlink(inside, flip)
                os.unlink(flip)
                os.symlink(outside, flip)
                os.unlink(flip)
            except OSError:
                pass

    t = threading.Thread(target=flipper)
    t.start()
    try:
        seen = set()
        for _ in range(200):
            out = probe("fs.read_text", path="out/flip/f.txt")
            seen.add(out.get("value") if out["ok"] else out["code"])
    finally:
        stop.set()
        t.join()
    assert "SECRET" not in seen


def test_bad_params_are_invalid_arguments(probe: Probe) -> None:
    assert probe.error("fs.read_text", path="data/a.txt", bogus=1)["code"] == "invalid_argument"
    assert probe.error("fs.write_text", path="out/x.txt")["code"] == "invalid_argument"
    assert probe.error("fs.write_bytes", path="out/x", data_b64="%%%")["code"] == "invalid_argument"
    probe.denied("fs.read_text", path="data/a\0.txt")
    probe.denied("fs.read_text", path=5)


def test_no_fs_permission_denies_everything(make_probe, workspace: Path) -> None:
    (workspace / "f.txt").write_text("x")
    p = make_probe({})
    assert "granted: none" in p.denied("fs.read_text", path="f.txt")


def test_glob_entry_grants_matching_files_only(make_probe, workspace: Path) -> None:
    (workspace / "logs").mkdir()
    (workspace / "logs" / "a.log").write_text("A")
    (workspace / "logs" / "a.txt").write_text("T")
    p = make_probe({"fs": [{"path": "logs/*.log", "mode": "ro"}]})
    assert p.value("fs.read_text", path="logs/a.log") == "A"
    p.denied("fs.read_text", path="logs/a.txt")


def test_links_themselves_can_be_inspected_and_removed_not_their_targets(
    probe: Probe, workspace: Path
) -> None:
    os.symlink(workspace / "secret.txt", workspace / "out" / "link")
    assert probe.value("fs.stat", path="out/link")["type"] == "symlink"
    assert probe.value("fs.exists", path="out/link") is True
    probe.value("fs.rename", src="out/link", dst="out/link2")
    probe.denied("fs.read_text", path="out/link2")
    probe.denied("fs.copy", src="out/link2", dst="out/copy.txt")
    probe.value("fs.remove", path="out/link2")
    assert not os.path.lexists(workspace / "out" / "link2")
    assert (workspace / "secret.txt").read_text() == "top secret"
    # A link cannot be moved out of the granted area either.
    os.symlink(workspace / "secret.txt", workspace / "out" / "link3")
    probe.denied("fs.rename", src="out/link3", dst="../moved")
    probe.denied("fs.remove", path="../secret.txt")


def test_a_file_used_as_a_directory_is_not_a_race(probe: Probe) -> None:
    assert probe.error("fs.read_text", path="data/a.txt/x")["code"] == "not_a_directory"
    assert probe.value("fs.exists", path="data/a.txt/x") is False
