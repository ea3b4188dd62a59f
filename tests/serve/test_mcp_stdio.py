"""Conformance of `skillyard serve mcp` over stdio, driven by the official `mcp` client."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.client import Client
from mcp.types import PaginatedRequestParams
from tests.serve.conftest import server_argv


def params(home: Path, *extra: str) -> StdioServerParameters:
    argv = server_argv(home, *extra)
    return StdioServerParameters(command=argv[0], args=argv[1:])


async def wait_for(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        await asyncio.sleep(0.01)


def test_list_call_structured_and_errors(home: Path) -> None:
    async def go() -> None:
        async with stdio_client(params(home)) as (r, w), ClientSession(r, w) as s:
            init = await s.initialize()
            assert init.protocol_version == "2025-11-25"
            assert init.server_info.name == "skillyard"
            listed = await s.list_tools()
            names = [t.name for t in listed.tools]
            assert names == sorted(names)
            assert names == ["echo-boom", "echo-count", "echo-number", "echo-say", "echo-slow"]
            assert "echo-secret" not in names and "echo-greet" not in names
            say = next(t for t in listed.tools if t.name == "echo-say")
            assert say.title == "Say it back"
            assert say.input_schema["required"] == ["text"]
            assert say.output_schema is not None and say.output_schema["required"] == ["text"]
            assert say.annotations is not None
            assert say.annotations.read_only_hint is True
            assert say.annotations.open_world_hint is False

            res = await s.call_tool("echo-say", {"text": "hello"})
            assert res.is_error is False
            assert res.structured_content == {"text": "hello"}
            assert res.content[0].text == '{"text":"hello"}'

            num = await s.call_tool("echo-number", {})
            assert num.structured_content == {"result": 42}

            bad = await s.call_tool("echo-say", {"text": 5})
            assert bad.is_error is True
            assert "invalid_arguments" in bad.content[0].text
            assert "/text" in bad.content[0].text

            failed = await s.call_tool("echo-boom", {})
            assert failed.is_error is True and "kaboom" in failed.content[0].text

            with pytest.raises(MCPError, match="unknown tool: echo-secret") as info:
                await s.call_tool("echo-secret", {})
            assert info.value.error.code == -32602

    asyncio.run(go())


def test_progress_notifications(home: Path) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async def go() -> None:
        async with stdio_client(params(home)) as (r, w), ClientSession(r, w) as s:
            await s.initialize()
            res = await s.call_tool("echo-count", {"n": 3}, progress_callback=on_progress)
            assert res.structured_content == {"counted": 3}

    asyncio.run(go())
    assert seen == [(1.0, 3, "step 1"), (2.0, 3, "step 2"), (3.0, 3, "step 3")]


def test_cancellation_stops_the_running_skill(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "slow.marker"

    async def go() -> None:
        async with stdio_client(params(home)) as (r, w), ClientSession(r, w) as s:
            await s.initialize()
            call = asyncio.create_task(s.call_tool("echo-slow", {"marker": str(marker)}))
            await wait_for(marker.with_suffix(".started"))
            call.cancel()
            await wait_for(marker.with_suffix(".cancelled"))
            # the connection still works after a cancellation
            res = await s.call_tool("echo-say", {"text": "still here"})
            assert res.structured_content == {"text": "still here"}

    asyncio.run(go())


def test_resources_and_prompts(home: Path) -> None:
    async def go() -> None:
        async with stdio_client(params(home)) as (r, w), ClientSession(r, w) as s:
            await s.initialize()
            resources = await s.list_resources()
            uris = [str(x.uri) for x in resources.resources]
            assert uris == ["skill://echo/help/usage"]
            doc = await s.read_resource("skill://echo/help/usage")
            assert "Says things back" in doc.contents[0].text
            prompts = await s.list_prompts()
            assert [p.name for p in prompts.prompts] == ["echo-greet"]
            assert prompts.prompts[0].arguments[0].name == "who"
            got = await s.get_prompt("echo-greet", {"who": "Ada"})
            assert got.messages[0].content.text == "Please greet Ada warmly."

    asyncio.run(go())


def test_filters_and_pagination(home: Path) -> None:
    async def go() -> None:
        p = params(home, "--exclude", "echo-b*", "--page-size", "2")
        async with stdio_client(p) as (r, w), ClientSession(r, w) as s:
            await s.initialize()
            names: list[str] = []
            cursor = None
            pages = 0
            while True:
                page = await s.list_tools(params=PaginatedRequestParams(cursor=cursor))
                pages += 1
                names += [t.name for t in page.tools]
                cursor = page.next_cursor
                if not cursor:
                    break
            assert pages == 2
            assert names == ["echo-count", "echo-number", "echo-say", "echo-slow"]
            with pytest.raises(MCPError, match="unknown tool"):
                await s.call_tool("echo-boom", {})  # excluded tools cannot be called either

    asyncio.run(go())


def test_stateless_2026_form_with_the_high_level_client(home: Path) -> None:
    async def go() -> None:
        async with Client(params(home)) as c:
            assert c.protocol_version == "2026-07-28"
            tools = await c.list_tools()
            assert "echo-say" in [t.name for t in tools.tools]
            res = await c.call_tool("echo-say", {"text": "modern"})
            assert res.structured_content == {"text": "modern"}
            bad = await c.call_tool("echo-say", {})
            assert bad.is_error

    asyncio.run(go())
