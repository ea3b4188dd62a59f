"""`skillyard mcp add/list` and `skillyard serve mcp --print-config`."""

from __future__ import annotations

from pathlib import Path

import orjson
from click.testing import CliRunner
from tests.serve.conftest import server_argv

from skillyard.cli.main import cli


def run(*args: str) -> object:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return orjson.loads(result.output) if "--json" in args else result.output


def test_add_and_list_an_mcp_server(home: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    served = server_argv(home)  # skillyard's own MCP server is a real MCP server to import
    added = run("--home", str(mine), "--json", "mcp", "add", "echoed", "--", *served)
    assert isinstance(added, dict)
    tools = [t["tool"] for t in added["tools"]]
    assert tools == [
        "echoed-echo-boom",
        "echoed-echo-count",
        "echoed-echo-number",
        "echoed-echo-say",
        "echoed-echo-slow",
    ]
    manifest = mine / "skills" / "user" / "echoed" / "skill.toml"
    assert 'runtime = "mcp"' in manifest.read_text()
    listed = run("--home", str(mine), "--json", "mcp", "list")
    assert isinstance(listed, dict)
    assert [t["tool"] for t in listed["servers"][0]["tools"]] == tools
    refreshed = run("--home", str(mine), "--json", "mcp", "list", "--refresh", "echoed")
    assert isinstance(refreshed, dict) and refreshed["servers"][0]["error"] is None
    text = run("--home", str(mine), "mcp", "list")
    assert "echoed-echo-say" in str(text)


def test_add_refuses_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    both = runner.invoke(
        cli,
        [
            "--home",
            str(tmp_path),
            "mcp",
            "add",
            "x",
            "--url",
            "http://127.0.0.1:9/mcp",
            "--",
            "cmd",
        ],
    )
    assert both.exit_code != 0 and "not both" in both.output
    bad = runner.invoke(cli, ["--home", str(tmp_path), "mcp", "add", "Bad_Name", "--", "cmd"])
    assert bad.exit_code != 0


def test_print_config(tmp_path: Path) -> None:
    stdio = run("--home", str(tmp_path), "serve", "mcp", "--print-config")
    entry = orjson.loads(str(stdio))["mcpServers"]["skillyard"]
    assert entry["args"][-2:] == ["serve", "mcp"] and str(tmp_path) in entry["args"]
    http = run("serve", "mcp", "--http", "127.0.0.1:8765", "--print-config", "--name", "yard")
    assert orjson.loads(str(http))["mcpServers"]["yard"]["url"] == "http://127.0.0.1:8765/mcp"
