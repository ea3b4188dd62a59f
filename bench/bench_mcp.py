"""`skillyard serve mcp` over stdio next to FastMCP's and the official SDK's servers.

All three servers expose one tool, ``echo(text) -> {"text": text}``, and are driven by
the same raw NDJSON client (a blocking pipe, orjson) in the same run:

- per call: one ``tools/call`` round trip on a warm session;
- cold start: spawn + ``initialize`` + ``notifications/initialized`` + the first
  ``tools/list`` answer.

Targets (docs/mcp.md): per call <= 1/10 of FastMCP's; cold start <= 1/5 of FastMCP's
and <= 0.3 s.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.harness import Report

PY = sys.executable
SERVERS = {
    "fastmcp": """
from fastmcp import FastMCP
srv = FastMCP("bench")
@srv.tool
def echo(text: str) -> dict[str, str]:
    return {"text": text}
srv.run(show_banner=False)
""",
    "sdk": """
from mcp.server.mcpserver import MCPServer
srv = MCPServer("bench")
@srv.tool(structured_output=True)
def echo(text: str) -> dict[str, str]:
    return {"text": text}
srv.run()
""",
}
SKILL_TOML = """id = "bench"
runtime = "python"
entry = "skill.py"
[[methods]]
name = "echo"
input_schema = { type = "object", properties = { text = { type = "string" } }, required = ["text"] }
output_schema = { type = "object", properties = { text = { type = "string" } } }
"""
INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
# Servers start as on a user's machine: without the harness's PYTHON* settings (a
# PYTHONDONTWRITEBYTECODE=1 here would make every start compile the modules that have
# no bytecode cache yet), as bench_core's startup rows do.
SERVER_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


class RawClient:
    """A minimal NDJSON JSON-RPC client over a child's pipes (no SDK, no asyncio)."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=SERVER_ENV,
        )
        self.next_id = 1

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        msg_id = self.next_id
        self.next_id += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            msg["params"] = params
        w, r = self.proc.stdin, self.proc.stdout
        assert w is not None and r is not None
        w.write(orjson.dumps(msg) + b"\n")
        w.flush()
        while True:
            line = r.readline()
            if not line:
                raise RuntimeError(f"server exited during {method}")
            reply = orjson.loads(line)
            if reply.get("id") == msg_id:
                return reply  # type: ignore[no-any-return]

    def handshake(self) -> None:
        w = self.proc.stdin
        assert w is not None
        self.request("initialize", INIT["params"])
        w.write(orjson.dumps(INITIALIZED) + b"\n")
        w.flush()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _argvs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    out: dict[str, tuple[list[str], str]] = {}
    for kind, source in SERVERS.items():
        script = tmp / f"{kind}_server.py"
        script.write_text(source)
        out[kind] = ([PY, str(script)], "echo")
    pkg = tmp / "home" / "skills" / "project" / "bench"
    pkg.mkdir(parents=True)
    (pkg / "skill.toml").write_text(SKILL_TOML)
    (pkg / "skill.py").write_text("def echo(args):\n    return {'text': args['text']}\n")
    argv = [PY, "-m", "skillyard.cli.main", "--home", str(tmp / "home"), "serve", "mcp"]
    out["skillyard"] = (argv, "bench-echo")
    return out


def _per_call(argv: list[str], tool: str, n: int) -> list[float]:
    client = RawClient(argv)
    try:
        client.handshake()
        client.request("tools/list")
        params = {"name": tool, "arguments": {"text": "hello world"}}
        first = client.request("tools/call", params)
        assert first["result"]["structuredContent"] == {"text": "hello world"}, first
        for _ in range(max(10, n // 10)):
            client.request("tools/call", params)
        samples = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            client.request("tools/call", params)
            samples.append((time.perf_counter_ns() - t0) / 1000)
        return samples
    finally:
        client.close()


def _cold_start(argv: list[str], k: int) -> list[float]:
    samples = []
    for _ in range(k):
        t0 = time.perf_counter_ns()
        client = RawClient(argv)
        client.handshake()
        listed = client.request("tools/list")
        samples.append((time.perf_counter_ns() - t0) / 1000)
        assert listed["result"]["tools"], listed
        client.close()
    return samples


def run(report: Report) -> None:
    n = report.scale(1000)
    k = 2 if report.quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        argvs = _argvs(Path(tmp))
        # one start first: creates the home's state.db and warms the OS file cache for all
        for argv, _tool in argvs.values():
            _cold_start(argv, 1)
        calls = {kind: _per_call(argv, tool, n) for kind, (argv, tool) in argvs.items()}
        starts = {kind: _cold_start(argv, k) for kind, (argv, _tool) in argvs.items()}
    g = "mcp server (stdio)"
    report.add(g, "mcp stdio tools/call: FastMCP server", calls["fastmcp"], note="the reference")
    report.add(
        g,
        "mcp stdio tools/call: official SDK server",
        calls["sdk"],
        floor="mcp stdio tools/call: FastMCP server",
    )
    report.add(
        g,
        "mcp stdio tools/call: skillyard serve mcp",
        calls["skillyard"],
        floor="mcp stdio tools/call: FastMCP server",
        max_ratio=0.1,
    )
    report.add(g, "mcp cold start to tools/list: FastMCP server", starts["fastmcp"])
    report.add(
        g,
        "mcp cold start to tools/list: official SDK server",
        starts["sdk"],
        floor="mcp cold start to tools/list: FastMCP server",
    )
    report.add(
        g,
        "mcp cold start to tools/list: skillyard serve mcp",
        starts["skillyard"],
        floor="mcp cold start to tools/list: FastMCP server",
        max_ratio=0.2,
        max_us=300_000,
        note=f"median of {k} starts; {statistics.median(starts['skillyard']) / 1e3:.0f} ms",
    )
