"""`skillyard serve mcp --http`: the official client over streamable HTTP, and the guards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from mcp import ClientSession, MCPError
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from skillyard.errors import ConfigError
from skillyard.runtime import Runtime
from skillyard.serve.mcp import McpServer, ServeOptions
from skillyard.serve.mcp_http import HttpServer, start_http

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
JSON_SSE = {"accept": "application/json, text/event-stream"}


@asynccontextmanager
async def serving(home: Path, **kw: object) -> AsyncIterator[HttpServer]:
    runtime = Runtime.open(home)
    server = McpServer(runtime, ServeOptions.from_config(runtime.config))
    running = await start_http(server, "127.0.0.1", 0, **kw)  # type: ignore[arg-type]
    try:
        yield running
    finally:
        await running.aclose()
        await runtime.aclose()


def test_official_client_over_streamable_http(home: Path, tmp_path: Path) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async def go() -> None:
        async with (
            serving(home) as running,
            streamable_http_client(running.url) as (r, w),
            ClientSession(r, w) as s,
        ):
            init = await s.initialize()
            assert init.protocol_version == "2025-11-25"
            names = [t.name for t in (await s.list_tools()).tools]
            assert "echo-say" in names and "echo-secret" not in names
            res = await s.call_tool("echo-say", {"text": "over http"})
            assert res.structured_content == {"text": "over http"}
            bad = await s.call_tool("echo-say", {"text": []})
            assert bad.is_error and "invalid_arguments" in bad.content[0].text
            counted = await s.call_tool("echo-count", {"n": 4}, progress_callback=on_progress)
            assert counted.structured_content == {"counted": 4}
            with pytest.raises(MCPError, match="unknown tool"):
                await s.call_tool("echo-secret", {})
            # cancellation: the client's notifications/cancelled stops the skill
            marker = tmp_path / "http.marker"
            call = asyncio.create_task(s.call_tool("echo-slow", {"marker": str(marker)}))
            deadline = time.monotonic() + 10
            while not marker.with_suffix(".started").exists():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            call.cancel()
            while not marker.with_suffix(".cancelled").exists():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)

    asyncio.run(go())
    assert seen == [1.0, 2.0, 3.0, 4.0]


def test_stateless_2026_form_over_http(home: Path, tmp_path: Path) -> None:
    async def go() -> None:
        async with serving(home) as running, Client(running.url) as c:
            assert c.protocol_version == "2026-07-28"
            res = await c.call_tool("echo-say", {"text": "modern"})
            assert res.structured_content == {"text": "modern"}
            assert len(running.app.sessions) == 0  # no session state was kept
            # 2026-07-28 over HTTP: abandoning the request closes its stream, which cancels it
            marker = tmp_path / "modern.marker"
            call = asyncio.create_task(c.call_tool("echo-slow", {"marker": str(marker)}))
            deadline = time.monotonic() + 10
            while not marker.with_suffix(".started").exists():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            call.cancel()
            while not marker.with_suffix(".cancelled").exists():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)

    asyncio.run(go())


def test_bearer_token_and_origin_checks(home: Path) -> None:
    async def go() -> None:
        async with serving(home, token="s3cret-token") as running, httpx.AsyncClient() as http:
            url = running.url
            no_token = await http.post(url, json=INIT, headers=JSON_SSE)
            assert no_token.status_code == 401
            assert "s3cret" not in no_token.text
            wrong = await http.post(
                url, json=INIT, headers={**JSON_SSE, "authorization": "Bearer nope"}
            )
            assert wrong.status_code == 401
            auth = {**JSON_SSE, "authorization": "Bearer s3cret-token"}
            evil = await http.post(url, json=INIT, headers={**auth, "origin": "https://evil.test"})
            assert evil.status_code == 403
            ok = await http.post(
                url, json=INIT, headers={**auth, "origin": "http://localhost:3000"}
            )
            assert ok.status_code == 200
            assert ok.json()["result"]["protocolVersion"] == "2025-06-18"
            sid = ok.headers["mcp-session-id"]
            rebinding = await http.post(
                url, json=INIT, headers={**auth, "host": "attacker.example:80"}
            )
            assert rebinding.status_code == 421
            # the official client with the token in its headers works end to end
            import httpx2

            client = httpx2.AsyncClient(headers={"authorization": "Bearer s3cret-token"})
            async with (
                streamable_http_client(url, http_client=client) as (r, w),
                ClientSession(r, w) as s,
            ):
                await s.initialize()
                res = await s.call_tool("echo-say", {"text": "authorised"})
                assert res.structured_content == {"text": "authorised"}
            ended = await http.delete(url, headers={**auth, "mcp-session-id": sid})
            assert ended.status_code == 200
            gone = await http.post(
                url,
                json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                headers={**auth, "mcp-session-id": sid},
            )
            assert gone.status_code == 404

    asyncio.run(go())


def test_hostile_http_bodies(home: Path) -> None:
    async def go() -> None:
        async with serving(home) as running, httpx.AsyncClient() as http:
            url = running.url
            garbage = await http.post(url, content=b"{nope", headers=JSON_SSE)
            assert garbage.status_code == 400 and garbage.json()["error"]["code"] == -32700
            batch = await http.post(url, json=[INIT, INIT], headers=JSON_SSE)
            assert batch.status_code == 400 and batch.json()["error"]["code"] == -32600
            no_session = await http.post(
                url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=JSON_SSE
            )
            assert no_session.status_code == 400
            huge = await http.post(url, content=b"[" * (17 * 1024 * 1024), headers=JSON_SSE)
            assert huge.status_code == 413
            assert (await http.get(url)).status_code == 405
            assert (await http.post(url.replace("/mcp", "/other"), json=INIT)).status_code == 404
            mismatch = await http.post(
                url,
                json={
                    "jsonrpc": "2.0",
                    "id": 3,
                    "method": "tools/list",
                    "params": {
                        "_meta": {
                            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                            "io.modelcontextprotocol/clientCapabilities": {},
                        }
                    },
                },
                headers={**JSON_SSE, "mcp-protocol-version": "2026-07-28", "mcp-method": "x"},
            )
            assert mismatch.status_code == 400 and mismatch.json()["error"]["code"] == -32020
            # the server is still healthy
            ok = await http.post(url, json=INIT, headers=JSON_SSE)
            assert ok.status_code == 200

    asyncio.run(go())


def test_non_loopback_needs_a_token(home: Path) -> None:
    async def go() -> None:
        runtime = Runtime.memory()
        with pytest.raises(ConfigError, match="without a bearer token"):
            await start_http(McpServer(runtime), "0.0.0.0", 0)
        await runtime.aclose()

    asyncio.run(go())


def test_cancelled_call_ends_its_stream(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "raw.marker"

    async def go() -> None:
        async with serving(home) as running, httpx.AsyncClient(timeout=20) as http:
            url = running.url
            ok = await http.post(url, json=INIT, headers=JSON_SSE)
            sid = {"mcp-session-id": ok.headers["mcp-session-id"]}
            call = {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "tools/call",
                "params": {"name": "echo-slow", "arguments": {"marker": str(marker)}},
            }

            async def stream() -> bytes:
                async with http.stream("POST", url, json=call, headers={**JSON_SSE, **sid}) as r:
                    assert r.headers["content-type"] == "text/event-stream"
                    return b"".join([chunk async for chunk in r.aiter_bytes()])

            body = asyncio.create_task(stream())
            deadline = time.monotonic() + 10
            while not marker.with_suffix(".started").exists():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            cancel = {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": 7},
            }
            accepted = await http.post(url, json=cancel, headers={**JSON_SSE, **sid})
            assert accepted.status_code == 202
            assert await asyncio.wait_for(body, 10) == b""  # ended, with no answer for id 7
            assert marker.with_suffix(".cancelled").exists()

    asyncio.run(go())
