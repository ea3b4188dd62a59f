"""The protocol core in-process: derived annotations, mapping, authority, held calls."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from skillyard.card import Card, Policy
from skillyard.runtime import Runtime
from skillyard.serve.mcp import McpServer, ServeOptions, Session
from skillyard.transports.base import CallResult, Decision, MockTransport


def rpc(server: McpServer, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send one request through a fresh handshake session and return its response."""

    async def go() -> dict[str, Any]:
        session = Session()
        out: list[dict[str, Any]] = []
        init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t"}}
        server.receive(
            {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}, session, out.append
        )
        server.receive(
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}},
            session,
            out.append,
        )
        while not any(m.get("id") == 1 for m in out):
            await asyncio.sleep(0)
            if session.tasks:
                await asyncio.gather(*session.tasks.values())
        return next(m for m in out if m.get("id") == 1)

    return asyncio.run(go())


def card(name: str, **kw: Any) -> Card:
    skill_id, _, method = name.partition("-")
    return Card(id=skill_id, name=name, method=method, transport="mock", **kw)


def make_runtime(*cards: Card, middleware: Any = ()) -> Runtime:
    rt = Runtime.memory(
        transports={"mock": MockTransport(lambda args, ctx: {"echo": args})}, middleware=middleware
    )
    for c in cards:
        rt.add_card(c)
    return rt


def test_annotations_are_derived_from_declarations() -> None:
    rt = make_runtime(
        card("a-pure", policy=Policy(idempotent=True)),
        card("a-web", permissions={"http": [{"url": "https://api.example/*"}]}),
        card("a-writer", permissions={"fs": [{"path": "data", "mode": "rw"}]}),
        card("a-shell", permissions={"shell": True}),
        card("a-reader", permissions={"fs": [{"path": "data", "mode": "ro"}]}),
    )
    tools = {
        t["name"]: t["annotations"] for t in rpc(McpServer(rt), "tools/list")["result"]["tools"]
    }
    assert tools["a-pure"] == {"readOnlyHint": True, "idempotentHint": True, "openWorldHint": False}
    assert tools["a-reader"]["readOnlyHint"] is True
    assert tools["a-web"]["openWorldHint"] is True and tools["a-web"]["readOnlyHint"] is False
    assert tools["a-web"]["destructiveHint"] is False
    assert tools["a-writer"]["destructiveHint"] is True
    assert (
        tools["a-shell"]["destructiveHint"] is True and tools["a-shell"]["idempotentHint"] is False
    )


def test_per_skill_mapping() -> None:
    rt = make_runtime(card("notes-add"), card("notes-find"), card("web-get"))
    server = McpServer(rt, ServeOptions(mapping="skill"))
    tools = rpc(server, "tools/list")["result"]["tools"]
    assert [t["name"] for t in tools] == ["notes", "web"]
    assert tools[0]["inputSchema"]["properties"]["method"]["enum"] == ["add", "find"]
    res = rpc(
        server,
        "tools/call",
        {"name": "notes", "arguments": {"method": "find", "arguments": {"q": 1}}},
    )
    assert res["result"]["structuredContent"] == {"echo": {"q": 1}}
    bad = rpc(server, "tools/call", {"name": "notes", "arguments": {"method": "drop"}})
    assert bad["result"]["isError"] is True and "add, find" in bad["result"]["content"][0]["text"]


def test_authority_decides_what_is_visible() -> None:
    rt = make_runtime(
        card("core-admin", root="root"), card("user-tool"), card("user-hidden", hidden=True)
    )
    delegated = [t["name"] for t in rpc(McpServer(rt), "tools/list")["result"]["tools"]]
    assert delegated == ["user-tool"]
    system = McpServer(rt, ServeOptions(authority="system"))
    names = [t["name"] for t in rpc(system, "tools/list")["result"]["tools"]]
    assert names == ["core-admin", "user-tool"]  # hidden methods are never listed
    assert rpc(system, "tools/call", {"name": "user-hidden"})["error"]["code"] == -32602


class HoldEverything:
    """A stand-in gate: every call is held for approval."""

    async def on_call(self, ctx: Any, call_next: Any) -> CallResult:
        decision = Decision(
            outcome="hold", phase="pending_approval", action_id="act-42", reason="needs a human"
        )
        return CallResult(tool=ctx.tool, call_id=ctx.call_id, decision=decision)


def test_a_held_call_names_its_action_id() -> None:
    rt = make_runtime(card("pay-send"), middleware=[HoldEverything()])
    res = rpc(McpServer(rt), "tools/call", {"name": "pay-send", "arguments": {}})["result"]
    assert res["isError"] is True
    text = res["content"][0]["text"]
    assert "act-42" in text and "skillyard approvals grant act-42" in text
    assert res["_meta"]["dev.skillyard/pending"]["action_id"] == "act-42"


