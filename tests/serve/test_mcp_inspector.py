"""The MCP Inspector's CLI mode (npm, installed by .ci/setup) against `skillyard serve mcp`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
from tests.serve.conftest import server_argv

REPO = Path(__file__).resolve().parents[2]
INSPECTOR = REPO / ".ci" / "node_modules" / ".bin" / "mcp-inspector"


def inspect(*args: str) -> Any:
    assert INSPECTOR.exists(), "the MCP Inspector is missing: run `bash .ci/setup`"
    proc = subprocess.run(
        [str(INSPECTOR), "--cli", *args], capture_output=True, timeout=90, text=True
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return orjson.loads(proc.stdout)


def test_inspector_over_stdio(home: Path) -> None:
    server = server_argv(home)
    tools = inspect(*server, "--method", "tools/list")["tools"]
    names = [t["name"] for t in tools]
    assert "echo-say" in names and "echo-secret" not in names
    say = next(t for t in tools if t["name"] == "echo-say")
    assert say["annotations"]["readOnlyHint"] is True and say["title"] == "Say it back"
    called = inspect(
        *server, "--method", "tools/call", "--tool-name", "echo-say", "--tool-arg", "text=inspected"
    )
    assert called["structuredContent"] == {"text": "inspected"} and not called["isError"]
    bad = inspect(*server, "--method", "tools/call", "--tool-name", "echo-say", "--tool-arg", "n=1")
    assert bad["isError"] is True and "invalid_arguments" in bad["content"][0]["text"]


def test_inspector_over_streamable_http(home: Path) -> None:
    proc = subprocess.Popen(
        server_argv(home, "--http", "127.0.0.1:0"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "skillyard MCP server listening on http://..."
        assert "listening on" in line, line
        url = line.rsplit(" ", 1)[1].strip()
        prompts = inspect(url, "--transport", "http", "--method", "prompts/list")["prompts"]
        assert [p["name"] for p in prompts] == ["echo-greet"]
        called = inspect(
            url,
            "--transport",
            "http",
            "--method",
            "tools/call",
            "--tool-name",
            "echo-say",
            "--tool-arg",
            "text=via http",
        )
        assert called["structuredContent"] == {"text": "via http"}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
