"""The WASM transport: runs skill modules under the skill ABI with hard limits.

Per call, by default: a fresh ``Store`` (memory cap, epoch deadline, optional
fuel, WASI with only the granted directories) instantiated from a cached
``InstancePre``. With ``[options] warm = true`` a skill keeps one instance
between calls (rebuilt after any fault). Guest state lives in the runtime (memory
plus the ``wasm_state`` table), never in the instance.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import wasmtime

from skillyard.errors import (
    LimitExceeded,
    ManifestError,
    OutputTooLarge,
    ProtocolError,
    SkillCrashed,
    SkillError,
    SkillTimeout,
    TransportError,
)
from skillyard.transports.base import CallContext, RawResult
from skillyard.transports.wasm import abi, engine, hostcalls, wasi
from skillyard.transports.wasm.commands import CommandRunner

if TYPE_CHECKING:
    from skillyard.card import Card
    from skillyard.runtime import Runtime

MIB = 1024 * 1024
DESCRIBE_MEMORY = 64 * MIB
DESCRIBE_TIMEOUT = 5.0
_STATE_SQL = [
    "CREATE TABLE wasm_state (skill_id TEXT PRIMARY KEY, state BLOB NOT NULL, updated REAL NOT NULL)",
]

_NO_STATE = hostcalls.CallState(None, None)
_linkers: dict[bool, tuple[wasmtime.Linker, wasmtime.FuncType]] = {}
_linker_lock = threading.Lock()


def _linker(fuel: bool) -> wasmtime.Linker:
    hit = _linkers.get(fuel)
    if hit is not None:
        return hit[0]
    with _linker_lock:
        if fuel not in _linkers:
            linker = wasmtime.Linker(engine.engine(fuel))
            linker.define_wasi()
            ty = wasmtime.FuncType(
                [wasmtime.ValType.i32(), wasmtime.ValType.i32()], [wasmtime.ValType.i64()]
            )
            for name in hostcalls.PROVIDED:
                linker.define_func(
                    engine.HOST_MODULE, name, ty, hostcalls.make_import(name), access_caller=True
                )
            _linkers[fuel] = (linker, ty)
    return _linkers[fuel][0]


class Skill:
    """One loaded module: compiled code, its ``InstancePre`` and how to run it."""

    def __init__(self, compiled: engine.Compiled, *, threaded: bool) -> None:
        self.compiled = compiled
        self.pre = _linker(compiled.fuel).instantiate_pre(compiled.module)
        self.has_init = any(e.name == "_initialize" for e in compiled.module.exports)
        # A dispatching host import blocks on the event loop, so it cannot run on it.
        self.threaded = threaded or bool(compiled.host_imports & hostcalls.WAITING_IMPORTS)
        # No imports at all: nothing can reach the call state, so the hot path skips it.
        self.plain = not compiled.host_imports and not compiled.uses_wasi
        self.warm: engine.Bound | None = None
        self.warm_memory: int | None = None  # the memory cap the warm instance was built with
        self.warm_lock = threading.Lock()

    def drop_warm(self) -> None:
        """Forget the warm instance (its output files go with it)."""
        warm, self.warm = self.warm, None
        if warm is not None and warm.out is not None:
            warm.out.close()

    def instantiate(
        self,
        *,
        memory_bytes: int | None,
        fuel: int | None,
        timeout: float,
        preopens: list[tuple[str, bool]],
        for_describe: bool = False,
    ) -> engine.Bound:
        """A new Store + instance with the limits applied (raises GuestFault on traps)."""
        store = wasmtime.Store(engine.engine(self.compiled.fuel))
        if memory_bytes:
            store.set_limits(memory_size=memory_bytes)
        if self.compiled.fuel:
            store.set_fuel(fuel or 0)
        box = None
        if self.compiled.uses_wasi:
            box = wasi.OutputBox()
            store.set_wasi(wasi.wasi_config(preopens, box))
        store.set_epoch_deadline(engine.deadline_ticks(timeout))
        try:
            instance = self.pre.instantiate(store)
        except wasmtime.Trap as exc:
            raise engine.GuestFault(
                _trap_kind(exc), engine.trap_message(exc), exc, exc.trap_code
            ) from exc
        except wasmtime.WasmtimeError as exc:
            raise engine.GuestFault("error", engine.trap_message(exc), exc) from exc
        bound = engine.Bound(store, instance, has_init=self.has_init, for_describe=for_describe)
        bound.out = box
        bound.init()
        return bound


def _trap_kind(exc: wasmtime.Trap) -> str:
    code = exc.trap_code
    if code == wasmtime.TrapCode.INTERRUPT:
        return "timeout"
    if code == wasmtime.TrapCode.OUT_OF_FUEL:
        return "fuel"
    if code == wasmtime.TrapCode.STACK_OVERFLOW:
        return "stack"
    return "trap"


def load_skill(path: Path, *, fuel: bool = False, threaded: bool = False) -> Skill:
    """Compile (cached) and check the module at ``path``; ValueError says what is wrong."""
    try:
        wasm = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
    compiled = engine.compile_module(wasm, fuel=fuel, provided=hostcalls.PROVIDED)
    return Skill(compiled, threaded=threaded)


def describe(path: str | Path) -> dict[str, Any]:
    """Compile the module at ``path`` and return its checked ``skill_describe()`` descriptor.

    Used by the manifest loader at load time; raises :class:`ManifestError`.
    """
    p = Path(path)
    try:
        skill = load_skill(p)
        bound = skill.instantiate(
            memory_bytes=DESCRIBE_MEMORY,
            fuel=None,
            timeout=DESCRIBE_TIMEOUT,
            preopens=[],
            for_describe=True,
        )
        state = hostcalls.CallState(None, None)
        prev = hostcalls.enter(state)
        engine.TICKER.enter()
        try:
            bound.set_deadline(DESCRIBE_TIMEOUT)
            packed = bound.describe()
            ptr, n = packed >> 32, packed & 0xFFFFFFFF
            if n > abi.MAX_DESCRIPTOR_BYTES:
                raise ValueError(f"skill_describe() returned {n} bytes; the limit is 1 MiB")
            data = bound.read(ptr, n)
        finally:
            engine.TICKER.leave()
            hostcalls.leave(prev)
            if bound.out is not None:
                bound.out.close()
        return abi.parse_descriptor(data)
    except engine.GuestFault as exc:
        raise ManifestError(
            f"skill_describe() failed: {exc.kind}: {exc.message}", file=str(p)
        ) from exc
    except (ValueError, abi.AbiViolation) as exc:
        raise ManifestError(str(exc), file=str(p)) from exc


def _reentered(ctx: CallContext, skill_id: str) -> bool:
    """True when a call of the same skill is already running further up this call chain."""
    node = ctx.parent
    while node is not None:
        if node.card.id == skill_id:
            return True
        node = node.parent
    return False


def _textual(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list):
        return [_textual(v) for v in value]
    if isinstance(value, dict):
        return {_textual(k): _textual(v) for k, v in value.items()}
    return value


class WasmTransport:
    """Runs ``runtime = "wasm"`` skills with wasmtime."""

    kind = "wasm"

    def __init__(self, runtime: Runtime | None = None) -> None:
        self.runtime = runtime
        self._skills: dict[tuple[str, bool, bool], Skill] = {}
        self._by_card: dict[Card, Skill] = {}  # cards hash by identity
        self._locks: dict[str, asyncio.Lock] = {}
        self._state: dict[str, bytes] = {}
        self._commands = CommandRunner(self)
        self.calls = 0
        if runtime is not None:
            runtime.store.migrate("wasm_state", _STATE_SQL)

    # -- loading ----------------------------------------------------------------------------

    def skill_for(self, card: Card) -> Skill:
        hit = self._by_card.get(card)
        if hit is not None:
            return hit
        skill = self._load(card)
        self._by_card[card] = skill
        return skill

    def _load(self, card: Card) -> Skill:
        fuel = card.limits.instructions is not None
        threaded = bool(card.options.get("thread"))
        key = (card.source or "", fuel, threaded)
        hit = self._skills.get(key)
        if hit is not None:
            return hit
        if not card.source or not card.operation:
            raise TransportError(f"{card.name}: a wasm card needs a package directory and an entry")
        try:
            skill = load_skill(Path(card.source) / card.operation, fuel=fuel, threaded=threaded)
        except ValueError as exc:
            raise TransportError(f"{card.name}: {exc}") from exc
        self._skills[key] = skill
        return skill

    # -- state -------------------------------------------------------------------------------

    def state_of(self, skill_id: str) -> bytes:
        hit = self._state.get(skill_id)
        if hit is not None:
            return hit
        state = b""
        if self.runtime is not None:
            rows = self.runtime.store.query(
                "SELECT state FROM wasm_state WHERE skill_id=?", (skill_id,)
            )
            if rows:
                state = bytes(rows[0][0])
        self._state[skill_id] = state
        return state

    def set_state(self, skill_id: str, state: bytes) -> None:
        if self._state.get(skill_id) == state:
            return
        self._state[skill_id] = state
        if self.runtime is not None:
            self.runtime.store.execute(
                "INSERT INTO wasm_state(skill_id, state, updated) VALUES(?, ?, ?) "
                "ON CONFLICT(skill_id) DO UPDATE SET state=excluded.state, updated=excluded.updated",
                (skill_id, state, time.time()),
            )

    # -- calling -----------------------------------------------------------------------------

    async def call(self, card: Card, args: dict[str, Any], ctx: CallContext) -> RawResult:
        if card.options.get("private_callback") and (
            ctx.parent is None or ctx.parent.card.id != card.id
        ):
            from skillyard.errors import PermissionDenied

            raise PermissionDenied(
                f"{card.name} is a private callback of {card.id!r}; only that skill may call it"
            )
        resp = await self.invoke(card, card.method, args, ctx)
        output, llm_context = resp.output, resp.llm_context
        if resp.commands:
            out2, llm2 = await self._commands.run(card, ctx, resp.commands)
            if out2 is not None:
                output = out2
            llm_context = llm2 or llm_context
        return RawResult(output=output, llm_context=llm_context or None)

    async def invoke(self, card: Card, method: str, payload: Any, ctx: CallContext) -> abi.Response:
        """One ``skill_handle`` round trip for ``method`` (commands are not run here)."""
        skill = self.skill_for(card)
        parent = ctx.parent
        remaining = ctx.remaining
        request = abi.encode_request(
            request_id=ctx.call_id,
            trace_id=(parent.call_id if parent is not None else ctx.call_id),
            session_id=ctx.caller.session_id or "",
            method=method,
            skill_id=card.id,
            caller_id=parent.card.id if parent is not None else "",
            state=self.state_of(card.id),
            payload=payload,
            deadline_ns=time.time_ns() + int(remaining * 1e9),
        )
        self.calls += 1
        if skill.plain:  # no imports: nothing to bridge, nothing to log
            data = self._run(skill, card, request, ctx, _NO_STATE)
        elif skill.threaded:
            state = hostcalls.CallState(ctx, asyncio.get_running_loop())
            _ = ctx.host  # built here, so the host API knows the loop to run waiting methods on
            lock = None if _reentered(ctx, card.id) else self._lock_for(card.id)
            try:
                if lock is None:
                    data = await asyncio.to_thread(self._run, skill, card, request, ctx, state)
                else:
                    async with lock:  # one state sequence per skill: no lost updates
                        request = self._restate(request, card.id)
                        data = await asyncio.to_thread(self._run, skill, card, request, ctx, state)
            finally:
                state.flush()
        else:
            state = hostcalls.CallState(ctx, None)
            try:
                data = self._run(skill, card, request, ctx, state)
            finally:
                state.flush()
        try:
            resp = abi.decode_response(data)
        except abi.AbiViolation as exc:
            raise ProtocolError(f"{card.name}: {exc}") from exc
        if resp.error:
            raise SkillError(f"{card.name}: the skill reported an error: {resp.error}")
        if resp.output is not None:
            try:
                size = len(orjson.dumps(resp.output))
            except TypeError:
                try:  # msgpack bin that is UTF-8 text is read as a string
                    resp.output = _textual(resp.output)
                    size = len(orjson.dumps(resp.output))
                except (TypeError, UnicodeDecodeError) as exc:
                    raise ProtocolError(
                        f"{card.name}: the payload is not JSON-shaped ({exc}); return strings, "
                        "numbers, booleans, arrays and maps with string keys"
                    ) from exc
            if size > card.limits.max_output_bytes:
                raise OutputTooLarge(
                    f"{card.name}: output is {size} bytes; the limit is {card.limits.max_output_bytes}"
                )
        if resp.state is not None:
            self.set_state(card.id, resp.state)
        return resp

    def _lock_for(self, skill_id: str) -> asyncio.Lock:
        lock = self._locks.get(skill_id)
        if lock is None:
            lock = self._locks[skill_id] = asyncio.Lock()
        return lock

    def _restate(self, request: bytes, skill_id: str) -> bytes:
        """Re-encode ``request`` if the state changed while it waited for the skill's lock."""
        current = self.state_of(skill_id)
        env = abi.unpack(request, "request")
        if env["state"] == current:
            return request
        env["state"] = current
        return abi.pack(env)

    def _run(
        self,
        skill: Skill,
        card: Card,
        request: bytes,
        ctx: CallContext,
        state: hostcalls.CallState,
    ) -> bytes:
        """Run one request through the guest (on this thread); returns the response bytes."""
        limits = card.limits
        memory = limits.memory_mb * MIB if limits.memory_mb else None
        plain = skill.plain
        prev = None if plain else hostcalls.enter(state)
        engine.TICKER.enter()
        bound: engine.Bound | None = None
        warm = bool(card.options.get("warm"))
        locked = warm and skill.warm_lock.acquire(blocking=False)
        try:
            if locked and skill.warm is not None and skill.warm_memory == memory:
                bound = skill.warm
            else:
                if locked and skill.warm is not None:
                    skill.drop_warm()
                bound = skill.instantiate(
                    memory_bytes=memory,
                    fuel=limits.instructions,
                    timeout=ctx.remaining,
                    preopens=wasi.preopens_for(ctx) if skill.compiled.uses_wasi else [],
                )
            if bound.out is not None:
                engine.TICKER.watched.add(bound.out)
            if skill.compiled.fuel:
                bound.store.set_fuel(limits.instructions or 0)
            bound.set_deadline(ctx.remaining)
            n = len(request)
            # A warm instance keeps its request buffer; a fresh store is dropped whole,
            # so freeing inside it would only cost calls.
            ptr = bound.request_buffer(n) if locked else bound.alloc(n)
            bound.write(ptr, request)
            packed = bound.handle(ptr, n)
            optr, olen = packed >> 32, packed & 0xFFFFFFFF
            cap = limits.max_output_bytes + 64 * 1024 + n
            data = bound.read(optr, olen) if olen <= cap else b""
            if locked:
                if olen:
                    bound.free(optr)
                skill.warm, skill.warm_memory = bound, memory
            if olen > cap:
                raise OutputTooLarge(
                    f"{card.name}: the response is {olen} bytes; the limit is {limits.max_output_bytes}"
                )
            return data
        except engine.GuestFault as fault:
            if locked and skill.warm is bound:
                skill.warm = None  # a faulted instance is never reused
            if state.fatal is not None and fault.kind != "host":
                # wasmtime-py keeps the last host exception in a process-wide slot; the
                # call's own record is the one to trust when calls run on several threads.
                fault = engine.GuestFault("host", str(state.fatal), state.fatal)
            raise self._translate(fault, card, bound, memory) from (fault.cause or fault)
        finally:
            box = bound.out if bound is not None else None
            if box is not None:
                engine.TICKER.watched.discard(box)
                box.collect(state)
                if skill.warm is not bound:
                    box.close()
            if locked:
                skill.warm_lock.release()
            engine.TICKER.leave()
            if not plain:
                hostcalls.leave(prev)

    def _translate(
        self, fault: engine.GuestFault, card: Card, bound: engine.Bound | None, memory: int | None
    ) -> TransportError:
        name, limits = card.name, card.limits
        if fault.kind == "timeout":
            return SkillTimeout(
                f"{name}: stopped at the deadline ({limits.timeout_sec:g}s or the caller's); "
                "the guest was interrupted"
            )
        if fault.kind == "fuel":
            return LimitExceeded(
                f"{name}: instruction limit of {limits.instructions} reached; raise "
                "limits.instructions or make the method do less"
            )
        if fault.kind == "stack":
            return LimitExceeded(
                f"{name}: the wasm stack ({engine.STACK_BYTES // 1024} KiB) is exhausted; "
                "deep or unbounded recursion?"
            )
        if fault.kind == "abi":
            return ProtocolError(f"{name}: {fault.message}")
        if fault.kind == "host":
            cause = fault.cause
            if isinstance(cause, abi.AbiViolation):
                return ProtocolError(f"{name}: {cause}")
            if isinstance(cause, TimeoutError):
                return SkillTimeout(f"{name}: {cause}")
            return SkillCrashed(f"{name}: a host import failed: {fault.message}")
        # wasmtime reports no grow failure; an allocator that cannot grow aborts with
        # `unreachable`, so that trap with memory near the cap is the memory limit.
        near_cap = (
            memory and bound is not None and bound.memory_size() > memory - max(MIB, memory // 8)
        )
        if near_cap and fault.code == wasmtime.TrapCode.UNREACHABLE:
            return LimitExceeded(
                f"{name}: memory limit of {limits.memory_mb} MB reached (the guest trapped: "
                f"{fault.message}); raise limits.memory_mb or use less memory"
            )
        if memory and bound is None and "memory" in fault.message:
            return LimitExceeded(f"{name}: memory limit of {limits.memory_mb} MB: {fault.message}")
        return SkillCrashed(f"{name}: the guest trapped: {fault.message}")

    async def health(self) -> dict[str, Any]:
        return {
            "ok": True,
            "modules": len(self._skills),
            "calls": self.calls,
            "scheduled": self._commands.pending(),
        }

    async def aclose(self) -> None:
        await self._commands.aclose()
        for skill in self._skills.values():
            skill.drop_warm()
        self._skills.clear()
        self._by_card.clear()
