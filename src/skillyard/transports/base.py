"""The transport extension point, the call context and the result types.

A transport knows how to run a card's code and nothing about policy, caches or
ledgers. It implements one required coroutine, :meth:`Transport.call`, and may
implement :meth:`~Transport.health` and :meth:`~Transport.aclose`::

    class EchoTransport:
        kind = "echo"

        async def call(self, card, args, ctx):
            return RawResult(output={"echo": args})

        async def health(self):
            return {"ok": True}

        async def aclose(self):
            pass

:class:`MockTransport` wraps a plain handler and is what tests above the
transport layer use.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from skillyard.errors import PermissionDenied

if TYPE_CHECKING:
    from skillyard.card import Card
    from skillyard.runtime import Runtime

Authority = Literal["system", "delegated_tool"]
EventSink = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, kw_only=True, slots=True)
class Caller:
    """Who is calling: authority decides visibility, principal scopes caches and the ledger."""

    authority: Authority = "delegated_tool"
    principal: str = "local"
    session_id: str | None = None
    capabilities: frozenset[str] = frozenset()


SYSTEM = Caller(authority="system", principal="system")
DEFAULT_CALLER = Caller()


# RawResult and CallResult are built on every call: they are slotted but not frozen
# because a frozen dataclass's __init__ costs ~0.3 us per field (measured: 4.1 us vs
# 0.7 us for CallResult). Treat them as immutable; use dataclasses.replace to derive.


@dataclass(kw_only=True, slots=True)
class RawResult:
    """What a transport returns: the skill's output and what came with it."""

    output: Any = None
    content: str | None = None
    llm_context: str | None = None
    events: tuple[dict[str, Any], ...] = ()
    usage: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """What the gate decided for a call (``none`` when no gate is installed)."""

    outcome: Literal["none", "allow", "deny", "hold"] = "none"
    phase: Literal["completed", "pending_approval", "rejected", "failed"] = "completed"
    reason: str = ""
    rule: str | None = None
    kind: str | None = None
    action_id: str | None = None
    request_id: str | None = None
    deadline: float | None = None


NO_DECISION = Decision()


@dataclass(kw_only=True, slots=True)
class CallResult:
    """The result of :meth:`Runtime.call`."""

    tool: str
    call_id: str
    output: Any = None
    content: str | None = None
    llm_context: str | None = None
    events: tuple[dict[str, Any], ...] = ()
    usage: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    decision: Decision = NO_DECISION
    source: Literal["live", "cache", "cassette"] = "live"

    @property
    def pending(self) -> bool:
        """True when the gate holds the call for approval (see ``Runtime.resume``)."""
        return self.decision.phase == "pending_approval"

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped form of the result."""
        d = self.decision
        return {
            "tool": self.tool,
            "call_id": self.call_id,
            "output": self.output,
            "content": self.content,
            "llm_context": self.llm_context,
            "events": list(self.events),
            "usage": self.usage,
            "timing": self.timing,
            "source": self.source,
            "decision": {
                "outcome": d.outcome,
                "phase": d.phase,
                "reason": d.reason,
                "rule": d.rule,
                "kind": d.kind,
                "action_id": d.action_id,
                "request_id": d.request_id,
                "deadline": d.deadline,
            },
        }


_new = object.__new__


def plain_result(
    tool: str,
    call_id: str,
    output: Any,
    duration_us: float,
    content: str | None = None,
    llm_context: str | None = None,
    events: tuple[dict[str, Any], ...] = (),
    usage: dict[str, Any] | None = None,
    source: Literal["live", "cache", "cassette"] = "live",
) -> CallResult:
    """An undecided :class:`CallResult`, built faster than its constructor.

    Called by position on the runtime's hot path: the dataclass ``__init__`` takes keywords
    only and runs the field factories (~0.8 us of a 2 us call); this sets the slots
    directly (~0.3 us). tests/test_flattened_path.py checks every field is set, so a new
    field cannot be forgotten here.
    """
    r = _new(CallResult)
    r.tool = tool
    r.call_id = call_id
    r.output = output
    r.content = content
    r.llm_context = llm_context
    r.events = events
    r.usage = {} if usage is None else usage
    r.timing = {"duration_us": duration_us}
    r.decision = NO_DECISION
    r.source = source
    return r


@runtime_checkable
class Host(Protocol):
    """The host API as bound to one call; every operation is permission-checked.

    ``dispatch`` is the single entry point every binding (Lua table, WASM
    import, process JSON-RPC) uses; method names are listed in docs/host-api.md.
    """

    async def dispatch(self, method: str, params: dict[str, Any]) -> Any: ...


class DenyAllHost:
    """The host used when no host API is installed: everything is denied."""

    __slots__ = ("tool",)

    def __init__(self, tool: str) -> None:
        self.tool = tool

    async def dispatch(self, method: str, params: dict[str, Any]) -> Any:
        raise PermissionDenied(
            f"host call {method!r} denied: this runtime grants no host API to {self.tool!r}",
            tool=self.tool,
        )


class CallContext:
    """Everything about one call in flight, passed to middleware and transports.

    Identity fields are fixed for the call; ``notes`` is where middleware leaves
    information for the layers after it (a cache key, a gate decision).
    """

    __slots__ = (
        "_host",
        "args",
        "call_id",
        "caller",
        "card",
        "deadline",
        "depth",
        "events",
        "notes",
        "parent",
        "runtime",
        "sink",
        "started",
    )

    def __init__(  # positional or keyword: the runtime passes them by position (0.5 us less)
        self,
        runtime: Runtime,
        card: Card,
        args: dict[str, Any],
        caller: Caller,
        call_id: str,
        deadline: float,
        sink: EventSink | None = None,
        parent: CallContext | None = None,
        started: float | None = None,
    ) -> None:
        self.runtime = runtime
        self.card = card
        self.args = args
        self.caller = caller
        self.call_id = call_id
        self.deadline = deadline
        self.sink = sink
        self.parent = parent
        self.depth: int = 0 if parent is None else parent.depth + 1
        self.events: list[dict[str, Any]] = []
        self.notes: dict[str, Any] = {}
        self.started = time.monotonic() if started is None else started
        self._host: Host | None = None

    @property
    def tool(self) -> str:
        """The canonical tool name of the card being called."""
        return self.card.name

    @property
    def remaining(self) -> float:
        """Seconds left before the call's deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    @property
    def host(self) -> Host:
        """The host API bound to this call's card and caller (built on first use)."""
        if self._host is None:
            self._host = self.runtime.host_for(self)
        return self._host

    def emit(self, kind: str, **data: Any) -> None:
        """Record a streamed event (start, delta, usage, progress, log) and pass it to the sink."""
        event = {"kind": kind, **data}
        self.events.append(event)
        if self.sink is not None:
            self.sink(event)


