"""The persistent worker: one long-lived child per package speaking NDJSON JSON-RPC 2.0.

Requests are multiplexed by id, so several calls can be in flight on one worker;
the worker may send ``event`` notifications and reverse ``host.*`` requests for
any call in flight (docs/process-protocol.md).

Why the I/O looks like this (a trivial echo, median per call, measured side by
side on a busy 2-core machine; a blocking NDJSON+orjson client is the floor at
~19-29 us):

- asyncio streams (``create_subprocess_exec``): ~95-115 us with bad tails
  (PERFORMANCE.md anchors).
- a reader thread doing blocking ``os.read`` and ``call_soon_threadsafe``:
  ~125-150 us (two thread hand-offs and a self-pipe wake-up per call).
- ``loop.add_reader`` on the raw non-blocking fd, ``os.write`` for requests:
  ~43-64 us; the rest is one event-loop round trip (epoll, callback, task wake-up).
- the same plus a bounded *latency fast path*: when a call is the only one in
  flight on its worker and the worker's recent answers came back within
  ``options.spin_us`` (default 1000 us), the caller waits for the answer in
  ``poll()`` before yielding to the loop: ~25-43 us for the bare I/O.
- the same plus *busy waiting on both sides* (up to ``BUSY_SPIN_US``, with
  ``sched_yield`` between polls): the caller for the answer, the worker helper
  for the next request. Waking a sleeping process costs ~5-15 us on this virtual
  machine, twice per round trip; without those wake-ups the path through
  ``Runtime.call`` measured 18-19 us against a 16 us floor (1.14-1.17x, was
  2.2-2.3x). When another program takes a CPU, busy waiting costs more than it
  saves, so each side times both ways and keeps the faster
  (:class:`skillyard.worker.WaitChoice`); with one usable CPU nobody busy-waits.

A worker leads a new process group but stays in the runtime's session: with
``setsid`` the child also gets its own scheduler autogroup on Linux, and the round
trip measured ~120 us instead of ~73 us. The fast path stalls the event loop for
at most ``spin_us`` per call, only while nothing else is in flight on the
transport and the worker's answers come that fast (a moving average decides);
``spin_us = 0`` turns it off, busy waits included. Request lines are formatted
around ``orjson.dumps(args)`` with a pre-encoded middle per card (the same bytes
as dumping the whole message). bench/bench_core.py reports the whole path next
to the raw floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import time
from typing import TYPE_CHECKING, Any

import orjson

from skillyard.errors import (
    OutputTooLarge,
    PermissionDenied,
    ProtocolError,
    SkillCrashed,
    SkillTimeout,
    SkillyardError,
    TransportError,
)
from skillyard.transports.base import CallContext, RawResult
from skillyard.transports.process.inflight import Flight, Pending, Timeout
from skillyard.transports.process.oneshot import skill_error
from skillyard.transports.process.spawn import Child, redact
from skillyard.worker import WaitChoice

if TYPE_CHECKING:
    from collections.abc import Callable

    from skillyard.card import Card

ENVELOPE_BYTES = 64 * 1024
MAX_HOST_REQUESTS = 64
DEFAULT_CONCURRENCY = 16
DEFAULT_SPIN_US = 1000
# The busy part of a wait, on both sides: the caller polls without sleeping for at most
# this long before it sleeps in poll(); the worker helper waits as long for the next request.
BUSY_SPIN_US = 100

# JSON-RPC error codes the runtime answers reverse host requests with.
RPC_INVALID_PARAMS = -32602
RPC_METHOD_NOT_FOUND = -32601
RPC_INTERNAL = -32603
RPC_HOST_ERROR = -32000
RPC_PERMISSION_DENIED = -32001


_OPT_STR = (str, type(None))


def _cpus() -> int:
    """How many CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Worker:
    """One persistent child and the calls in flight on it."""

    def __init__(
        self, card: Card, loop: asyncio.AbstractEventLoop, flight: Flight | None = None
    ) -> None:
        self.flight = flight or Flight()
        self.skill = card.id
        self.digest = card.digest
        self.loop = loop
        self.pending: dict[int, Pending] = {}
        self.by_call: dict[str, Pending] = {}
        self.abandoned: set[int] = set()
        self.dead: str | None = None
        self.retired = False
        self.calls = 0
        self._buf = bytearray()
        self._ids = 0
        self._host_tasks: set[asyncio.Task[None]] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self.queued = 0  # calls waiting for one of this worker's ``concurrency`` slots
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self.line_cap = card.limits.max_output_bytes + ENVELOPE_BYTES
        opts = card.options
        self.concurrency = int(opts.get("concurrency") or DEFAULT_CONCURRENCY)
        spin_us = max(0.0, float(opts.get("spin_us", DEFAULT_SPIN_US)))
        self.spin_ms = spin_us / 1000.0
        # Busy-waiting only pays when the worker can run on another CPU at the same time.
        self.busy_us = min(spin_us, BUSY_SPIN_US) if _cpus() > 1 else 0.0
        self.choice = WaitChoice()
        self.ewma_us = 0.0
        self._heads: dict[Card, bytes] = {}
        self.child = Child(
            card,
            loop=loop,
            on_stdout=self._feed,
            on_exit=self._on_exit,
            extra_env={"SKILLYARD_SPIN_US": str(int(self.busy_us))},
            new_session=False,
        )
        self.pid = self.child.pid
        self._poll = select.poll()
        self._poll.register(self.child.stdout_fd, select.POLLIN | select.POLLHUP)

    @property
    def usable(self) -> bool:
        return self.dead is None and not self.retired

    @property
    def load(self) -> int:
        """Calls given to this worker: in flight plus waiting for a slot."""
        return len(self.pending) + self.queued

    # -- calls ---------------------------------------------------------------------------

    async def call(self, card: Card, args: dict[str, Any], ctx: CallContext) -> RawResult:
        if len(self.pending) >= self.concurrency:
            await self._slot(card)
        cap = card.limits.max_output_bytes + ENVELOPE_BYTES
        if cap > self.line_cap:
            self.line_cap = cap
        self._ids = rid = self._ids + 1
        p = Pending(rid, card, ctx)
        t0 = time.monotonic()
        remaining = ctx.deadline - t0
        head = self._heads.get(card) or self._head(card)
        # The bytes orjson.dumps gives for the whole request, without building its two dicts.
        line = b'{"jsonrpc":"2.0","id":%d,%b%b,"call_id":%b,"deadline_ms":%d}}\n' % (
            rid,
            head,
            orjson.dumps(args),
            orjson.dumps(ctx.call_id),
            int(remaining * 1000) if remaining > 0 else 0,
        )
        self.pending[rid] = p
        self.by_call[ctx.call_id] = p
        self.calls += 1
        flight = self.flight
        flight.n += 1
        try:
            self.child.write(line)
        except OSError:
            pass  # the child is gone; its exit fails this call with the reason
        spin = self.spin_ms
        fast = spin and flight.n == 1 and self.ewma_us < spin * 1000
        if fast:
            busy = self.ewma_us < self.busy_us and self.choice.busy()
            self._wait_here(p, spin, busy)
        msg = p.msg
        if msg is not None:
            # The answer is already here (latency fast path): no timer, no loop round trip.
            self._done(p)
        else:
            msg = await self._wait(p, remaining)
        lat = time.monotonic() - t0
        self.ewma_us = 0.8 * self.ewma_us + 2e5 * lat
        if fast:
            self.choice.learn(busy, lat)
        return self._result(p, msg)

    def _head(self, card: Card) -> bytes:
        """The request's fixed middle for ``card``: method, tool and the handler's name."""
        if len(self._heads) > 256:
            self._heads.clear()
        head = b'"method":"call","params":{"tool":%b,"method":%b,"args":' % (
            orjson.dumps(card.name),
            orjson.dumps(card.options.get("handler") or card.method),
        )
        self._heads[card] = head
        return head

    def _wait_here(self, p: Pending, spin_ms: float, busy: bool) -> None:
        """The latency fast path: wait for ``p``'s answer without yielding to the event loop.

        With ``busy``, poll without sleeping for up to ``busy_us`` first (``sched_yield``
        in between hands the CPU to the worker if it shares this core), then sleep in
        ``poll()`` for the rest of ``spin_ms``.
        """
        poll = self._poll.poll
        if busy:
            perf = time.perf_counter
            end = perf() + self.busy_us / 1e6
            while not poll(0):
                if perf() >= end:
                    break
                os.sched_yield()
            else:
                self._read_answer(p)
                return
            spin_ms -= self.busy_us / 1000
        if spin_ms > 0 and poll(spin_ms):
            self._read_answer(p)

    async def _slot(self, card: Card) -> None:
        self.queued += 1
        try:
            while len(self.pending) >= self.concurrency:
                waiter = self.loop.create_future()
                self._waiters.append(waiter)
                await waiter
                if self.dead is not None:
                    raise SkillCrashed(f"{card.name}: the worker {self.dead}")
        finally:
            self.queued -= 1

    async def _wait(self, p: Pending, remaining: float) -> Any:
        card = p.card
        fut: asyncio.Future[Any] = self.loop.create_future()
        p.fut = fut
        if p.error is not None:
            fut.set_exception(p.error)
        elif p.msg is not None:
            fut.set_result(p.msg)
        else:
            p.due = self.loop.time() + max(0.0, remaining)
            self._arm(p.due)
        try:
            return await fut
        except Timeout as exc:
            await self._reaped()
            raise SkillTimeout(
                f"{card.name}: no answer from the worker within {card.limits.timeout_sec:g}s"
                + (
                    "; the worker's process group was killed"
                    if self.dead
                    else "; the worker takes no new calls and stops when its others finish"
                )
            ) from exc
        except asyncio.CancelledError:
            if self.pending.get(p.rid) is p:
                self._abandon(p)
            raise
        except TransportError:
            await self._reaped()
            raise
        finally:
            self._done(p)

    async def _reaped(self) -> None:
        """After the worker was killed, wait (briefly) until it is reaped: no zombie stays."""
        if self.dead is not None and not self.child.exited.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.child.exited), 5.0)

    def _done(self, p: Pending) -> None:
        if self.pending.get(p.rid) is p:
            del self.pending[p.rid]
            self.flight.n -= 1
        if self.by_call.get(p.ctx.call_id) is p:
            del self.by_call[p.ctx.call_id]
        while self._waiters:  # wake the next call waiting for a slot (skip cancelled ones)
            w = self._waiters.pop(0)
            if not w.done():
                w.set_result(None)
                break
        if self.retired and not self.pending and self.dead is None:
            self.kill("was stopped after an abandoned call")

    def _result(self, p: Pending, msg: dict[str, Any]) -> RawResult:
        card = p.card
        if p.bytes > card.limits.max_output_bytes:
            raise OutputTooLarge(
                f"{card.name}: the worker's answer is {p.bytes} bytes; "
                f"the limit is {card.limits.max_output_bytes} (limits.max_output_bytes)"
            )
        if "error" in msg:
            raise skill_error(card, msg["error"])
        result = msg.get("result")
        if not isinstance(result, dict):
            raise ProtocolError(
                f"{card.name}: the worker's result must be an object with 'output', "
                f"got {type(result).__name__}"
            )
        content = result.get("content")
        llm_context = result.get("llm_context")
        usage = result.get("usage") or {}
        if not isinstance(content, _OPT_STR) or not isinstance(llm_context, _OPT_STR):
            raise ProtocolError(f"{card.name}: 'content' and 'llm_context' must be strings")
        if not isinstance(usage, dict):
            raise ProtocolError(f"{card.name}: 'usage' must be an object")
        return RawResult(
            output=result.get("output"), content=content, llm_context=llm_context, usage=usage
        )

    def _arm(self, due: float) -> None:
        """Make sure the deadline timer fires by ``due``.

        One timer per worker, set for the soonest deadline, instead of one per call:
        a call that ends before its deadline costs no timer at all (calls usually
        share a timeout, so a later call rarely moves the timer). When it fires,
        :meth:`_sweep` expires what is due and sets it again for the rest.
        """
        if self._timer is None or due < self._timer_due:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(due, self._sweep)
            self._timer_due = due

    def _sweep(self) -> None:
        self._timer = None
        now = self.loop.time() + 1e-6  # the loop runs timers up to its clock resolution early
        soonest = 0.0
        for p in list(self.pending.values()):
            if not p.due or p.finished:
                continue
            if p.due <= now:
                self._expire(p)
            elif not soonest or p.due < soonest:
                soonest = p.due
        if soonest:
            self._arm(soonest)

    def _expire(self, p: Pending) -> None:
        if p.finished:
            return
        self._abandon(p)
        p.fail(Timeout())

    def _abandon(self, p: Pending) -> None:
        """Give up on a call the worker is still running: cancel it and retire or stop the worker."""
        if self.pending.pop(p.rid, None) is not None:
            self.flight.n -= 1
        self.by_call.pop(p.ctx.call_id, None)
        self.abandoned.add(p.rid)
        if self.dead is not None:
            return
        note = {"jsonrpc": "2.0", "method": "cancel", "params": {"id": p.rid}}
        with contextlib.suppress(OSError):
            self.child.write(orjson.dumps(note) + b"\n")
        if self.pending:
            self.retired = True
        else:
            self.kill(f"was stopped because call {p.ctx.call_id} did not finish in time")

    # -- reading -------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if not data:
            return  # EOF: the exit watcher reports the crash
        buf = self._buf
        if not buf and data.find(b"\n") == len(data) - 1:
            if not data.isspace():  # the common case: exactly one whole line
                self._message(data)
            return
        start = len(buf)
        buf += data
        pos = 0
        while (i := buf.find(b"\n", max(pos, start))) >= 0:
            line = bytes(buf[pos:i])
            pos = i + 1
            start = pos
            if line.strip():
                self._message(line)
            if self.dead is not None:
                buf.clear()
                return
        if pos:
            del buf[:pos]
        if len(buf) > self.line_cap:
            size = len(buf)
            buf.clear()
            self._fail_all(
                lambda card: OutputTooLarge(
                    f"{card.name}: the worker wrote a line of more than {size} bytes without "
                    f"ending it; the limit is {self.line_cap} (limits.max_output_bytes plus "
                    "the envelope); the worker was killed"
                )
            )

    def _message(self, line: bytes) -> None:
        try:
            msg = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            shown = redact(line[:80].decode("utf-8", "replace"), self.child.secrets)
            self._protocol_error(f"wrote a line that is not JSON ({exc}): {shown!r}")
            return
        if not isinstance(msg, dict):
            self._protocol_error(f"wrote a JSON {type(msg).__name__}, not a JSON-RPC object")
            return
        method = msg.get("method")
        if method is None:
            self._response(msg, len(line))
        elif method == "event":
            self._event(msg, len(line))
        elif isinstance(method, str) and method.startswith("host.") and "id" in msg:
            self._host_request(msg)
        elif "id" in msg:
            self._reply_error(msg.get("id"), RPC_METHOD_NOT_FOUND, f"unknown method {method!r}")
        # other notifications are ignored, as JSON-RPC allows

    def _response(self, msg: dict[str, Any], size: int) -> None:
        rid = msg.get("id")
        p = self.pending.get(rid) if isinstance(rid, int) else None
        if p is None:
            if isinstance(rid, int) and rid in self.abandoned:
                self.abandoned.discard(rid)
                return
            self._protocol_error(f"answered id {rid!r}, which no call in flight has")
            return
        if "result" not in msg and "error" not in msg:
            self._protocol_error(f"sent a response to id {rid} with neither result nor error")
            return
        p.bytes += size
        p.resolve(msg)

    def _event(self, msg: dict[str, Any], size: int) -> None:
        params = msg.get("params")
        if not isinstance(params, dict):
            return
        p = self.by_call.get(params.get("call_id"))  # type: ignore[arg-type]
        kind = params.get("kind")
        if p is None or not isinstance(kind, str) or p.finished:
            return  # late or stray events are dropped
        p.bytes += size
        if p.bytes > p.card.limits.max_output_bytes:
            self._abandon(p)
            p.fail(
                OutputTooLarge(
                    f"{p.card.name}: the worker's events and answer passed "
                    f"{p.card.limits.max_output_bytes} bytes (limits.max_output_bytes)"
                )
            )
            return
        data = {k: v for k, v in params.items() if k not in ("call_id", "kind")}
        p.ctx.emit(kind, **data)

    def read_stdout(self) -> None:
        self.child.read_stdout()

    def _read_answer(self, p: Pending) -> None:
        """Read what the poll saw; one whole line answering ``p`` skips the general reader."""
        child = self.child
        try:
            data = os.read(child.stdout_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data and not self._buf and data.find(b"\n") == len(data) - 1:
            try:
                msg = orjson.loads(data)
            except orjson.JSONDecodeError:
                msg = None
            if (
                type(msg) is dict
                and type(rid := msg.get("id")) is int
                and rid == p.rid
                and "method" not in msg
                and ("result" in msg or "error" in msg)
            ):
                p.bytes += len(data)
                p.resolve(msg)
                return
        # anything else (events, host requests, partial lines, EOF) takes the general path
        if not data:
            child._close_stdout()
        self._feed(data)

    # -- reverse host requests -----------------------------------------------------------

    def _host_request(self, msg: dict[str, Any]) -> None:
        hid = msg["id"]
        params = msg.get("params")
        if not isinstance(params, dict):
            self._reply_error(hid, RPC_INVALID_PARAMS, "params must be an object", "bad_request")
            return
        p = self.by_call.get(params.get("call_id"))  # type: ignore[arg-type]
        if p is None:
            self._reply_error(
                hid,
                RPC_INVALID_PARAMS,
                f"no call {params.get('call_id')!r} is in flight on this worker",
                "unknown_call",
            )
            return
        if len(self._host_tasks) >= MAX_HOST_REQUESTS:
            self._reply_error(hid, RPC_HOST_ERROR, "too many host requests in flight", "busy")
            return
        rest = {k: v for k, v in params.items() if k != "call_id"}
        task = self.loop.create_task(self._serve_host(hid, msg["method"][5:], rest, p))
        self._host_tasks.add(task)
        task.add_done_callback(self._host_tasks.discard)

    async def _serve_host(self, hid: Any, method: str, params: dict[str, Any], p: Pending) -> None:
        try:
            result = await p.ctx.host.dispatch(method, params)
            line = orjson.dumps({"jsonrpc": "2.0", "id": hid, "result": result})
        except PermissionDenied as exc:
            self._reply_error(hid, RPC_PERMISSION_DENIED, exc.message, exc.code)
            return
        except SkillyardError as exc:
            self._reply_error(hid, RPC_HOST_ERROR, exc.message, exc.code)
            return
        except Exception as exc:
            self._reply_error(
                hid, RPC_INTERNAL, f"host.{method} failed: {type(exc).__name__}", "internal"
            )
            return
        self._send(line)

    def _reply_error(self, hid: Any, code: int, message: str, data_code: str = "") -> None:
        err: dict[str, Any] = {"code": code, "message": message}
        if data_code:
            err["data"] = {"code": data_code}
        self._send(orjson.dumps({"jsonrpc": "2.0", "id": hid, "error": err}))

    def _send(self, line: bytes) -> None:
        if self.dead is None:
            with contextlib.suppress(OSError):
                self.child.write(line + b"\n")

    # -- failure and shutdown ------------------------------------------------------------

    def _protocol_error(self, what: str) -> None:
        self._fail_all(
            lambda card: ProtocolError(
                f"{card.name}: the worker {what}; it was stopped and starts again on the next call"
            )
        )

    def _fail_all(self, make: Callable[[Card], TransportError]) -> None:
        pending = list(self.pending.values())
        self.kill("broke the protocol")
        for p in pending:
            p.fail(make(p.card))

    def kill(self, reason: str) -> None:
        """Mark the worker dead and SIGKILL its process group (the exit watcher reaps it)."""
        if self.dead is None:
            self.dead = reason
        self.child.kill_group()

    def _on_exit(self) -> None:
        if self.dead is None:
            self.dead = self.child.describe_exit()
        reason = self.child.describe_exit()
        for p in list(self.pending.values()):
            p.fail(
                SkillCrashed(
                    f"{p.card.name}: the worker {reason}; it starts again on the next call"
                )
            )
        for w in self._waiters:
            if not w.done():
                w.set_result(None)
        self._waiters.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.child.release()

    async def aclose(self, grace: float = 2.0) -> None:
        """Ask the worker to shut down, wait up to ``grace`` seconds, then kill its group."""
        if self.dead is None and not self.child.exited.done():
            self._ids += 1
            self.abandoned.add(self._ids)  # its answer is expected and needs no one
            self._send(orjson.dumps({"jsonrpc": "2.0", "id": self._ids, "method": "shutdown"}))
            self.child.close_stdin()
            self.dead = "was shut down"
        await self.child.stop(grace)
        for t in list(self._host_tasks):
            t.cancel()

    def info(self) -> dict[str, Any]:
        return {
            "skill": self.skill,
            "pid": self.pid,
            "alive": self.dead is None,
            "in_flight": len(self.pending),
            "calls": self.calls,
        }
