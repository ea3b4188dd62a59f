from __future__ import annotations

import shutil
from pathlib import Path

from skillyard.index import PackageIndex, fingerprint
from skillyard.roots import discover
from skillyard.store import Store

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "skills"


def setup(tmp_path):
    root = tmp_path / "user"
    shutil.copytree(EXAMPLES / "text-tools", root / "text-tools")
    return root, Store(tmp_path / "state.db")


def test_warm_index_returns_equal_packages_without_reloading(tmp_path, monkeypatch):
    root, store = setup(tmp_path)
    cold = discover({"user": [root]}, index=PackageIndex(store)).packages["text-tools"]

    import skillyard.roots

    def refuse(*a, **k):
        raise AssertionError("the package was loaded again although nothing changed")

    monkeypatch.setattr(skillyard.roots, "load_package", refuse)
    warm = discover({"user": [root]}, index=PackageIndex(store)).packages["text-tools"]
    assert warm.cards == cold.cards
    assert warm.digest == cold.digest and warm.help == cold.help


def test_a_changed_file_is_loaded_and_validated_again(tmp_path):
    root, store = setup(tmp_path)
    discover({"user": [root]}, index=PackageIndex(store))
    manifest = root / "text-tools" / "skill.toml"
    manifest.write_text(manifest.read_text().replace('runtime = "python"', 'runtime = "fortran"'))
    found = discover({"user": [root]}, index=PackageIndex(store))
    assert found.packages == {}
    assert found.problems[0].kind == "broken" and "fortran" in found.problems[0].message


def test_fingerprint_sees_added_files(tmp_path):
    root, _ = setup(tmp_path)
    before = fingerprint(root / "text-tools")
    (root / "text-tools" / "extra.txt").write_text("x")
    assert fingerprint(root / "text-tools") != before


def test_a_damaged_index_row_is_a_miss_not_a_failure(tmp_path):
    root, store = setup(tmp_path)
    discover({"user": [root]}, index=PackageIndex(store))
    store.execute("UPDATE package_index SET package = ?", (b"{not json",))
    found = discover({"user": [root]}, index=PackageIndex(store))
    assert "text-tools" in found.packages and not found.problems
