"""Declared permissions (validation, normalisation) and operator grants (narrow, refuse)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from skillyard import Runtime, SyncRuntime
from skillyard.errors import ConfigError, ManifestError, PermissionDenied
from skillyard.host.grants import Grants
from skillyard.host.permissions import parse_permissions
from tests.host.conftest import write_skill

FULL = {
    "fs": [{"path": "data", "mode": "ro"}, {"path": "out/**", "mode": "rw", "base": "workspace"}],
    "http": {
        "hosts": ["api.example.com", {"host": "*.example.org", "methods": ["GET"], "ports": [443]}],
        "timeout_sec": 5,
    },
    "shell": {"programs": ["git", "/usr/bin/env"], "cwd": ["."], "max_output_bytes": 1000},
    "env": {"names": ["LANG", "MYAPP_*"], "optional": True},
    "models": {"embed": True},
    "tools": ["search.*"],
    "invoke": ["other-*"],
    "can_be_invoked_by": ["planner"],
}


def test_full_declaration_normalises_and_is_idempotent() -> None:
    out = parse_permissions(FULL, file="skill.toml")
    assert out["fs"][1] == {"path": "out/**", "mode": "rw", "base": "workspace", "optional": False}
    assert out["http"]["hosts"][0]["methods"][0] == "GET"
    assert out["http"]["hosts"][1] == {"host": "*.example.org", "methods": ["GET"], "ports": [443]}
    assert out["http"]["max_response_bytes"] == 1024 * 1024
    assert out["http"]["allow_private"] is False and out["http"]["allow_loopback"] is False
    assert out["shell"]["timeout_sec"] == 30.0
    assert out["env"] == ["LANG", "MYAPP_*"] and out["optional"] == ["env"]
    assert out["models"] == ["embed"]
    assert parse_permissions(out, file="skill.toml") == out
    assert orjson.loads(orjson.dumps(out)) == out


def test_fs_shorthand_and_workspace_prefix() -> None:
    out = parse_permissions({"fs": {"ro": ["a"], "rw": ["workspace:b"]}}, file="f")
    assert out["fs"] == [
        {"path": "a", "mode": "ro", "base": "skill", "optional": False},
        {"path": "b", "mode": "rw", "base": "workspace", "optional": False},
    ]


@pytest.mark.parametrize(
    "raw,field,needle",
    [
        ({"fs": [{"path": "x", "mode": "rwx"}]}, "permissions.fs[0].mode", "ro, rw"),
        ({"fs": [{"path": "~/x"}]}, "permissions.fs[0].path", "~"),
        ({"fs": [{"path": "a**b"}]}, "permissions.fs[0].path", "whole path component"),
        ({"fs": {"ro": "x"}}, "permissions.fs.ro", "list"),
        ({"http": ["exa mple.com"]}, "permissions.http.hosts[0].host", "not a host name"),
        (
            {"http": {"hosts": ["a.com"], "methods": ["FETCH"]}},
            "permissions.http.methods[0]",
            "GET",
        ),
        (
            {"http": {"hosts": [{"host": "a.com", "ports": [0]}]}},
            "permissions.http.hosts[0].ports[0]",
            "port",
        ),
        (
            {"http": {"hosts": [], "max_response_bytes": -1}},
            "permissions.http.max_response_bytes",
            "above 0",
        ),
        (
            {"http": {"hosts": [], "allow_private": "yes"}},
            "permissions.http.allow_private",
            "true or false",
        ),
        ({"http": {"hots": []}}, "permissions.http.hots", "unknown key"),
        ({"shell": ["git status"]}, "permissions.shell.programs[0]", "never a command line"),
        ({"shell": ["sh;rm"]}, "permissions.shell.programs[0]", "not a program name"),
        (
            {"shell": {"programs": ["/usr/../bin/sh"]}},
            "permissions.shell.programs[0]",
            "normalised",
        ),
        (
            {"shell": {"programs": ["git"], "timeout_sec": 99999}},
            "permissions.shell.timeout_sec",
            "at most",
        ),
        ({"env": ["1BAD"]}, "permissions.env[0]", "environment variable"),
        ({"models": ["chat"]}, "permissions.models[0]", "embed, llm"),
        ({"tools": ["bad name"]}, "permissions.tools[0]", "host tool"),
        ({"invoke": ["Other Skill"]}, "permissions.invoke[0]", "tool name"),
        ({"can_be_invoked_by": [3]}, "permissions.can_be_invoked_by[0]", "expected"),
        ({"network": True}, "permissions.network", "unknown key"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("permissions") else None,
)
def test_malformed_declarations_name_file_and_field(raw: dict, field: str, needle: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_permissions(raw, file="pkg/skill.toml")
    assert info.value.file == "pkg/skill.toml"
    assert info.value.field == field
    assert needle in info.value.reason


def test_manifest_errors_come_from_the_loader(tmp_path: Path) -> None:
    write_skill(tmp_path, "bad", 'http = { hosts = ["ok.com"], timeout_sec = "slow" }')
    rt = SyncRuntime.memory(roots={"project": [tmp_path]})
    try:
        [problem] = rt.runtime.problems
        assert problem.kind == "broken"
        assert "skill.toml: permissions.http.timeout_sec: expected a number" in problem.message
    finally:
        rt.close()


def test_cards_carry_normalised_permissions(tmp_path: Path) -> None:
    write_skill(tmp_path, "good", 'env = ["LANG"]\nfs = { ro = ["."] }')
    rt = SyncRuntime.memory(roots={"project": [tmp_path]})
    try:
        card = rt.card("good-probe")
        assert card.permissions["fs"][0]["base"] == "skill"
        assert card.read_only
    finally:
        rt.close()


# -- grants ----------------------------------------------------------------------------


def test_grants_narrow_but_never_widen(make_probe, workspace: Path) -> None:
    (workspace / "a").mkdir()
    (workspace / "a" / "f").write_text("A")
    (workspace / "b").mkdir()
    (workspace / "b" / "f").write_text("B")
    grants = {
        "probe": {
            "fs": [{"path": "a", "mode": "ro"}, {"path": "c", "mode": "rw"}],
            "env": ["PATH", "HOME"],
        }
    }
    p = make_probe(
        {"fs": {"ro": ["a", "b"]}, "env": ["PATH"]},
        config={"grants": grants},
    )
    assert p.value("fs.read_text", path="a/f") == "A"
    assert "outside every directory" in p.denied("fs.read_text", path="b/f")  # narrowed away
    p.denied("fs.write_text", path="c/x", text="x")  # granted rw, never declared
    assert not (workspace / "c").exists()
    p.value("env.get", name="PATH")
    p.denied("env.get", name="HOME")  # granted but not declared


def test_default_none_denies_skills_no_rule_matches(make_probe, workspace: Path) -> None:
    (workspace / "f").write_text("x")
    p = make_probe({"fs": {"ro": ["."]}}, config={"grants": {"default": "none", "other": {}}})
    p.denied("fs.read_text", path="f")


def test_glob_rules_apply_and_intersect(make_probe) -> None:
    p = make_probe(
        {"env": ["A", "B", "C"]},
        config={"grants": {"pro*": {"env": ["A", "B"]}, "probe": {"env": ["B", "C"]}}},
    )
    for name in ("A", "C"):
        p.denied("env.get", name=name)
    p.value("env.get", name="B")


def test_malformed_grants_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r'grants."x".http.hosts\[0\].host'):
        Grants.from_config({"x": {"http": ["bad host"]}}, file="config.toml")
    with pytest.raises(ConfigError, match=r"grants\.default"):
        Grants.from_config({"default": "all"})
    with pytest.raises(ConfigError):
        SyncRuntime.memory(config={"grants": {"x": 1}})


def test_package_whose_requirements_are_not_granted_is_refused(tmp_path: Path) -> None:
    roots = tmp_path / "skills"
    write_skill(roots, "fetcher", 'http = ["api.example.com"]\nenv = ["LANG"]')
    write_skill(roots, "optional-http", 'http = { hosts = ["api.example.com"], optional = true }')
    write_skill(roots, "plain", 'env = ["LANG"]')
    grants = {"*": {"http": ["other.example.com"]}}
    rt = SyncRuntime.memory(roots={"project": [roots]}, config={"grants": grants})
    try:
        [problem] = rt.runtime.problems
        assert problem.kind == "refused" and problem.skill_id == "fetcher"
        assert "permissions.http.hosts[0] 'api.example.com'" in problem.message
        assert 'grants."*"' in problem.message
        assert sorted(rt.runtime.packages) == ["optional-http", "plain"]
        with pytest.raises(Exception, match="no tool named"):
            rt.call("fetcher-probe", {})
    finally:
        rt.close()


def test_add_package_raises_when_refused(tmp_path: Path) -> None:
    pkg = write_skill(tmp_path, "sh", 'shell = ["git"]')
    rt = SyncRuntime.memory(config={"grants": {"sh": {"shell": []}}})
    try:
        with pytest.raises(PermissionDenied, match=r"permissions\.shell\.programs"):
            rt.runtime.add_package(pkg)
        assert "sh" not in rt.runtime.packages
    finally:
        rt.close()


def test_doctor_shows_the_refused_requirement(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_skill(home / "skills" / "user", "net", 'http = ["api.example.com"]')
    (home / "config.toml").write_text('[grants]\ndefault = "none"\n')
    out = subprocess.run(
        [sys.executable, "-m", "skillyard", "--home", str(home), "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "refused: [user]" in out.stdout and "permissions.http.hosts[0]" in out.stdout
    (home / "config.toml").write_text("[grants.net]\n[grants.nte]\nenv = []\n")
    out = subprocess.run(
        [sys.executable, "-m", "skillyard", "--home", str(home), "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'warning: [grants."nte"]' in out.stdout and "matches no skill package" in out.stdout
    assert '[grants."net"]' not in out.stdout


def test_runtime_open_reads_grants_from_config_toml(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_skill(home / "skills" / "project", "reader", 'env = ["LANG", "HOME"]')
    (home / "config.toml").write_text('[grants.reader]\nenv = ["LANG"]\n')
    rt = Runtime.open(home)
    try:
        assert [p.kind for p in rt.problems] == ["refused"]
        assert "permissions.env[1] 'HOME'" in rt.problems[0].message
    finally:
        SyncRuntime(rt).close()


def test_grants_narrow_http_limits_and_invokers(make_probe) -> None:
    from skillyard.host import services_of

    p = make_probe(
        {
            "http": {
                "hosts": ["api.example.com"],
                "max_response_bytes": 5000,
                "allow_private": True,
            },
            "can_be_invoked_by": ["*"],
        },
        config={
            "grants": {
                "probe": {
                    "http": {"hosts": ["*.example.com"], "max_response_bytes": 100},
                    "can_be_invoked_by": ["planner"],
                }
            }
        },
    )
    eff = services_of(p.rt.runtime).effective(p.rt.card("probe-run"))
    limits = eff.http_check("api.example.com", 443, "GET")
    assert limits.max_response_bytes == 100 and limits.allow_private is False
    eff.invokable_by("planner", "probe-run")
    with pytest.raises(PermissionDenied, match="grants"):
        eff.invokable_by("intruder", "probe-run")


def test_temp_base_is_a_private_directory(make_probe) -> None:
    p = make_probe({"fs": [{"path": "scratch", "mode": "rw", "base": "temp"}]})
    info = p.value("runtime.info")
    p.value("fs.mkdir", path=f"{info['temp_dir']}/scratch")
    p.value("fs.write_text", path=f"{info['temp_dir']}/scratch/x.txt", text="t")
    assert Path(info["temp_dir"], "scratch", "x.txt").read_text() == "t"
    assert oct(Path(info["temp_dir"]).stat().st_mode & 0o777) == "0o700"
    p.denied("fs.write_text", path=f"{info['temp_dir']}/x.txt", text="t")


@pytest.mark.parametrize(
    "declared,granted,refused",
    [
        ({"host": "a.com", "ports": [443]}, {"host": "a.com", "ports": [443, 8443]}, False),
        ({"host": "a.com"}, {"host": "a.com", "ports": [443]}, True),
        ({"host": "a.com", "ports": [80]}, {"host": "a.com"}, False),
        ({"host": "api.a.com"}, {"host": "*.a.com"}, False),
        ({"host": "*.a.com"}, {"host": "api.a.com"}, True),
        (
            {"host": "a.com", "methods": ["GET", "POST"]},
            {"host": "a.com", "methods": ["GET"]},
            True,
        ),
    ],
    ids=[
        "ports-subset",
        "any-port-vs-one",
        "grant-any-port",
        "wildcard-grant",
        "narrower-grant",
        "methods",
    ],
)
def test_http_requirement_coverage(declared: dict, granted: dict, refused: bool) -> None:
    from skillyard.host.grants import Layer, unmet

    d = parse_permissions({"http": [declared]}, file="d")
    g = parse_permissions({"http": [granted]}, file="g")
    assert bool(unmet(d, Layer("g", g))) is refused
