"""The stdio transport of ``skillyard serve mcp``: newline-delimited JSON-RPC on stdin/stdout.

A small asyncio protocol, not the SDK's anyio streams: one ``orjson.loads`` per line
in, one ``orjson.dumps`` per message out. The protocol's stdout is a private copy
of fd 1; fd 1 itself is pointed at stderr so a skill that prints cannot corrupt
the channel. A line longer than ``max_line_bytes`` is answered with a parse error
and skipped up to its newline; the connection carries on.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from skillyard.serve.mcp import PARSE_ERROR, McpServer, Session, error

if TYPE_CHECKING:
    from skillyard.runtime import Runtime

MAX_LINE_BYTES = 16 * 1024 * 1024


class _Lines(asyncio.Protocol):
    """Splits a byte stream into lines, bounding how much one line may hold."""

    def __init__(
        self,
        on_line: Callable[[bytes], None],
        on_too_long: Callable[[], None],
        max_line: int,
        done: asyncio.Future[None],
    ) -> None:
        self._on_line = on_line
        self._on_too_long = on_too_long
        self._max = max_line
        self._buf = bytearray()
        self._scanned = 0
        self._discarding = False
        self._done = done

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        if not buf and not self._discarding:
            nl = data.find(b"\n")
            if nl == len(data) - 1:  # the common case: exactly one whole message
                self._on_line(data[:nl])
                return
        buf += data
        start = 0
        while True:
            nl = buf.find(b"\n", max(start, self._scanned))
            if nl < 0:
                break
            if self._discarding:
                self._discarding = False
            else:
                self._on_line(bytes(buf[start:nl]))
            start = nl + 1
            self._scanned = start
        if start:
            del buf[:start]
        self._scanned = len(buf)
        if len(buf) > self._max:
            if not self._discarding:
                self._discarding = True
                self._on_too_long()
            buf.clear()
            self._scanned = 0

    def eof_received(self) -> bool | None:
        if self._buf and not self._discarding:
            self._on_line(bytes(self._buf))
        self._buf.clear()
        if not self._done.done():
            self._done.set_result(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(None)


class _Writer:
    """Writes framed messages to the protocol's stdout (non-blocking when it is a pipe)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.transport: asyncio.WriteTransport | None = None
        self.broken = False

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            pipe = os.fdopen(self.fd, "wb", buffering=0, closefd=False)
            self.transport, _ = await loop.connect_write_pipe(asyncio.Protocol, pipe)
        except (ValueError, OSError):  # a regular file: plain blocking writes
            self.transport = None

    def write(self, msg: dict[str, Any]) -> None:
        if self.broken:
            return
        try:
            data = orjson.dumps(msg) + b"\n"
        except TypeError:
            data = orjson.dumps(error(msg.get("id"), -32603, "result is not JSON-serialisable"))
            data += b"\n"
        t = self.transport
        if t is not None:
            if t.is_closing():
                self.broken = True
                return
            t.write(data)
            return
        try:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError:
            self.broken = True

    async def drain(self) -> None:
        t = self.transport
        if t is not None:
            while t.get_write_buffer_size() and not t.is_closing():
                await asyncio.sleep(0.001)


def _protect_stdout() -> int:
    """A private fd for the protocol; fd 1 and ``sys.stdout`` now go to stderr."""
    sys.stdout.flush()
    proto = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


async def serve_stdio(
    runtime: Runtime,
    server: McpServer | None = None,
    *,
    stdin_fd: int = 0,
    stdout_fd: int | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> None:
    """Serve MCP on stdin/stdout until stdin closes; in-flight calls finish first."""
    server = server or McpServer(runtime)
    loop = asyncio.get_running_loop()
    out = _Writer(_protect_stdout() if stdout_fd is None else stdout_fd)
    await out.start(loop)
    write = out.write
    session = Session()
    receive = server.receive
    loads = orjson.loads

    def on_line(line: bytes) -> None:
        try:
            msg = loads(line)
        except orjson.JSONDecodeError:
            if line.strip():
                write(error(None, PARSE_ERROR, "parse error: the line is not valid JSON"))
            return
        receive(msg, session, write)

    def on_too_long() -> None:
        write(error(None, PARSE_ERROR, f"message too large: over {max_line_bytes} bytes"))

    done: asyncio.Future[None] = loop.create_future()
    stdin = os.fdopen(stdin_fd, "rb", buffering=0, closefd=False)
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: _Lines(on_line, on_too_long, max_line_bytes, done), stdin
        )
    except (ValueError, OSError):  # a regular file: read it in a thread
        transport = None
        protocol = _Lines(on_line, on_too_long, max_line_bytes, done)

        def pump() -> None:
            while True:
                chunk = os.read(stdin_fd, 65536)
                if not chunk:
                    loop.call_soon_threadsafe(protocol.eof_received)
                    return
                loop.call_soon_threadsafe(protocol.data_received, chunk)

        loop.run_in_executor(None, pump)
    try:
        await done
        while session.tasks:
            await asyncio.gather(*list(session.tasks.values()), return_exceptions=True)
        await out.drain()
    finally:
        session.cancel_all()
        if transport is not None:
            transport.close()
