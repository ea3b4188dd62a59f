"""Write a persistent (``mode = "worker"``) process skill in Python.

Standard library only (orjson is used when it is installed)::

    from skillyard.worker import serve

    def count(args, ctx):
        ctx.emit("progress", done=0.5)
        text = ctx.host("fs.read_text", path=args["path"])   # a reverse host request
        return {"chars": len(text)}

    serve({"count": count})

``serve`` reads newline-delimited JSON-RPC 2.0 requests on stdin and answers on
stdout (docs/process-protocol.md). With ``concurrency=1`` (the default) calls run
one at a time on the main thread, which is the fastest path; with
``concurrency=N`` they run on N threads so slow calls overlap. Anything the
skill prints goes to stderr: stdout belongs to the protocol.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

try:
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
    _dumps: Callable[[Any], bytes] = orjson.dumps
except ImportError:  # pragma: no cover - orjson is optional for skills
    import json

    _loads = json.loads

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class Error(Exception):
    """Raise from a handler to report a skill error with a code and data."""

    def __init__(self, message: str, *, code: int = -32000, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.data = data


class HostError(Exception):
    """A reverse host request was refused (``code`` is e.g. ``permission_denied``)."""

    def __init__(self, message: str, *, code: str, rpc_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.rpc_code = rpc_code


class Result:
    """Return this from a handler to send text content, llm_context or usage with the output."""

    __slots__ = ("content", "llm_context", "output", "usage")

    def __init__(
        self,
        output: Any,
        *,
        content: str | None = None,
        llm_context: str | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> None:
        self.output = output
        self.content = content
        self.llm_context = llm_context
        self.usage = dict(usage or {})


Handler = Callable[[dict[str, Any], "Context"], Any]


class Context:
    """One call in flight: its identity, its deadline, events and host requests."""

    __slots__ = ("_deadline_ms", "_received", "_server", "call_id", "cancelled", "method", "tool")

    def __init__(self, server: _Server, params: dict[str, Any]) -> None:
        self._server = server
        self.call_id: str = params.get("call_id", "")
        self.tool: str = params.get("tool", "")
        self.method: str = params.get("method", "")
        self._deadline_ms = params.get("deadline_ms")
        self._received = time.monotonic()
        self.cancelled = False

    @property
    def deadline(self) -> float | None:
        """``time.monotonic()`` value after which the runtime gives up (None when unknown)."""
        ms = self._deadline_ms
        if isinstance(ms, bool) or not isinstance(ms, int | float):
            return None
        return self._received + ms / 1000

    @property
    def remaining(self) -> float | None:
        """Seconds left before the runtime gives up on this call (None when unknown)."""
        deadline = self.deadline
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def emit(self, kind: str, **data: Any) -> None:
        """Stream an event (``delta``, ``progress``, ``log``...) to the caller."""
        params = {"call_id": self.call_id, "kind": kind, **data}
        self._server.send({"jsonrpc": "2.0", "method": "event", "params": params})

    def host(self, method: str, /, **params: Any) -> Any:
        """Call the host API (``fs.read_text``, ``kv.get``...) and wait for the answer."""
        return self._server.host_call(method, {"call_id": self.call_id, **params})


class _Slot:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: dict[str, Any] | None = None


class _Server:
    def __init__(self, handlers: Mapping[str, Handler], concurrency: int) -> None:
        self.handlers = dict(handlers)
        self.concurrency = max(1, concurrency)
        # stdout belongs to the protocol; print() in a skill goes to stderr instead.
        self.out = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self.stdin = sys.stdin.buffer
        self.lock = threading.Lock()
        self.slots: dict[str, _Slot] = {}
        self.contexts: dict[Any, Context] = {}
        self.queue: deque[dict[str, Any]] = deque()
        self.busy = False
        self.stopping = False
        self.host_ids = 0
        self.pool: Any = None
        if self.concurrency > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="skill")

    def send(self, msg: dict[str, Any]) -> None:
        data = _dumps(msg) + b"\n"
        if self.pool is None:  # one thread writes: no lock on the hot path
            n = os.write(self.out, data)
            if n < len(data):
                self._write_rest(memoryview(data)[n:])
            return
        with self.lock:
            self._write_rest(memoryview(data))

    def _write_rest(self, view: memoryview) -> None:
        while view:
            n = os.write(self.out, view)
            view = view[n:]

    def run(self) -> None:
        readline = self.stdin.readline
        while not self.stopping:
            line = readline()
            if not line:
                break
            self.handle(line)
            while self.queue and not self.busy:
                self.call(self.queue.popleft())
        for slot in list(self.slots.values()):  # wake host requests that will never be answered
            slot.reply = {"error": {"code": 0, "message": "the runtime closed the pipe"}}
            slot.event.set()
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    def handle(self, line: bytes) -> None:
        try:
            msg = _loads(line)
        except ValueError:
            print(
                f"skillyard.worker: ignoring a line that is not JSON: {line[:80]!r}",
                file=sys.stderr,
            )
            return
        if not isinstance(msg, dict):
            return
        method = msg.get("method")
        if method == "call":
            if self.pool is not None:
                self.pool.submit(self.call, msg)
            elif self.busy:
                self.queue.append(msg)
            else:
                self.call(msg)
        elif method is None:
            slot = self.slots.pop(str(msg.get("id")), None)
            if slot is not None:
                slot.reply = msg
                slot.event.set()
        elif method == "cancel":
            params = msg.get("params") or {}
            ctx = self.contexts.get(params.get("id"))
            if ctx is not None:
                ctx.cancelled = True
        elif method == "shutdown":
            self.stopping = True
            if "id" in msg:
                self.send({"jsonrpc": "2.0", "id": msg["id"], "result": None})
        elif "id" in msg:
            self.send(
                {
                    "jsonrpc": "2.0",
                    "id": msg["id"],
                    "error": {"code": -32601, "message": f"unknown method {method!r}"},
                }
            )

    def call(self, msg: dict[str, Any]) -> None:
        rid = msg.get("id")
        params = msg.get("params") or {}
        ctx = Context(self, params)
        handler = self.handlers.get(ctx.method)
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            self.send(
                {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "error": {
                        "code": -32601,
                        "message": f"this worker has no method {ctx.method!r}; it has {known}",
                    },
                }
            )
            return
        inline = self.pool is None
        if inline:
            self.busy = True
        self.contexts[rid] = ctx
        try:
            value = handler(params.get("args") or {}, ctx)
        except Error as exc:
            err: dict[str, Any] = {"code": exc.code, "message": exc.message}
            if exc.data is not None:
                err["data"] = exc.data
            self.send({"jsonrpc": "2.0", "id": rid, "error": err})
            return
        except Exception as exc:
            self.send(
                {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "error": {"code": -32000, "message": f"{type(exc).__name__}: {exc}"},
                }
            )
            return
        finally:
            self.contexts.pop(rid, None)
            if inline:
                self.busy = False
        if isinstance(value, Result):
            result: dict[str, Any] = {"output": value.output}
            if value.content is not None:
                result["content"] = value.content
            if value.llm_context is not None:
                result["llm_context"] = value.llm_context
            if value.usage:
                result["usage"] = value.usage
        else:
            result = {"output": value}
        try:
            self.send({"jsonrpc": "2.0", "id": rid, "result": result})
        except (TypeError, ValueError) as exc:
            self.send(
                {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "error": {"code": -32000, "message": f"output is not JSON: {exc}"},
                }
            )

    def host_call(self, method: str, params: dict[str, Any]) -> Any:
        with self.lock:
            self.host_ids += 1
            hid = f"h-{self.host_ids}"
        slot = _Slot()
        self.slots[hid] = slot
        self.send({"jsonrpc": "2.0", "id": hid, "method": f"host.{method}", "params": params})
        if self.pool is None:
            # Calls run on the reading thread: keep reading until the answer arrives,
            # queueing calls that come in meanwhile.
            while slot.reply is None:
                line = self.stdin.readline()
                if not line:
                    raise HostError("the runtime closed the pipe", code="closed", rpc_code=0)
                self.handle(line)
        else:
            slot.event.wait()
        reply = slot.reply or {}
        if "error" in reply:
            err = reply["error"] if isinstance(reply["error"], dict) else {}
            data = err.get("data")
            if not isinstance(data, dict):
                data = {}
            raise HostError(
                str(err.get("message", "host request failed")),
                code=str(data.get("code", "host_error")),
                rpc_code=int(err.get("code", -32000)),
            )
        return reply.get("result")


def serve(handlers: Mapping[str, Handler], *, concurrency: int = 1) -> None:
    """Answer JSON-RPC ``call`` requests on stdin with ``handlers[method](args, ctx)``."""
    _Server(handlers, concurrency).run()


__all__ = ["Context", "Error", "HostError", "Result", "serve"]
