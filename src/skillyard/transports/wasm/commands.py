"""Commands a skill returns in ``InvokeResponse.commands``, run through the runtime pipeline.

* ``call_module`` / ``batch_invoke`` are the host API's ``invoke``: the caller's
  ``permissions.invoke`` and the target's ``can_be_invoked_by`` are checked there, and
  the nested call runs through ``runtime.call(tool, args, caller=..., parent=ctx)``:
  resolve, capability, validation, gate, ledger, cycle refusal and the parent's
  deadline all apply. Another skill's private callback is refused by the transport.
* ``store_kv`` / ``load_kv`` are the host API's ``kv.put`` / ``kv.get``.
* ``emit_event`` records an event on the call and calls every subscriber;
  ``subscribe`` registers one of this skill's methods for a topic (kept in the store).
* ``schedule`` calls one of this skill's methods later, as a new call.

A callback named by a command is this skill's own method, invoked with the
outcome as its payload; a callback's non-null payload becomes the call's output.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from skillyard.errors import ProtocolError, SkillyardError

if TYPE_CHECKING:
    from skillyard.card import Card
    from skillyard.transports.base import CallContext
    from skillyard.transports.wasm.transport import WasmTransport

MAX_CALLBACK_DEPTH = 8
MAX_COMMANDS_PER_CALL = 256
MAX_BATCH = 64
MAX_DELAY_MS = 24 * 3600 * 1000
_SUBS_SQL = [
    "CREATE TABLE wasm_subscriptions (topic TEXT NOT NULL, tool TEXT NOT NULL, "
    "PRIMARY KEY (topic, tool))",
]
_ids = itertools.count(1)


def _str(payload: Mapping[str, Any], key: str, kind: str, *, required: bool = True) -> str:
    value = payload.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise ProtocolError(f"command {kind}: payload.{key} must be a non-empty string")
    return value


def _args(value: Any, kind: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, bytes | bytearray):  # a nested msgpack document
        from skillyard.transports.wasm import abi

        try:
            value = abi.unpack(bytes(value), f"command {kind} payload") if value else {}
        except abi.AbiViolation as exc:
            raise ProtocolError(str(exc)) from exc
    if not isinstance(value, dict):
        raise ProtocolError(f"command {kind}: the call payload must be a map")
    return value


class CommandRunner:
    """Executes commands for the WASM transport (one per transport)."""

    def __init__(self, transport: WasmTransport) -> None:
        self.transport = transport
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handles: set[asyncio.TimerHandle] = set()
        # The latest outcomes of scheduled calls (for health and tests), bounded.
        self.scheduled_results: deque[dict[str, Any]] = deque(maxlen=100)
        rt = transport.runtime
        if rt is not None:
            rt.store.migrate("wasm_subscriptions", _SUBS_SQL)

    def pending(self) -> int:
        return len(self._handles) + len(self._tasks)

    async def aclose(self) -> None:
        for h in list(self._handles):
            h.cancel()
        self._handles.clear()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def run(
        self, card: Card, ctx: CallContext, commands: list[dict[str, Any]]
    ) -> tuple[Any, str]:
        """Run the commands in order; returns (replacement output or None, llm_context)."""
        budget = [MAX_COMMANDS_PER_CALL]
        return await self._run(card, ctx, commands, 0, budget)

    async def _run(
        self,
        card: Card,
        ctx: CallContext,
        commands: list[dict[str, Any]],
        depth: int,
        budget: list[int],
    ) -> tuple[Any, str]:
        output: Any = None
        llm = ""
        for cmd in commands:
            budget[0] -= 1
            if budget[0] < 0:
                raise ProtocolError(
                    f"{card.name}: more than {MAX_COMMANDS_PER_CALL} commands in one call"
                )
            kind, payload = cmd["type"], cmd["payload"]
            callback, outcome = await getattr(self, f"_{kind}")(card, ctx, payload)
            if callback:
                if depth >= MAX_CALLBACK_DEPTH:
                    raise ProtocolError(
                        f"{card.name}: callbacks nest deeper than {MAX_CALLBACK_DEPTH}"
                    )
                target = self._own_card(card, callback, kind)
                resp = await self.transport.invoke(target, callback, outcome, ctx)
                if resp.output is not None:
                    output = resp.output
                llm = resp.llm_context or llm
                if resp.commands:
                    out2, llm2 = await self._run(target, ctx, resp.commands, depth + 1, budget)
                    if out2 is not None:
                        output = out2
                    llm = llm2 or llm
        return output, llm

    def _own_card(self, card: Card, method: str, kind: str) -> Card:
        rt = self.transport.runtime
        pkg = rt.packages.get(card.id) if rt is not None else None
        for c in pkg.cards if pkg is not None else ():
            if c.method == method:
                return c
        raise ProtocolError(f"{card.name}: command {kind} names callback {method!r}, not a method")

    async def _invoke(self, ctx: CallContext, tool: str, args: dict[str, Any]) -> Any:
        """Call ``tool`` as the host API's ``invoke``: the caller's ``permissions.invoke``
        and the target's ``can_be_invoked_by`` are checked there, then the nested call
        runs through ``runtime.call(..., parent=ctx)``."""
        return await ctx.host.dispatch("invoke", {"tool": tool, "args": args})

    async def _deliver(self, ctx: CallContext, tool: str, args: dict[str, Any]) -> Any:
        """An event for a subscriber: it opted in, so no invoke grant; the pipeline still runs."""
        result = await ctx.runtime.call(tool, args, caller=ctx.caller, parent=ctx)
        return result.output

    async def _call_module(
        self, card: Card, ctx: CallContext, p: dict[str, Any]
    ) -> tuple[str, Any]:
        skill_id = _str(p, "skill_id", "call_module")
        method = _str(p, "method", "call_module")
        callback = _str(p, "callback", "call_module", required=False)
        args = _args(p.get("payload"), "call_module")
        outcome: dict[str, Any] = {
            "call_ctx": p.get("call_ctx", ""),
            "skill_id": skill_id,
            "method": method,
        }
        try:
            outcome["result"] = await self._invoke(ctx, f"{skill_id}-{method}", args)
        except SkillyardError as exc:
            if not callback:
                raise
            outcome.update(error=exc.message, code=exc.code)
        ctx.emit("command", type="call_module", target=f"{skill_id}-{method}")
        return callback, outcome

    async def _batch_invoke(
        self, card: Card, ctx: CallContext, p: dict[str, Any]
    ) -> tuple[str, Any]:
        items = p.get("items") or []
        if not isinstance(items, list) or len(items) > MAX_BATCH:
            raise ProtocolError(f"command batch_invoke: items must be an array of <= {MAX_BATCH}")
        conc = p.get("concurrency") or 4
        if isinstance(conc, bool) or not isinstance(conc, int) or conc < 1:
            raise ProtocolError("command batch_invoke: concurrency must be a positive integer")
        sem = asyncio.Semaphore(min(conc, 16))

        async def one(i: int, item: Any) -> dict[str, Any]:
            if not isinstance(item, dict):
                raise ProtocolError(f"command batch_invoke: items[{i}] must be a map")
            index = item.get("index", i)
            tool = (
                f"{_str(item, 'skill_id', 'batch_invoke')}-{_str(item, 'method', 'batch_invoke')}"
            )
            args = _args(item.get("payload"), "batch_invoke")
            async with sem:
                try:
                    return {"index": index, "result": await self._invoke(ctx, tool, args)}
                except SkillyardError as exc:
                    return {"index": index, "error": exc.message, "code": exc.code}

        results = await asyncio.gather(*(one(i, it) for i, it in enumerate(items)))
        ctx.emit("command", type="batch_invoke", items=len(results))
        callback = _str(p, "callback", "batch_invoke", required=False)
        return callback, {"batch_id": f"{ctx.call_id}-b{next(_ids)}", "items": list(results)}

    async def _emit_event(self, card: Card, ctx: CallContext, p: dict[str, Any]) -> tuple[str, Any]:
        topic = _str(p, "topic", "emit_event")
        payload = p.get("payload")
        if isinstance(payload, bytes | bytearray):
            payload = _args(payload, "emit_event")
        ctx.emit("event", topic=topic, payload=payload, source=card.id)
        rt = ctx.runtime
        rows = rt.store.query("SELECT tool FROM wasm_subscriptions WHERE topic=?", (topic,))
        for (tool,) in rows:
            if tool not in rt._cards:
                continue
            try:
                await self._deliver(ctx, tool, {"topic": topic, "payload": payload})
            except SkillyardError as exc:
                ctx.emit("event_delivery_failed", topic=topic, tool=tool, error=exc.to_dict())
        return "", None

    async def _subscribe(self, card: Card, ctx: CallContext, p: dict[str, Any]) -> tuple[str, Any]:
        topic = _str(p, "topic", "subscribe")
        method = _str(p, "method", "subscribe")
        target = self._own_card(card, method, "subscribe")
        ctx.runtime.store.execute(
            "INSERT OR IGNORE INTO wasm_subscriptions(topic, tool) VALUES(?, ?)",
            (topic, target.name),
        )
        ctx.emit("command", type="subscribe", topic=topic, tool=target.name)
        return "", None

    async def _store_kv(self, card: Card, ctx: CallContext, p: dict[str, Any]) -> tuple[str, Any]:
        key = _str(p, "key", "store_kv")
        await ctx.host.dispatch("kv.put", {"key": key, "value": p.get("value")})
        return "", None

    async def _load_kv(self, card: Card, ctx: CallContext, p: dict[str, Any]) -> tuple[str, Any]:
        key = _str(p, "key", "load_kv")
        callback = _str(p, "callback", "load_kv")
        value = await ctx.host.dispatch("kv.get", {"key": key})
        return callback, {"key": key, "value": value, "found": value is not None}

    async def _schedule(self, card: Card, ctx: CallContext, p: dict[str, Any]) -> tuple[str, Any]:
        method = _str(p, "method", "schedule")
        target = self._own_card(card, method, "schedule")
        delay = p.get("delay_ms", 0)
        if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= MAX_DELAY_MS:
            raise ProtocolError(f"command schedule: delay_ms must be 0..{MAX_DELAY_MS}")
        args = _args(p.get("payload"), "schedule")
        rt, caller = ctx.runtime, ctx.caller
        loop = asyncio.get_running_loop()

        async def fire() -> None:
            try:
                result = await rt.call(target.name, args, caller=caller)
                self.scheduled_results.append({"tool": target.name, "output": result.output})
            except SkillyardError as exc:
                self.scheduled_results.append({"tool": target.name, "error": exc.to_dict()})

        def start(handle_box: list[asyncio.TimerHandle]) -> None:
            self._handles.discard(handle_box[0])
            task = loop.create_task(fire())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        box: list[asyncio.TimerHandle] = []
        box.append(loop.call_later(delay / 1000, start, box))
        self._handles.add(box[0])
        ctx.emit("command", type="schedule", tool=target.name, delay_ms=delay)
        return "", None
