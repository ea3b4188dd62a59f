from __future__ import annotations

from pathlib import Path

import pytest

from skillyard import SYSTEM, Caller, Runtime, SkillNotFound
from skillyard.errors import ConfigError
from skillyard.roots import Home, discover


def pkg(
    root: Path, name: str, *, description: str = "", hidden: bool = False, broken: bool = False
) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "skill.py").write_text(f"def run(args):\n    return {{'from': {str(root.name)!r}}}\n")
    manifest = (
        f'version = "1.0.0"\ndescription = "{description}"\nruntime = "python"\nentry = "skill.py"\n'
        f'[[methods]]\nname = "run"\nhidden = {str(hidden).lower()}\n'
    )
    if broken:
        manifest = manifest.replace('runtime = "python"', 'runtime = "basic"')
    (path / "skill.toml").write_text(manifest)
    return path


@pytest.fixture
def layers(tmp_path):
    dirs = {name: tmp_path / name for name in ("root", "project", "user")}
    for d in dirs.values():
        d.mkdir()
    return dirs


def test_project_overrides_user(layers):
    pkg(layers["project"], "notes")
    pkg(layers["user"], "notes")
    found = discover({k: [v] for k, v in layers.items()})
    assert found.packages["notes"].root == "project"
    (problem,) = found.problems
    assert problem.kind == "shadowed" and problem.layer == "user"


def test_root_owns_its_ids_and_lower_layers_are_skipped_with_a_warning(layers):
    pkg(layers["root"], "deploy")
    pkg(layers["project"], "deploy")
    pkg(layers["user"], "deploy")
    found = discover({k: [v] for k, v in layers.items()})
    assert found.packages["deploy"].root == "root"
    kinds = sorted((p.layer, p.kind) for p in found.problems)
    assert kinds == [("project", "owned"), ("user", "owned")]
    assert "owned by the ROOT layer" in found.problems[0].message


def test_broken_package_is_reported_and_others_still_load(layers):
    pkg(layers["project"], "good")
    pkg(layers["project"], "bad", broken=True)
    (layers["project"] / "not-a-package").mkdir()
    found = discover({k: [v] for k, v in layers.items()})
    assert set(found.packages) == {"good"}
    (problem,) = found.problems
    assert problem.kind == "broken" and problem.skill_id == "bad"
    assert "runtime" in problem.message


def test_missing_root_directories_are_fine(tmp_path):
    assert discover({"user": [tmp_path / "nope"]}).packages == {}


def test_unknown_layer_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown root layer"):
        discover({"system": [tmp_path]})


def test_root_skills_are_hidden_from_delegated_tools(layers):
    pkg(layers["root"], "admin")
    pkg(layers["user"], "helper")
    rt = Runtime.memory(roots={k: [v] for k, v in layers.items()})
    assert [c.name for c in rt.list()] == ["helper-run"]
    assert [c.name for c in rt.list(caller=SYSTEM)] == ["admin-run", "helper-run"]
    with pytest.raises(SkillNotFound):
        rt.card("admin-run")
    assert rt.card("admin-run", caller=SYSTEM).root == "root"


def test_hidden_methods_are_not_listed_or_callable_by_agents(layers):
    pkg(layers["user"], "private", hidden=True)
    rt = Runtime.memory(roots={"user": [layers["user"]]})
    assert rt.list() == []
    assert rt.list(caller=SYSTEM) == []
    assert [c.name for c in rt.list(caller=SYSTEM, include_hidden=True)] == ["private-run"]


def test_capabilities_limit_who_may_see_a_card(tmp_path):
    from skillyard import Card

    rt = Runtime.memory()
    rt.add_card(Card(id="x", name="x-run", method="run", capabilities=("finance",)))
    assert rt.list() == []
    assert [c.name for c in rt.list(caller=Caller(capabilities=frozenset({"finance"})))] == [
        "x-run"
    ]


def test_home_resolution_and_config_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("SKILLYARD_HOME", str(tmp_path / "h"))
    home = Home.resolve()
    assert home.path == tmp_path / "h"
    assert home.root_dirs()["user"] == [tmp_path / "h" / "skills" / "user"]
    home.path.mkdir()
    home.config_path.write_text('[roots]\nproject = ["proj"]\n')
    assert home.root_dirs(home.config())["project"] == [tmp_path / "h" / "proj"]
    home.config_path.write_text('[roots]\nsystem = ["x"]\n')
    with pytest.raises(ConfigError, match="not a layer"):
        home.root_dirs(home.config())
    home.config_path.write_text("[roots\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        home.config()


def test_runtime_open_loads_the_home_roots(tmp_path):
    pkg(tmp_path / "skills" / "user", "notes")
    rt = Runtime.open(tmp_path)
    try:
        assert [c.name for c in rt.list()] == ["notes-run"]
        assert (tmp_path / "state.db").exists()
    finally:
        rt.store.close()