def test_serve_options_from_config_are_validated() -> None:
    import pytest

    from skillyard.errors import ConfigError

    opts = ServeOptions.from_config(
        {"serve": {"mcp": {"include": "a-*", "page_size": 5}}}, exclude=("x",)
    )
    assert opts.include == ("a-*",) and opts.exclude == ("x",) and opts.page_size == 5
    for bad in ({"page_size": 0}, {"authority": "root"}, {"mapping": "x"}, {"includes": []}):
        with pytest.raises(ConfigError):
            ServeOptions.from_config({"serve": {"mcp": bad}})


def test_imported_mcp_tools_get_cautious_hints() -> None:
    rt = Runtime.memory(transports={"mcp": MockTransport(lambda a, c: {}, kind="mcp")})
    rt.add_card(
        Card(
            id="fs",
            name="fs-read",
            method="read",
            transport="mcp",
            options={"annotations": {"readOnlyHint": True}},
        )
    )
    ann = rpc(McpServer(rt), "tools/list")["result"]["tools"][0]["annotations"]
    # the remote server's own claim is not relayed: skillyard cannot bound what it does
    assert ann == {
        "readOnlyHint": False,
        "idempotentHint": False,
        "openWorldHint": True,
        "destructiveHint": True,
    }


def test_held_call_completes_when_called_again_after_approval(tmp_path: Path) -> None:
    from skillyard.gate import actions as gate_actions
    from skillyard.gate import find
    from skillyard.gate.approvals import make_decision

    policy = tmp_path / "policy.toml"
    policy.write_text(
        'version = "t"\n[defaults]\nlevel = "L1"\nreversible = true\nblast_radius = "none"\n'
        '[[rules]]\nname = "pay-needs-a-human"\ntool = "pay-*"\neffect = "require_approval"\n'
        '[[rules]]\nname = "rest"\ntool = "*"\neffect = "allow"\n'
    )
    rt = Runtime.memory(
        transports={"mock": MockTransport(lambda args, ctx: {"paid": args["amount"]})},
        config={"gate": {"policy": str(policy)}},
    )
    rt.add_card(card("pay-send"))
    server = McpServer(rt)
    first = rpc(server, "tools/call", {"name": "pay-send", "arguments": {"amount": 5}})["result"]
    action_id = first["_meta"]["dev.skillyard/pending"]["action_id"]
    assert first["isError"] and action_id in first["content"][0]["text"]
    # asking again before a decision resumes the same hold rather than proposing a new one
    again = rpc(server, "tools/call", {"name": "pay-send", "arguments": {"amount": 5}})["result"]
    assert again["_meta"]["dev.skillyard/pending"]["action_id"] == action_id
    gate = find(rt)
    assert gate is not None
    action = gate_actions.get(gate.store, action_id)
    assert action is not None
    gate.submit({"decision": make_decision(action, "granted", "alice", "ok")})
    done = rpc(server, "tools/call", {"name": "pay-send", "arguments": {"amount": 5}})["result"]
    assert done["isError"] is False and done["structuredContent"] == {"paid": 5}
    asyncio.run(rt.aclose())


def test_calls_the_runtime_can_run_inline_are_answered_inside_receive() -> None:
    async def go() -> None:
        rt = make_runtime(card("m-mock"))
        rt.tool("py-add", input_schema={"type": "object", "required": ["a"]})(
            lambda args: {"sum": args["a"] + 1}
        )

        @rt.tool("py-slow")
        async def slow(args: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(0)
            return {"slow": True}

        server = McpServer(rt)
        session = Session()
        out: list[dict[str, Any]] = []
        init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t"}}
        server.receive(
            {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}, session, out.append
        )

        def call(msg_id: int, name: str, args: Any) -> list[dict[str, Any]]:
            before = len(out)
            params = {"name": name, "arguments": args}
            server.receive(
                {"jsonrpc": "2.0", "id": msg_id, "method": "tools/call", "params": params},
                session,
                out.append,
            )
            return out[before:]

        for i in range(1, 3):  # the first call plans the card; both answer inline
            [answer] = call(i, "py-add", {"a": i})
            assert answer["result"]["structuredContent"] == {"sum": i + 1}
        [bad] = call(3, "py-add", {})
        assert bad["result"]["isError"] is True
        assert "invalid_arguments" in bad["result"]["content"][0]["text"]
        assert call(4, "py-slow", {}) == [] and 4 in session.tasks  # a task answers it
        assert call(4, "py-add", {"a": 1})[0]["error"]["message"].endswith("already in flight")
        assert call(5, "m-mock", {}) == []  # MockTransport has no direct path
        await asyncio.gather(*session.tasks.values())
        answers = {m["id"]: m for m in out if "id" in m}
        assert answers[4]["result"]["structuredContent"] == {"slow": True}
        assert answers[5]["result"]["structuredContent"] == {"echo": {}}
        unknown = call(6, "nope", {})
        assert unknown[0]["error"]["message"] == "unknown tool: nope"
        await rt.aclose()

    asyncio.run(go())