# A transport may define ``direct(card) -> DirectRun | None``: a synchronous callable that
# runs the card with no call context and no await, returning the output or a RawResult
# and raising what ``call`` would raise. When no middleware applies to the card, the
# runtime calls it in place of the chain (``Runtime._call_inline``). It may return
# ``DEFER`` instead, when this call turns out to need a context or an await (a host
# call, an event to stream): the runtime then runs the call again through
# ``Transport.call``, so a deferring run must have had no effect outside the transport,
# and a transport that defers a card should answer DEFER at once for it from then on.
DirectRun = Callable[[dict[str, Any]], Any]


class _Defer:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DEFER"


DEFER: Any = _Defer()


@runtime_checkable
class Transport(Protocol):
    """Runs a card's code. One required coroutine: :meth:`call` (``direct`` is optional)."""

    kind: str

    async def call(self, card: Card, args: dict[str, Any], ctx: CallContext) -> RawResult: ...

    async def health(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


Handler = Callable[[dict[str, Any], CallContext], Any]


class MockTransport:
    """A transport that calls ``handler(args, ctx)`` (sync or async) for every card.

    The handler may return a :class:`RawResult`, or any JSON value as the output.
    """

    def __init__(self, handler: Handler, *, kind: str = "mock") -> None:
        self.kind = kind
        self.handler = handler
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._is_async = inspect.iscoroutinefunction(handler)

    async def call(self, card: Card, args: dict[str, Any], ctx: CallContext) -> RawResult:
        self.calls.append((card.name, args))
        if self._is_async:
            value = await self.handler(args, ctx)
        else:
            value = self.handler(args, ctx)
        if isinstance(value, Awaitable):
            value = await value
        return value if isinstance(value, RawResult) else RawResult(output=value)

    async def health(self) -> dict[str, Any]:
        return {"ok": True, "calls": len(self.calls)}

    async def aclose(self) -> None:
        return None


__all__ = [
    "DEFAULT_CALLER",
    "DEFER",
    "NO_DECISION",
    "SYSTEM",
    "CallContext",
    "CallResult",
    "Caller",
    "Decision",
    "DenyAllHost",
    "DirectRun",
    "EventSink",
    "Host",
    "MockTransport",
    "RawResult",
    "Transport",
]
