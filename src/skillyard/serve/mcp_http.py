"""The streamable HTTP transport of ``skillyard serve mcp``: a raw ASGI app on uvicorn.

One endpoint, ``/mcp``. ``POST`` carries one JSON-RPC message; a request whose
answer is immediate gets ``application/json``, a call that may stream progress
gets ``text/event-stream`` (when the client accepts it). The handshake era uses
``Mcp-Session-Id`` (issued at ``initialize``, ended by ``DELETE``); 2026-07-28
requests carry their own envelope and need no session, and closing their stream
cancels the call. Guards, in order: Host and Origin (DNS rebinding), bearer
token, body size. uvicorn (already a dependency of the ``mcp`` extra) is
imported only when HTTP is served; no framework sits in between.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import orjson

from skillyard.errors import ConfigError
from skillyard.serve.mcp import (
    HANDSHAKE_VERSIONS,
    INVALID_REQUEST,
    META_VERSION,
    PARSE_ERROR,
    McpServer,
    Session,
    error,
)

HEADER_MISMATCH = -32020
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_SESSIONS = 1024
_LOOPBACK_HOST = re.compile(r"^(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d{1,5})?$", re.I)
_LOOPBACK_ORIGIN = re.compile(r"^https?://(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d{1,5})?$", re.I)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """True for the loopback names and addresses this server binds without a token."""
    return host in ("localhost", "::1") or host.startswith("127.")


class McpHttpApp:
    """The ASGI application serving one :class:`McpServer` at ``/mcp``."""

    def __init__(
        self,
        server: McpServer,
        *,
        token: str | None = None,
        origins: Iterable[str] = (),
        loopback_only: bool = True,
        path: str = "/mcp",
    ) -> None:
        self.server = server
        self._token = f"Bearer {token}".encode() if token else None
        self.origins = {o.rstrip("/") for o in origins}
        self.loopback_only = loopback_only
        self.path = path
        self.sessions: dict[str, Session] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["path"].rstrip("/") != self.path:
            await _plain(send, 404, b"not found: the MCP endpoint is /mcp")
            return
        host = headers.get("host", "")
        if self.loopback_only and not _LOOPBACK_HOST.match(host):
            await _plain(send, 421, b"misdirected request: Host must be a loopback name")
            return
        origin = headers.get("origin")
        if origin is not None and not (
            origin.rstrip("/") in self.origins or _LOOPBACK_ORIGIN.match(origin)
        ):
            await _plain(send, 403, b"forbidden: Origin not allowed (see --allow-origin)")
            return
        if self._token is not None:
            given = headers.get("authorization", "").encode("latin-1")
            if not hmac.compare_digest(given, self._token):
                await _respond(
                    send,
                    401,
                    b'{"error":"unauthorized: send Authorization: Bearer <token>"}',
                    [(b"www-authenticate", b'Bearer realm="skillyard"')],
                )
                return
        method = scope["method"]
        if method == "POST":
            await self._post(headers, receive, send)
        elif method == "DELETE":
            sid = headers.get("mcp-session-id")
            session = self.sessions.pop(sid, None) if sid else None
            if session is None:
                await _plain(send, 404, b"unknown session")
                return
            session.cancel_all()
            await _respond(send, 200, b"", [])
        else:
            await _respond(send, 405, b"", [(b"allow", b"POST, DELETE")])

    async def _post(self, headers: dict[str, str], receive: Receive, send: Send) -> None:
        body = bytearray()
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            body += event.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                await _rpc(send, 413, error(None, INVALID_REQUEST, "request body too large"))
                return
            if not event.get("more_body"):
                break
        try:
            msg = orjson.loads(body)
        except orjson.JSONDecodeError:
            await _rpc(send, 400, error(None, PARSE_ERROR, "parse error: body is not valid JSON"))
            return
        if not isinstance(msg, dict):
            text = (
                "JSON-RPC batches are not supported"
                if isinstance(msg, list)
                else "not a JSON-RPC object"
            )
            await _rpc(send, 400, error(None, INVALID_REQUEST, text))
            return
        rpc_method = msg.get("method")
        params = msg.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        modern = rpc_method != "initialize" and isinstance(meta, dict) and META_VERSION in meta
        extra: list[tuple[bytes, bytes]] = []
        if modern:
            assert isinstance(meta, dict)
            if (
                headers.get("mcp-protocol-version") != meta.get(META_VERSION)
                or headers.get("mcp-method") != rpc_method
            ):
                await _rpc(
                    send,
                    400,
                    error(
                        msg.get("id"),
                        HEADER_MISMATCH,
                        "MCP-Protocol-Version / Mcp-Method headers do not match the request body",
                    ),
                )
                return
            session = Session(era="modern", version=str(meta.get(META_VERSION)))
        elif rpc_method == "initialize":
            if len(self.sessions) >= MAX_SESSIONS:
                self._evict()
            sid = secrets.token_urlsafe(24)
            session = Session(era="handshake")
            self.sessions[sid] = session
            extra.append((b"mcp-session-id", sid.encode()))
        else:
            given = headers.get("mcp-session-id")
            if not given:
                await _rpc(
                    send, 400, error(msg.get("id"), INVALID_REQUEST, "missing Mcp-Session-Id")
                )
                return
            found = self.sessions.get(given)
            if found is None:
                await _rpc(send, 404, error(msg.get("id"), INVALID_REQUEST, "unknown session"))
                return
            session = found
            version = headers.get("mcp-protocol-version")
            if version is not None and version not in HANDSHAKE_VERSIONS:
                text = f"unsupported MCP-Protocol-Version {version!r}"
                await _rpc(send, 400, error(msg.get("id"), INVALID_REQUEST, text))
                return
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.server.receive(msg, session, queue.put_nowait)
        is_request = isinstance(rpc_method, str) and "id" in msg
        if not is_request:
            if queue.empty():
                await _respond(send, 202, b"", extra)
            else:
                await _rpc(send, 400, queue.get_nowait(), extra)
            return
        msg_id = msg.get("id")
        if not queue.empty() and msg_id not in session.tasks:
            await _rpc(send, 200, queue.get_nowait(), extra)
            return
        task = session.tasks.get(msg_id)
        if task is not None:  # a cancelled call never answers: end the exchange when it stops
            task.add_done_callback(lambda _t: queue.put_nowait({}))
        if "text/event-stream" not in headers.get("accept", ""):
            while True:
                out = await queue.get()
                if not out:
                    await _respond(send, 204, b"", extra)
                    return
                if out.get("id") == msg_id and ("result" in out or "error" in out):
                    await _rpc(send, 200, out, extra)
                    return
        await self._stream(send, receive, queue, session, msg_id, extra)

    async def _stream(
        self,
        send: Send,
        receive: Receive,
        queue: asyncio.Queue[dict[str, Any]],
        session: Session,
        msg_id: Any,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    *extra,
                ],
            }
        )
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            if session.era == "modern":  # 2026-07-28: closing the stream cancels the call
                task = session.tasks.pop(msg_id, None)
                if task is not None:
                    task.cancel()
            queue.put_nowait({})

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            while True:
                out = await queue.get()
                if gone.is_set():
                    return
                if not out:
                    break
                data = b"event: message\ndata: " + orjson.dumps(out) + b"\n\n"
                await send({"type": "http.response.body", "body": data, "more_body": True})
                if out.get("id") == msg_id and ("result" in out or "error" in out):
                    break
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()

    def _evict(self) -> None:
        idle = [sid for sid, s in self.sessions.items() if not s.tasks]
        for sid in idle[: max(1, len(idle) // 2)]:
            self.sessions.pop(sid, None)


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], ctype: bytes = b""
) -> None:
    hs = [(b"content-type", ctype)] if ctype else []
    await send({"type": "http.response.start", "status": status, "headers": hs + headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _plain(send: Send, status: int, body: bytes) -> None:
    await _respond(send, status, body, [], b"text/plain; charset=utf-8")


async def _rpc(
    send: Send, status: int, msg: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await _respond(send, status, orjson.dumps(msg), headers or [], b"application/json")


class HttpServer:
    """A running HTTP server: ``url`` to connect to, ``aclose()`` to stop."""

    def __init__(self, uv: Any, task: asyncio.Task[None], url: str, app: McpHttpApp) -> None:
        self._uv = uv
        self._task = task
        self.url = url
        self.app = app

    async def wait(self) -> None:
        await self._task

    async def aclose(self) -> None:
        self._uv.should_exit = True
        for session in self.app.sessions.values():
            session.cancel_all()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 5)
        except TimeoutError:
            self._task.cancel()


async def start_http(
    server: McpServer,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    token: str | None = None,
    origins: Iterable[str] = (),
) -> HttpServer:
    """Bind and start serving; ``port=0`` picks a free port (see ``.url``)."""
    import uvicorn

    loopback = is_loopback(host)
    if not loopback and not token:
        raise ConfigError(
            f"refusing to serve MCP on non-loopback address {host!r} without a bearer token; "
            "set SKILLYARD_MCP_TOKEN (or --token-env) or bind 127.0.0.1"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    sock.setblocking(False)
    bound = sock.getsockname()[1]
    app = McpHttpApp(server, token=token, origins=origins, loopback_only=loopback)
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    uv = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(uv.serve(sockets=[sock]))
    deadline = asyncio.get_running_loop().time() + 10
    while not uv.started:
        if task.done():
            task.result()
            raise ConfigError(f"the HTTP server on {host}:{bound} stopped while starting")
        if asyncio.get_running_loop().time() > deadline:
            raise ConfigError(f"the HTTP server on {host}:{bound} did not start in 10 s")
        await asyncio.sleep(0.005)
    shown = f"[{host}]" if ":" in host else host
    return HttpServer(uv, task, f"http://{shown}:{bound}/mcp", app)


async def serve_http(
    server: McpServer,
    host: str,
    port: int,
    *,
    token: str | None = None,
    origins: Iterable[str] = (),
) -> None:
    """Serve until interrupted; the URL goes to stderr once the socket listens."""
    running = await start_http(server, host, port, token=token, origins=origins)
    print(f"skillyard MCP server listening on {running.url}", file=sys.stderr, flush=True)
    try:
        await running.wait()
    finally:
        await running.aclose()


__all__ = ["HttpServer", "McpHttpApp", "serve_http", "start_http"]
