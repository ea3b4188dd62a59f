"""The ``mcp`` transport: tools of a remote MCP server, called through the official SDK client.

One warm session (a :class:`Link`) per server, started on the first call, shared
by concurrent calls, restarted after the server dies, closed on ``aclose``. The
SDK (``mcp``, ``httpx2``) is imported only when a link opens. What the server says
is translated at this boundary: ``isError`` results become
:class:`~skillyard.errors.SkillError`, a dead server
:class:`~skillyard.errors.SkillCrashed`, a deadline
:class:`~skillyard.errors.SkillTimeout` (the SDK sends ``notifications/cancelled``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING, Any

from skillyard.errors import (
    ProtocolError,
    SkillCrashed,
    SkillError,
    SkillTimeout,
    SkillyardError,
)
from skillyard.transports.base import CallContext, RawResult

if TYPE_CHECKING:
    from skillyard.card import Card
    from skillyard.runtime import Runtime
    from skillyard.transports.mcp_catalog import ServerSpec

CONNECTION_CLOSED = -32000


class Link:
    """One live client session to one MCP server, owned by a background task."""

    def __init__(self, spec: ServerSpec, on_tools_changed: Any = None) -> None:
        self.spec = spec
        self.session: Any = None
        self.dead = False
        self.error: BaseException | None = None
        self._stop = asyncio.Event()
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        self._on_tools_changed = on_tools_changed

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.spec.startup_sec)
        except TimeoutError as exc:
            await self.aclose()
            raise SkillCrashed(
                f"MCP server {self.spec.name!r} did not answer initialize in "
                f"{self.spec.startup_sec:g}s"
            ) from exc

    async def _run(self) -> None:
        from contextlib import AsyncExitStack

        from mcp import ClientSession

        try:
            async with AsyncExitStack() as stack:
                if self.spec.url is not None:
                    import httpx2
                    from mcp.client.streamable_http import streamable_http_client

                    client = httpx2.AsyncClient(headers=self.spec.resolve(self.spec.headers))
                    await stack.enter_async_context(client)
                    read, write = await stack.enter_async_context(
                        streamable_http_client(self.spec.url, http_client=client)
                    )
                else:
                    from mcp import StdioServerParameters, stdio_client
                    from mcp.client.stdio import get_default_environment

                    env = {**get_default_environment(), **self.spec.resolve(self.spec.env)}
                    params = StdioServerParameters(
                        command=self.spec.command[0],
                        args=list(self.spec.command[1:]),
                        env=env,
                        cwd=self.spec.cwd,
                    )
                    read, write = await stack.enter_async_context(
                        stdio_client(params, errlog=_errlog())
                    )
                read = await self._watch(stack, read)
                session = ClientSession(read, write, message_handler=self._on_message)
                await stack.enter_async_context(session)
                await session.initialize()
                self.session = session
                self._ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:  # the link's end, however it came, is recorded
            self.error = exc
            if not self._ready.done():
                self._ready.set_exception(_translate_start(self.spec, exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.dead = True
            self.session = None
            if not self._ready.done():
                self._ready.set_exception(SkillCrashed(f"MCP server {self.spec.name!r} exited"))

    async def _watch(self, stack: Any, read: Any) -> Any:
        """Relay the server's messages, marking the link dead the moment its stream ends."""
        import anyio

        send, receive = anyio.create_memory_object_stream[Any](64)

        async def relay() -> None:
            try:
                async with send:
                    async for item in read:
                        await send.send(item)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass
            finally:
                self.dead = True

        group = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(group.cancel_scope.cancel)
        group.start_soon(relay)
        return receive

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            self.dead = True  # the transport broke; the next call starts a new link
            return
        method = getattr(message, "method", None)
        if method == "notifications/tools/list_changed" and self._on_tools_changed is not None:
            asyncio.get_running_loop().create_task(self._on_tools_changed(self))

    async def list_tools(self) -> list[dict[str, Any]]:
        """Every tool the server lists (all pages), as wire-shaped dicts."""
        from mcp.types import PaginatedRequestParams

        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(1000):
            page = await self.session.list_tools(
                params=PaginatedRequestParams(cursor=cursor) if cursor else None
            )
            tools += [
                t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in page.tools
            ]
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def aclose(self) -> None:
        self._stop.set()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 10)
            except TimeoutError:
                task.cancel()
            except BaseException:
                pass
        self.dead = True


