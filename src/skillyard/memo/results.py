"""Turning a :class:`CallResult` into stored JSON and back, shared by the cache and cassettes."""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson

from skillyard.transports.base import CallContext, CallResult, EventSink, plain_result


def result_fields(result: CallResult) -> dict[str, Any]:
    """The parts of a result worth keeping (identity and timing belong to each call)."""
    return {
        "output": result.output,
        "content": result.content,
        "llm_context": result.llm_context,
        "events": list(result.events),
        "usage": result.usage,
        "duration_us": result.timing.get("duration_us"),
    }


def served(
    ctx: CallContext,
    fields: dict[str, Any],
    source: Literal["cache", "cassette"],
    started_ns: int,
) -> CallResult:
    """A result for ``ctx`` rebuilt from stored fields; recorded events go to the sink again."""
    events = tuple(fields.get("events") or ())
    if ctx.sink is not None:
        for event in events:
            ctx.sink(event)
    timing: dict[str, float] = {"duration_us": (time.perf_counter_ns() - started_ns) / 1000}
    original = fields.get("duration_us")
    if isinstance(original, int | float):
        timing["original_duration_us"] = float(original)
    return CallResult(
        tool=ctx.card.name,
        call_id=ctx.call_id,
        output=fields.get("output"),
        content=fields.get("content"),
        llm_context=fields.get("llm_context"),
        events=events,
        usage=dict(fields.get("usage") or {}),
        timing=timing,
        source=source,
    )


def pack(result: CallResult) -> bytes:
    """A cache payload: a compact JSON array (raises TypeError when not plain JSON)."""
    return orjson.dumps(
        [
            result.output,
            result.content,
            result.llm_context,
            result.events,
            result.usage,
            result.timing.get("duration_us"),
        ]
    )


def unpack(
    tool: str, call_id: str, sink: EventSink | None, payload: bytes, started_ns: int
) -> CallResult | None:
    """The result a cache payload stands for, or ``None`` when it is not one of ours."""
    try:
        output, content, llm_context, events, usage, duration = orjson.loads(payload)
    except (ValueError, TypeError):
        return None
    events = tuple(events) if events else ()
    if events and sink is not None:
        for event in events:
            sink(event)
    result = plain_result(
        tool,
        call_id,
        output,
        (time.perf_counter_ns() - started_ns) / 1000,
        content,
        llm_context,
        events,
        usage if isinstance(usage, dict) else None,
        "cache",
    )
    if duration is not None:
        result.timing["original_duration_us"] = duration
    return result
