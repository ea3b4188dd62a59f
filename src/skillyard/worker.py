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

Speed (``concurrency=1``): requests are read with ``os.read`` on the raw stdin
descriptor and answers written with one ``os.write``; a call's answer line is
built from pre-encoded pieces around ``orjson.dumps(output)``. After an answer,
when the previous request came back within ``SKILLYARD_SPIN_US`` microseconds
(set by the runtime from ``options.spin_us``), the worker may busy-wait up to that
long for the next one (``poll`` with a zero timeout, then ``sched_yield``) instead
of sleeping: waking a sleeping process costs ~5-15 us on a virtual machine, about
half of a whole round trip. It does so only while that has been faster than
sleeping (:class:`WaitChoice`); a worker whose calls come further apart never spins.
"""

from __future__ import annotations

import os
import select
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

    def as_result(self) -> dict[str, Any]:
        """The JSON-RPC ``result`` object."""
        result: dict[str, Any] = {"output": self.output}
        if self.content is not None:
            result["content"] = self.content
        if self.llm_context is not None:
            result["llm_context"] = self.llm_context
        if self.usage:
            result["usage"] = self.usage
        return result


Handler = Callable[[dict[str, Any], "Context"], Any]
MAX_SPIN_US = 10_000
_perf = time.perf_counter


def _spin_seconds() -> float:
    """How long to busy-wait for the next request: ``SKILLYARD_SPIN_US`` (unset or 0: never)."""
    try:
        us = int(os.environ.get("SKILLYARD_SPIN_US") or 0)
    except ValueError:
        return 0.0
    if us <= 0 or not hasattr(select, "poll") or not hasattr(os, "sched_yield"):
        return 0.0
    try:
        if len(os.sched_getaffinity(0)) < 2:
            return 0.0  # with one CPU the runtime cannot run while this process spins
    except (AttributeError, OSError):
        pass
    return min(us, MAX_SPIN_US) / 1e6


class WaitChoice:
    """Busy-wait or sleep? Each wait takes the one that has lately been faster.

    Busy-waiting saves a wake-up when both processes have a CPU, and costs more
    than it saves when another program takes one (the two then share a core).
    Both are tried first; then every 16th wait tries the other one, so a change in
    the machine's load is noticed within a few dozen calls.
    """

    __slots__ = ("busy_s", "n", "sleep_s")

    def __init__(self) -> None:
        self.busy_s = 0.0  # moving averages of the wait each gave, in seconds
        self.sleep_s = 0.0
        self.n = 0

    def busy(self) -> bool:
        """Whether the next wait should busy-wait."""
        self.n += 1
        faster = self.busy_s <= self.sleep_s
        return faster if self.n & 15 else not faster

    def learn(self, busy: bool, seconds: float) -> None:
        """Record how long a wait took; one outlier (a preemption) moves the average little."""
        avg = self.busy_s if busy else self.sleep_s
        avg = seconds if not avg else avg + (min(seconds, 4 * avg) - avg) * 0.2
        if busy:
            self.busy_s = avg
        else:
            self.sleep_s = avg


class _Lines:
    """Lines read from a raw file descriptor with ``os.read`` (no file object in between).

    With ``spin`` seconds set, :meth:`next_request` may busy-wait that long for
    input before it blocks: only when the previous request came within that window,
    and only while that has been faster than sleeping (:class:`WaitChoice`).
    """

    __slots__ = ("_poll", "buf", "choice", "fd", "spin", "warm")

    def __init__(self, fd: int, spin: float = 0.0) -> None:
        self.fd = fd
        self.buf = bytearray()
        self.spin = spin
        self.warm = False  # the last request came within ``spin`` of the answer before it
        self.choice = WaitChoice()
        self._poll: Any = None
        if spin:
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN)

    def next_request(self) -> bytes:
        """:meth:`readline` after an answer: spins first while requests come back to back."""
        if not self.spin or b"\n" in self.buf:
            return self.readline()
        start = _perf()
        warm = self.warm
        busy = warm and self.choice.busy()
        if busy:
            poll = self._poll.poll
            end = start + self.spin
            # sched_yield lets a process sharing this CPU (the runtime itself, when the
            # scheduler put both on one core) run instead of waiting for the spin to end.
            while not poll(0) and _perf() < end:
                os.sched_yield()
        line = self.readline()
        gap = _perf() - start
        if warm:
            self.choice.learn(busy, gap)
        self.warm = gap < self.spin
        return line

    def readline(self) -> bytes:
        """The next line with its newline; at end of input what is left (b"" when nothing)."""
        buf = self.buf
        if buf:
            i = buf.find(b"\n")
            if i >= 0:
                line = bytes(buf[: i + 1])
                del buf[: i + 1]
                return line
        while True:
            data = os.read(self.fd, 65536)
            if not data:
                line = bytes(buf)
                buf.clear()
                return line
            if not buf:
                i = data.find(b"\n")
                if i == len(data) - 1:  # the common case: exactly one whole line
                    return data
                if i >= 0:
                    buf += data[i + 1 :]
                    return data[: i + 1]
                buf += data
                continue
            start = len(buf)
            buf += data
            i = buf.find(b"\n", start)
            if i >= 0:
                line = bytes(buf[: i + 1])
                del buf[: i + 1]
                return line


class Context:
    """One call in flight: its identity, its deadline, events and host requests."""

    __slots__ = ("_params", "_received", "_server", "cancelled")

    def __init__(self, server: _Server, params: dict[str, Any]) -> None:
        self._server = server
        self._params = params  # read only when asked: most handlers never look
        self._received = time.monotonic()
        self.cancelled = False

    @property
    def call_id(self) -> str:
        """The runtime's id of this call (events and host requests carry it)."""
        return self._params.get("call_id", "")

    @property
    def tool(self) -> str:
        """The canonical tool name being called (``{skill}-{method}``)."""
        return self._params.get("tool", "")

    @property
    def method(self) -> str:
        """The method name this worker was asked to run."""
        return self._params.get("method", "")

    @property
    def deadline(self) -> float | None:
        """``time.monotonic()`` value after which the runtime gives up (None when unknown)."""
        ms = self._params.get("deadline_ms")
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
        # Spinning holds the GIL, so only the one-thread server spins (see the docstring).
        spin = _spin_seconds() if self.concurrency == 1 else 0.0
        self.lines = _Lines(0, spin)
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
        next_request = self.lines.next_request
        fast = self.pool is None
        while not self.stopping:
            line = next_request()
            if not line:
                break
            if not (fast and self._call_inline(line)):
                self.handle(line)
            # calls that arrived while a host request was answered wait their turn here
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

    def _call_inline(self, line: bytes) -> bool:
        """The hot path: a well-formed call answered on this thread; False for anything else.

        It does what :meth:`call` does with fewer steps: no handler lookup twice, no
        dicts built around the output (the answer line is formatted around it).
        """
        try:
            msg = _loads(line)
        except ValueError:
            return False
        if type(msg) is not dict or msg.get("method") != "call":
            return False
        params = msg.get("params")
        if type(params) is not dict:
            return False
        args = params.get("args")
        handler = self.handlers.get(params.get("method"))  # type: ignore[arg-type]
        if handler is None or type(args) is not dict:
            return False
        rid = msg.get("id")
        contexts = self.contexts
        self.busy = True
        contexts[rid] = Context(self, params)
        try:
            value = handler(args, contexts[rid])
        except Error as exc:
            self._send_error(rid, exc.code, exc.message, exc.data)
            return True
        except Exception as exc:
            self._send_error(rid, -32000, f"{type(exc).__name__}: {exc}")
            return True
        finally:
            contexts.pop(rid, None)
            self.busy = False
        try:
            if isinstance(value, Result):
                data = _dumps({"jsonrpc": "2.0", "id": rid, "result": value.as_result()}) + b"\n"
            elif type(rid) is int:
                # The bytes of dumping the whole message, without building its two dicts.
                data = b'{"jsonrpc":"2.0","id":%d,"result":{"output":%b}}\n' % (rid, _dumps(value))
            else:
                data = _dumps({"jsonrpc": "2.0", "id": rid, "result": {"output": value}}) + b"\n"
        except (TypeError, ValueError) as exc:
            self._send_error(rid, -32000, f"output is not JSON: {exc}")
            return True
        n = os.write(self.out, data)
        if n < len(data):
            self._write_rest(memoryview(data)[n:])
        return True

    def _send_error(self, rid: Any, code: int, message: str, data: Any = None) -> None:
        err: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            err["data"] = data
        self.send({"jsonrpc": "2.0", "id": rid, "error": err})

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
        result = value.as_result() if isinstance(value, Result) else {"output": value}
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
                line = self.lines.readline()
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