def _errlog() -> Any:
    """Where a server's stderr goes: ours, when it is a real file descriptor."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (AttributeError, OSError, ValueError):
            continue
    return open(os.devnull, "w")


def _translate_start(spec: ServerSpec, exc: BaseException) -> SkillyardError:
    if isinstance(exc, SkillyardError):
        return exc
    what = spec.url or " ".join(spec.command[:3])
    inner: BaseException = exc
    while isinstance(inner, BaseExceptionGroup) and inner.exceptions:
        inner = inner.exceptions[0]
    return SkillCrashed(
        f"MCP server {spec.name!r} ({what}) could not be started: "
        f"{type(inner).__name__}: {inner}. Check the command or URL, then run `skillyard mcp list`."
    )


async def open_link(spec: ServerSpec, on_tools_changed: Any = None) -> Link:
    """Start a session to ``spec`` and wait for its initialize handshake."""
    link = Link(spec, on_tools_changed)
    await link.start()
    return link


class McpTransport:
    """Calls tools on MCP servers named by ``runtime = "mcp"`` packages or ``[mcp.servers]``."""

    kind = "mcp"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._links: dict[str, Link] = {}
        self._starting: dict[str, asyncio.Future[Link]] = {}
        self.restarts = 0

    async def _link(self, server: str) -> Link:
        link = self._links.get(server)
        if link is not None and not link.dead:
            return link
        pending = self._starting.get(server)
        if pending is not None:
            return await asyncio.shield(pending)
        if link is not None:
            self.restarts += 1
            await link.aclose()
        from skillyard.transports.mcp_catalog import spec_for

        fut: asyncio.Future[Link] = asyncio.get_running_loop().create_future()
        self._starting[server] = fut
        try:
            new = await open_link(spec_for(self.runtime, server), self._tools_changed)
            self._links[server] = new
            fut.set_result(new)
            return new
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters see it through their own await
            raise
        finally:
            self._starting.pop(server, None)

    async def _tools_changed(self, link: Link) -> None:
        from skillyard.transports.mcp_catalog import apply_tools, store_tools

        try:
            tools = await link.list_tools()
        except Exception:
            return  # the next explicit refresh will try again
        pkg = self.runtime.packages.get(link.spec.name)
        store_tools(self.runtime, link.spec.name, link.spec.key(pkg.digest if pkg else ""), tools)
        apply_tools(self.runtime, link.spec.name, tools)

    async def call(self, card: Card, args: dict[str, Any], ctx: CallContext) -> RawResult:
        from mcp import MCPError

        server = str(card.options.get("server") or card.id)
        link = await self._link(server)

        async def progress(value: float, total: float | None, message: str | None) -> None:
            data: dict[str, Any] = {"progress": value}
            if total is not None:
                data["total"] = total
            if message:
                data["message"] = message
            ctx.emit("progress", **data)

        try:
            async with asyncio.timeout(ctx.remaining):
                try:
                    result = await link.session.call_tool(
                        card.operation, args, progress_callback=progress
                    )
                except (MCPError, RuntimeError, OSError) as exc:
                    if link.dead or _closed(exc):
                        link.dead = True
                        raise SkillCrashed(
                            f"{card.name}: MCP server {server!r} went away during the call "
                            f"({_describe(exc)}); it will be restarted on the next call"
                        ) from exc
                    if isinstance(exc, MCPError):
                        raise SkillError(
                            f"{card.name}: MCP server {server!r} answered error "
                            f"{exc.error.code}: {exc.error.message}"
                        ) from exc
                    raise ProtocolError(
                        f"{card.name}: MCP server {server!r}: {_describe(exc)}"
                    ) from exc
        except TimeoutError as exc:
            raise SkillTimeout(
                f"{card.name}: no answer from MCP server {server!r} in "
                f"{card.limits.timeout_sec:g}s; the call was cancelled"
            ) from exc
        except SkillyardError:
            raise
        except Exception as exc:  # anyio stream errors: the link is broken
            link.dead = True
            raise SkillCrashed(
                f"{card.name}: MCP server {server!r} went away ({_describe(exc)}); "
                "it will be restarted on the next call"
            ) from exc
        texts = [getattr(c, "text", "") for c in result.content if getattr(c, "type", "") == "text"]
        text = "\n".join(texts)
        if result.is_error:
            raise SkillError(
                f"{card.name}: the tool reported an error: {text[:2000] or '(no text)'}"
            )
        output: Any = result.structured_content
        if output is None:
            output = text
        return RawResult(output=output, content=text or None)

    async def health(self) -> dict[str, Any]:
        return {
            "ok": True,
            "servers": {name: {"alive": not link.dead} for name, link in self._links.items()},
            "restarts": self.restarts,
        }

    async def aclose(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.aclose()


def _closed(exc: BaseException) -> bool:
    code = getattr(getattr(exc, "error", None), "code", None)
    return code == CONNECTION_CLOSED or "closed" in str(exc).lower()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


__all__ = ["Link", "McpTransport", "open_link"]
