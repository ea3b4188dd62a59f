"""Malformed and hostile JSON-RPC on the stdio server: proper errors, no hang, no crash."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
from tests.serve.conftest import server_argv

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t"}},
}


def run_lines(home: Path, lines: list[bytes], *extra: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        server_argv(home, *extra),
        input=b"".join(line + b"\n" for line in lines),
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return [orjson.loads(x) for x in proc.stdout.splitlines()]


def by_id(replies: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {r.get("id"): r for r in replies if "id" in r and r["id"] is not None}


def test_garbage_wrong_types_unknown_methods_and_batches(home: Path) -> None:
    d = orjson.dumps
    lines = [
        d(INIT),
        b"this is not json",
        b'{"jsonrpc": "2.0", "id": 2, "method": ',  # truncated
        d([INIT, INIT]),  # a batch
        d(42),
        d({"jsonrpc": "1.0", "id": 3, "method": "ping"}),
        d({"jsonrpc": "2.0", "id": 4, "method": 17}),
        d({"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}),
        d({"jsonrpc": "2.0", "id": True, "method": "ping"}),
        d({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": [1, 2]}),
        d({"jsonrpc": "2.0", "id": 6, "method": "no/such/method"}),
        d({"jsonrpc": "2.0", "method": "notifications/unknown"}),  # ignored, no reply
        d({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": 5}}),
        d({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "nope"}}),
        d(
            {
                "jsonrpc": "2.0",
                "id": 9,
                "method": "tools/call",
                "params": {"name": "echo-say", "arguments": [1]},
            }
        ),
        d({"jsonrpc": "2.0", "id": 10, "method": "tools/list", "params": {"cursor": "zzz"}}),
        d({"jsonrpc": "2.0", "id": 11, "result": {}}),  # a stray response: ignored
        b"",
        b"   ",
        '{"jsonrpc": "2.0", "id": 12, "method": "ping", "x": "\u00e9"}'.encode(),
        b"\xff\xfe\x00garbage",
        d(
            {
                "jsonrpc": "2.0",
                "id": 13,
                "method": "tools/call",
                "params": {"name": "echo-say", "arguments": {"text": "alive"}},
            }
        ),
    ]
    lines.append(
        d({"jsonrpc": "2.0", "id": 14, "method": "resources/read", "params": {"uri": "skill://x"}})
    )
    replies = run_lines(home, lines)
    ids = by_id(replies)
    nulls = [r for r in replies if r.get("id") is None]
    assert ids[1]["result"]["protocolVersion"] == "2025-06-18"
    codes = sorted(r["error"]["code"] for r in nulls)
    # two parse errors (garbage, truncated), one more for the binary line; batch, 42, bad ids
    assert codes.count(-32700) == 3
    assert codes.count(-32600) >= 4
    assert ids[3]["error"]["code"] == -32600  # jsonrpc 1.0
    assert ids[4]["error"]["code"] == -32600  # method not a string
    assert ids[5]["error"]["code"] == -32602  # params not an object
    assert ids[6]["error"]["code"] == -32601
    assert ids[7]["error"]["code"] == -32602
    assert ids[8]["error"]["code"] == -32602 and "unknown tool" in ids[8]["error"]["message"]
    assert ids[9]["result"]["isError"] is True
    assert ids[10]["error"]["code"] == -32602
    assert 11 not in ids
    assert ids[12]["result"] == {}
    assert ids[13]["result"]["structuredContent"] == {"text": "alive"}
    assert ids[14]["error"]["code"] == -32002


def test_huge_line_is_refused_and_the_next_line_served(home: Path) -> None:
    huge = b'{"jsonrpc": "2.0", "id": 2, "method": "ping", "pad": "' + b"x" * (20 * 1024 * 1024)
    lines = [
        orjson.dumps(INIT),
        huge + b'"}',
        orjson.dumps({"jsonrpc": "2.0", "id": 3, "method": "ping"}),
    ]
    replies = run_lines(home, lines)
    ids = by_id(replies)
    assert 2 not in ids
    too_big = [r for r in replies if r.get("id") is None]
    assert len(too_big) == 1 and "too large" in too_big[0]["error"]["message"]
    assert ids[3]["result"] == {}


def test_modern_envelope_rules(home: Path) -> None:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    d = orjson.dumps
    lines = [
        d({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}}),
        d({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),  # no envelope on a modern link
        d(INIT | {"id": 3}),  # the handshake on a modern connection
        d(
            {
                "jsonrpc": "2.0",
                "id": 4,
                "method": "tools/list",
                "params": {
                    "_meta": meta | {"io.modelcontextprotocol/protocolVersion": "2099-01-01"}
                },
            }
        ),
        d({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {"_meta": meta}}),
    ]
    ids = by_id(run_lines(home, lines))
    assert ids[1]["result"]["supportedVersions"] == ["2026-07-28"]
    assert ids[1]["result"]["resultType"] == "complete"
    assert ids[2]["error"]["code"] == -32602
    assert ids[3]["error"]["code"] == -32022
    assert ids[4]["error"]["code"] == -32022
    assert ids[4]["error"]["data"]["supported"] == ["2026-07-28"]
    assert ids[5]["result"]["resultType"] == "complete"
    assert "echo-say" in [t["name"] for t in ids[5]["result"]["tools"]]


def test_printing_skill_cannot_corrupt_stdout(home: Path) -> None:
    pkg = home / "skills" / "project" / "echo"
    (pkg / "skill.py").write_text(
        (pkg / "skill.py")
        .read_text()
        .replace("def say(args):\n", 'def say(args):\n    print("noise on stdout")\n')
    )
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "echo-say", "arguments": {"text": "clean"}},
    }
    replies = run_lines(home, [orjson.dumps(INIT), orjson.dumps(call)])
    assert by_id(replies)[2]["result"]["structuredContent"] == {"text": "clean"}
