"""One process per call: ``json`` (args on stdin, one JSON object on stdout) and
``lines`` (stdout streamed line by line as ``delta`` events)."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import TYPE_CHECKING, Any

import orjson

from skillyard.errors import (
    LimitExceeded,
    OutputTooLarge,
    ProtocolError,
    SkillCrashed,
    SkillError,
    SkillTimeout,
    TransportError,
)
from skillyard.transports.base import CallContext, RawResult
from skillyard.transports.process.spawn import Child, redact

if TYPE_CHECKING:
    from skillyard.card import Card


class _Collector:
    """Gathers stdout up to the output cap; in lines mode it also emits each line."""

    def __init__(self, card: Card, ctx: CallContext, *, lines: bool) -> None:
        self.card = card
        self.ctx = ctx
        self.cap = card.limits.max_output_bytes
        self.lines = lines
        self.buf = bytearray()
        self.size = 0
        self.count = 0
        self.too_large = False
        self.child: Child | None = None
        self.parts: list[str] = []

    def feed(self, data: bytes) -> None:
        if self.too_large:
            return
        self.size += len(data)
        if self.size > self.cap:
            self.too_large = True
            if self.child is not None:
                self.child.kill_group()
            return
        self.buf += data
        if not self.lines:
            return
        if not data:  # end of stream: a last line without a newline
            if self.buf:
                self._line(bytes(self.buf))
                self.buf.clear()
            return
        start = 0
        while (i := self.buf.find(b"\n", start)) >= 0:
            self._line(bytes(self.buf[start:i]))
            start = i + 1
        if start:
            del self.buf[:start]

    def _line(self, raw: bytes) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        text = raw.decode("utf-8", "replace")
        self.count += 1
        self.parts.append(text)
        self.ctx.emit("delta", text=text)


async def run_oneshot(card: Card, args: dict[str, Any], ctx: CallContext) -> RawResult:
    """Run one process for one call in ``json`` or ``lines`` mode."""
    lines = card.options.get("mode") == "lines"
    loop = asyncio.get_running_loop()
    col = _Collector(card, ctx, lines=lines)
    t0 = time.monotonic()
    call_env = {
        "SKILLYARD_TOOL": card.name,
        "SKILLYARD_METHOD": str(card.options.get("handler") or card.method),
        "SKILLYARD_CALL_ID": ctx.call_id,
    }
    child = Child(card, loop=loop, on_stdout=col.feed, extra_env=call_env)
    col.child = child
    if lines:
        ctx.emit("start", pid=child.pid)
    try:
        try:
            child.write(orjson.dumps(args))
        except OSError:
            pass  # a child that does not read its input; its exit says what happened
        child.close_stdin()
        try:
            async with asyncio.timeout(ctx.remaining):
                await asyncio.shield(child.exited)
                # Whatever the leader left behind goes with it; then the pipes reach EOF.
                await asyncio.shield(child.streams_closed)
        except TimeoutError as exc:
            child.kill_group()
            await asyncio.shield(child.exited)
            raise SkillTimeout(
                f"{card.name}: no result after {card.limits.timeout_sec:g}s; "
                f"the process group {child.pid} was killed"
            ) from exc
    finally:
        await child.stop()
    if col.too_large:
        raise OutputTooLarge(
            f"{card.name}: the process wrote more than {col.cap} bytes on stdout "
            "(limits.max_output_bytes); it was killed"
        )
    elapsed_ms = (time.monotonic() - t0) * 1000
    rc = child.returncode
    if rc != 0:
        _raise_exit(card, child)
    if lines:
        ctx.emit("usage", lines=col.count, bytes=col.size, duration_ms=round(elapsed_ms, 3))
        text = "\n".join(col.parts)
        return RawResult(
            output={"text": text, "lines": col.count},
            content=text,
            usage={"lines": col.count, "bytes": col.size},
        )
    return _json_result(card, bytes(col.buf), child)


def _raise_exit(card: Card, child: Child) -> None:
    rc = child.returncode or 0
    if rc == -signal.SIGXCPU:
        raise LimitExceeded(
            f"{card.name}: the process used up its {card.limits.cpu_sec}s of CPU time "
            f"(limits.cpu_sec) and {child.describe_exit()}"
        )
    hint = ""
    if card.limits.memory_mb:
        hint = f" (its address space is limited to {card.limits.memory_mb} MB by limits.memory_mb)"
    raise SkillCrashed(f"{card.name}: the process {child.describe_exit()}{hint}")


def _json_result(card: Card, data: bytes, child: Child) -> RawResult:
    body = data.strip()
    if not body:
        raise ProtocolError(
            f"{card.name}: the process wrote nothing on stdout; a json-mode skill must print "
            f"one JSON object ({child.describe_exit()})"
        )
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        shown = redact(body[:80].decode("utf-8", "replace"), child.secrets)
        raise ProtocolError(
            f"{card.name}: stdout is not one JSON object ({exc}); it starts with {shown!r}"
        ) from exc
    if not isinstance(value, dict):
        raise ProtocolError(
            f"{card.name}: stdout must be a JSON object, got {type(value).__name__}"
        )
    if "error" in value and set(value) <= {"error"}:
        raise skill_error(card, value["error"])
    return RawResult(output=value)


def skill_error(card: Card, err: Any) -> TransportError | SkillError:
    """The SkillError for an ``{"error": ...}`` object a skill reported."""
    if isinstance(err, dict):
        message = str(err.get("message") or "the skill reported an error")
        details = {k: v for k, v in err.items() if k in ("code", "data")}
    else:
        message = str(err)
        details = {}
    return SkillError(f"{card.name}: {message[:2000]}", details=details)
