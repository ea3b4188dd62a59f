"""`skillyard config get | set | list | delete` against a real runtime home."""

from __future__ import annotations

from pathlib import Path

import orjson

from skillyard import SyncRuntime
from tests.cli_helpers import run
from tests.host.conftest import Probe, write_skill
from tests.host.test_services import CONFIG_DECLS


def test_config_cli_roundtrip_never_prints_secrets(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_skill(home / "skills" / "user", "pay", "", extra=CONFIG_DECLS)
    assert run(home, "config", "get", "pay", "currency").stdout == "EUR\n"
    assert run(home, "config", "set", "pay", "limit", "25").returncode == 0
    out = run(home, "config", "set", "pay", "api_key", "--stdin", stdin="sk-live-SECRET\n")
    assert out.returncode == 0 and "SECRET" not in out.stdout + out.stderr
    got = run(home, "config", "get", "pay", "api_key")
    assert got.stdout == "********\n"
    listed = run(home, "config", "list", "pay")
    assert "SECRET" not in listed.stdout and "********" in listed.stdout
    data = orjson.loads(run(home, "--json", "config", "list", "pay").stdout)
    by_key = {e["key"]: e for e in data["config"]}
    assert by_key["limit"] == {
        "key": "limit",
        "type": "integer",
        "value": 25,
        "source": "set",
        "required": False,
        "sensitive": False,
    }
    assert by_key["api_key"]["value"] == "********"
    # The skill itself reads its own secret.
    rt = SyncRuntime.open(home)
    try:
        assert Probe(rt, "pay-probe").value("config.get", key="api_key") == "sk-live-SECRET"
    finally:
        rt.close()
    assert run(home, "config", "delete", "pay", "limit").stdout == "deleted pay limit\n"
    assert run(home, "config", "get", "pay", "limit").stdout == "null\n"


def test_config_cli_errors(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_skill(home / "skills" / "user", "pay", "", extra=CONFIG_DECLS)
    bad = run(home, "config", "set", "pay", "limit", "lots")
    assert bad.returncode == 2 and "cannot read the value as integer" in bad.stderr
    undeclared = run(home, "config", "set", "pay", "nope", "1")
    assert undeclared.returncode == 2 and "not declared" in undeclared.stderr
    missing = run(home, "config", "get", "nobody", "x")
    assert missing.returncode == 3 and "no loaded package" in missing.stderr
    required = run(home, "config", "get", "pay", "api_key")
    assert required.returncode == 2 and "skillyard config set pay api_key" in required.stderr
    assert run(home, "config", "set", "pay", "limit").returncode == 2
