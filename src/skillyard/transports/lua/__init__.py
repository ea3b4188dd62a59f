"""Lua skills on ``lupa.lua54``: a real sandbox, per-call limits, fresh or warm isolates.

Operations name a Lua file in the package, optionally with a function key:
``runtime/hello.lua`` (the file returns ``function(args)``, the LuaSkills form)
or ``skill.lua:greet`` (the file returns a table of functions). Each file is
compiled once to bytecode and loaded into an isolate from that bytecode; every
call re-runs the chunk in a fresh ``_ENV``, so nothing a call leaves behind is
seen by the next one, even in a warm isolate. See docs/lua.md.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from skillyard.errors import (
    HostError,
    LimitExceeded,
    NotSupported,
    OutputTooLarge,
    PermissionDenied,
    SkillError,
    SkillTimeout,
    SkillyardError,
    TransportError,
)
from skillyard.transports.base import CallContext, RawResult
from skillyard.transports.lua import isolate as lua_isolate
from skillyard.transports.lua.compiler import Compiler
from skillyard.transports.lua.isolate import MB, NULL_KEY, ConversionError, Isolate
from skillyard.transports.lua.vulcan import (
    MAX_KEPT_ERRORS,
    MODULE_RE,
    LocalApi,
)

if TYPE_CHECKING:
    from skillyard.card import Card
    from skillyard.runtime import Runtime

DEFAULT_MEMORY_MB = 64
DEFAULT_POOL_SIZE = 4
HOOK_STEP = 10_000
OVERFLOW_MODES = ("error", "truncate")
# Host error codes (docs/host-api.md) rebuilt as HostError when the original was not kept.
HOST_CODES = frozenset(
    [
        "invalid_argument",
        "unknown_method",
        "not_found",
        "exists",
        "not_a_directory",
        "is_a_directory",
        "not_empty",
        "too_large",
        "decode_error",
        "io_error",
        "timeout",
        "dns_error",
        "network_error",
        "too_many_redirects",
        "exec_failed",
        "config_missing",
        "tool_error",
        "model_unavailable",
        "provider_error",
        "budget_exceeded",
    ]
)
_TRUSTED_ROOTS = ("root", "memory")


def limit_error(
    reason: str, *, tool: str, budget: float, timeout: float, memory: int
) -> SkillyardError:
    """The error for a tripped limit (``instructions``, ``timeout`` or ``memory``)."""
    if reason == "timeout":
        return SkillTimeout(
            f"{tool}: timed out after {timeout:g}s (limits.timeout_sec); the Lua VM was stopped"
        )
    if reason == "instructions":
        return LimitExceeded(
            f"{tool}: stopped after {budget:.0f} Lua instructions (limits.instructions); "
            "raise the limit or do less work per call",
            details={"limit": "instructions"},
        )
    return LimitExceeded(
        f"{tool}: Lua memory limit of {memory // MB} MiB exceeded (limits.memory_mb)",
        details={"limit": "memory"},
    )


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the transport works out once per card."""

    path: Path
    rel: str
    fn_key: str | None
    memory: int
    pool: list[Isolate] | None
    modules: Any
    budget: float
    step: int
    bytecode: bytes | None
    thread: bool
    token: int  # names this entry and its limits in an isolate's runner cache
    chunkname: str


def _timeout(card: Card, ctx: CallContext | None) -> float:
    return card.limits.timeout_sec if ctx is None else ctx.deadline - ctx.started


class LuaTransport:
    """Runs Lua skills in sandboxed ``lupa.lua54`` isolates."""

    kind = "lua"

    def __init__(self, runtime: Runtime | None = None) -> None:
        self.runtime = runtime
        cfg = runtime.config.get("lua", {}) if runtime is not None else {}
        self.pool_size = int(cfg.get("pool_size", DEFAULT_POOL_SIZE))
        self.memory_mb = int(cfg.get("memory_mb", DEFAULT_MEMORY_MB))
        self.instructions: int | None = cfg.get("instructions")
        self.isolation: str | None = cfg.get("isolation")
        self.compiler = Compiler()
        self._pools: dict[tuple[str, str, int], list[Isolate]] = {}
        self._entries: dict[tuple[str, str, str], tuple[Path, str, str | None]] = {}
        self._plans: dict[int, tuple[Card, _Plan]] = {}
        self._tokens: dict[tuple[str, str | None, float, int], int] = {}
        import lupa.lua54 as lupa

        self._lua_memory_error = lupa.LuaMemoryError
        self._lua_error = lupa.LuaError
        self.stats = {"isolates": 0, "discarded": 0, "calls": 0}

    # -- isolates ----------------------------------------------------------------------------

    def new_isolate(self, memory_limit: int) -> Isolate:
        """A fresh sandboxed VM with ``memory_limit`` bytes for the skill."""
        api = LocalApi()
        iso = Isolate(memory_limit=memory_limit, fetch=api)
        api.iso = iso
        iso.current = api
        self.stats["isolates"] += 1
        return iso

    def isolation_for(self, card: Card) -> str:
        """``fresh`` or ``warm``: the card's option, else config, else by root."""
        mode = card.options.get("isolation") or self.isolation
        if mode in ("fresh", "warm"):
            return str(mode)
        return "warm" if card.root in _TRUSTED_ROOTS else "fresh"

    def _entry(self, card: Card) -> tuple[Path, str, str | None]:
        key = (card.name, card.operation, card.digest)
        hit = self._entries.get(key)
        if hit is not None:
            return hit
        if not card.source:
            raise TransportError(f"{card.name}: a Lua card needs a package directory (source)")
        rel, _, fn = card.operation.partition(":")
        base = Path(card.source).resolve()
        path = (base / rel).resolve()
        if base not in path.parents or path.suffix != ".lua":
            raise TransportError(f"{card.name}: entry {rel!r} is not a .lua file in the package")
        out = (path, rel, fn or None)
        self._entries[key] = out
        return out

    def _modules(self, card: Card) -> Any:
        def load(name: str) -> tuple[bytes, str]:
            base = Path(card.source or ".").resolve()
            if not MODULE_RE.match(name):
                raise LookupError(f"{name!r} is not a module name")
            rel = name.replace(".", "/") + ".lua"
            for folder in ("runtime", "lua", ""):
                candidate = (base / folder / rel).resolve()
                if base in candidate.parents and candidate.is_file():
                    chunkname = candidate.relative_to(base).as_posix()
                    return self.compiler.compile(candidate, chunkname, card.digest), chunkname
            raise LookupError(
                f"module {name!r} not found in the package (looked for runtime/{rel}, lua/{rel}, "
                f"{rel}); C modules and system libraries are not available in the sandbox"
            )

        return load

    # -- calling ------------------------------------------------------------------------------

    def _plan(self, card: Card) -> _Plan:
        # keyed by identity: cards compare by value, which costs a field-by-field __eq__
        hit = self._plans.get(id(card))
        if hit is not None and hit[0] is card:
            return hit[1]
        path, rel, fn_key = self._entry(card)
        memory = (card.limits.memory_mb or self.memory_mb) * MB
        pool = None
        if self.isolation_for(card) == "warm":
            pool = self._pools.setdefault((card.id, card.digest, memory), [])
        budget = card.limits.instructions or self.instructions or math.inf
        step = int(min(HOOK_STEP, budget))
        bytecode = self.compiler.compile(path, rel, card.digest) if card.digest else None
        plan = _Plan(
            path,
            rel,
            fn_key,
            memory,
            pool,
            self._modules(card),
            budget,
            step,
            bytecode,
            bool(card.options.get("thread")),
            self._tokens.setdefault((rel, fn_key, budget, step), len(self._tokens)),
            "@" + rel,
        )
        self._plans[id(card)] = (card, plan)
        return plan

    async def call(self, card: Card, args: dict[str, Any], ctx: CallContext) -> RawResult:
        hit = self._plans.get(id(card))
        plan = hit[1] if hit is not None and hit[0] is card else self._plan(card)
        pool = plan.pool
        iso = pool.pop() if pool else self.new_isolate(plan.memory)
        api: LocalApi = iso.current
        api.begin(card, ctx, plan.modules)
        reusable = False
        try:
            if plan.bytecode is not None and not plan.thread:
                res = self._enter(iso, card, ctx, plan, args, ctx.deadline)
                if type(res) is not tuple:  # done, with one table
                    raw = self._table_result(iso, card, res)
                    reusable = True
                    return raw
                if res[0] != "done":
                    res = await self._settle(iso, card, ctx, res, plan.budget, ctx.deadline)
            else:
                chunk = iso.chunks.get(plan.rel)
                if chunk is None or plan.bytecode is None:
                    bytecode = plan.bytecode or self.compiler.compile(plan.path, plan.rel)
                    chunk = iso.chunk((plan.rel, bytecode), bytecode, plan.rel)
                    if plan.bytecode is not None:
                        iso.chunks[plan.rel] = chunk
                if plan.thread:
                    loop = asyncio.get_running_loop()
                    res = await asyncio.to_thread(
                        self._threaded, loop, iso, card, ctx, chunk, plan, args
                    )
                else:
                    res = self._start(
                        iso,
                        card,
                        ctx,
                        chunk,
                        plan.fn_key,
                        args,
                        plan.budget,
                        plan.step,
                        ctx.deadline,
                    )
                    if res[0] != "done":
                        res = await self._settle(iso, card, ctx, res, plan.budget, ctx.deadline)
            raw = self._result(iso, card, res[2:])
            reusable = True
            return raw
        except SkillError:
            reusable = True
            raise
        finally:
            api.end()
            # a worker thread may still be running in a VM it gave up on: let the gc free it
            self.release(iso, pool, reusable, free=not plan.thread)

    def _enter(
        self,
        iso: Isolate,
        card: Card,
        ctx: CallContext | None,
        plan: _Plan,
        args: dict[str, Any],
        deadline: float,
        direct: bool = False,
    ) -> Any:
        """Run the entry with ``args`` in one crossing: a fresh isolate loads and runs it
        (``H.once``), a warm one calls its bound runner, by shape when it can. Returns the
        runner's answer: the result table itself, or the ``(status, ...)`` tuple. A
        ``direct`` run has no call context (see :mod:`~skillyard.transports.lua.direct`)."""
        assert plan.bytecode is not None
        try:
            if plan.pool is None:
                return iso.once(
                    plan.bytecode,
                    plan.chunkname,
                    plan.fn_key,
                    iso.to_lua(args),
                    plan.budget,
                    deadline,
                    plan.step,
                    direct,
                )
            token = ~plan.token if direct else plan.token  # each has its own runner
            shapes = iso.runners.get(token) or iso.bound(
                token, plan.bytecode, plan.rel, plan.fn_key, plan.budget, plan.step, direct
            )
            return iso.call_bound(shapes, deadline, args)
        except (self._lua_error, UnicodeDecodeError, ConversionError) as exc:
            raise self._translate(iso, card, ctx, plan.budget, exc) from exc

    def release(
        self, iso: Isolate, pool: list[Isolate] | None, reusable: bool, free: bool = True
    ) -> None:
        """After a call: back to its warm ``pool`` if it may serve another, else dropped,
        and with ``free`` its VM freed now rather than by a gc pass (no cycle is left)."""
        stats = self.stats
        stats["calls"] += 1
        if pool is not None and reusable and not iso.dead and len(pool) < self.pool_size:
            pool.append(iso)
        else:
            stats["discarded"] += 1
            if free:
                iso.current.iso = None

    async def drive(
        self,
        iso: Isolate,
        card: Card,
        ctx: CallContext | None,
        chunk: Any,
        fn_key: str | None,
        args: Any,
        *,
        env: Any = None,
        code: str | None = None,
        deadline: float | None = None,
    ) -> tuple[Any, ...]:
        """Run one call to completion, answering host requests; returns the Lua results."""
        budget = card.limits.instructions or self.instructions or math.inf
        step = int(min(HOOK_STEP, budget))
        if deadline is None:
            assert ctx is not None
            deadline = ctx.deadline
        res = self._start(iso, card, ctx, chunk, fn_key, args, budget, step, deadline, env, code)
        if res[0] != "done":
            res = await self._settle(iso, card, ctx, res, budget, deadline)
        return res[2:]

    def _start(
        self,
        iso: Isolate,
        card: Card,
        ctx: CallContext | None,
        chunk: Any,
        fn_key: str | None,
        args: Any,
        budget: float,
        step: int,
        deadline: float,
        env: Any = None,
        code: str | None = None,
    ) -> tuple[Any, ...]:
        try:
            lua_args = iso.to_lua(args)
            if env is not None:
                assert code is not None
                return iso.eval(env, code, lua_args, budget, deadline, step)
            return iso.start(chunk, fn_key, lua_args, budget, deadline, step)
        except (self._lua_error, UnicodeDecodeError, ConversionError) as exc:
            raise self._translate(iso, card, ctx, budget, exc) from exc

    async def _settle(
        self,
        iso: Isolate,
        card: Card,
        ctx: CallContext | None,
        res: tuple[Any, ...],
        budget: float,
        deadline: float,
    ) -> tuple[Any, ...]:
        """Answer host requests until the call is done; raise what a failure calls for."""
        try:
            while res[0] == "host":
                res = await self._host(iso, card, ctx, res[1], res[2], deadline)
        except (self._lua_error, UnicodeDecodeError, ConversionError) as exc:
            raise self._translate(iso, card, ctx, budget, exc) from exc
        return self._check(iso, card, ctx, res, budget)

    def _check(
        self, iso: Isolate, card: Card, ctx: CallContext | None, res: tuple[Any, ...], budget: float
    ) -> tuple[Any, ...]:
        """``res`` if the call is done; otherwise raise the error its status calls for."""
        status = res[0]
        if status == "done":
            return res
        if status == "limit":
            iso.dead = True
            raise limit_error(
                str(res[1]),
                tool=card.name,
                budget=budget,
                timeout=_timeout(card, ctx),
                memory=iso.memory_limit,
            )
        raise self._error(iso, card, res[1])

    def _threaded(
        self,
        loop: asyncio.AbstractEventLoop,
        iso: Isolate,
        card: Card,
        ctx: CallContext,
        chunk: Any,
        plan: _Plan,
        args: Any,
    ) -> tuple[Any, ...]:
        """A whole call in a worker thread (``options.thread``); host calls hop to the loop."""
        res = self._start(
            iso, card, ctx, chunk, plan.fn_key, args, plan.budget, plan.step, ctx.deadline
        )
        try:
            while res[0] == "host":
                answer = asyncio.run_coroutine_threadsafe(
                    self._answer(iso, card, ctx, res[1], res[2], ctx.deadline), loop
                ).result()
                res = iso.resume(*answer)
        except (self._lua_error, UnicodeDecodeError, ConversionError) as exc:
            raise self._translate(iso, card, ctx, plan.budget, exc) from exc
        return self._check(iso, card, ctx, res, plan.budget)

    def _translate(
        self, iso: Isolate, card: Card, ctx: CallContext | None, budget: float, exc: Exception
    ) -> SkillyardError:
        if isinstance(exc, self._lua_memory_error):
            iso.dead = True
            return limit_error(
                "memory",
                tool=card.name,
                budget=budget,
                timeout=_timeout(card, ctx),
                memory=iso.memory_limit,
            )
        if isinstance(exc, UnicodeDecodeError):
            return SkillError(
                f"{card.name}: the skill produced a string that is not valid UTF-8; "
                "JSON carries text only (encode bytes as base64)"
            )
        if isinstance(exc, ConversionError):
            return SkillError(f"{card.name}: {exc}")
        iso.dead = True
        return TransportError(f"{card.name}: the Lua VM failed: {exc}")

    async def _host(
        self,
        iso: Isolate,
        card: Card,
        ctx: CallContext | None,
        method: Any,
        params: Any,
        deadline: float,
    ) -> tuple[Any, ...]:
        return iso.resume(*await self._answer(iso, card, ctx, method, params, deadline))

    async def _answer(
        self,
        iso: Isolate,
        card: Card,
        ctx: CallContext | None,
        method: Any,
        params: Any,
        deadline: float,
    ) -> tuple[Any, ...]:
        """Await one host request; returns the arguments for ``Isolate.resume``."""
        import time

        api: LocalApi = iso.current
        try:
            py_params = iso.to_py(params) if params is not None else {}
            if ctx is None:
                raise PermissionDenied(
                    f"host call {method!r} denied: runtime sessions have no skill identity"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                value = await ctx.host.dispatch(str(method), py_params)
        except TimeoutError as exc:
            iso.dead = True
            raise SkillTimeout(
                f"{card.name}: timed out after {card.limits.timeout_sec:g}s waiting for host "
                f"call {method!r}"
            ) from exc
        except (SkillyardError, ConversionError, UnicodeDecodeError) as exc:
            errors = api.state.errors
            if len(errors) < MAX_KEPT_ERRORS:  # a skill catching errors in a loop keeps none
                errors.append(exc)
            code = exc.code if isinstance(exc, SkillyardError) else "invalid_argument"
            message = (
                exc.message
                if isinstance(exc, SkillyardError)
                else f"vulcan: host call {method!r}: parameters are not JSON text ({exc})"
            )
            error_id = len(errors) if errors and errors[-1] is exc else None
            return (False, None, code, message, error_id)
        return (True, iso.to_lua(value))

    def _error(self, iso: Isolate, card: Card, err: Any) -> BaseException:
        code, message, error_id = iso.describe(err)
        api: LocalApi = iso.current
        if code is not None and error_id is not None:
            errors = api.state.errors
            if isinstance(error_id, int) and 1 <= error_id <= len(errors):
                return errors[error_id - 1]
        if code == "not_supported":
            return NotSupported(f"{card.name}: {message}", code="not_supported")
        if code == "permission_denied":
            return PermissionDenied(message)
        if code in HOST_CODES:
            return HostError(message, code=code)
        if code == "entry":
            return SkillError(f"{card.name}: {card.operation}: {message}")
        return SkillError(f"{card.name}: {message}")

    def _table_result(self, iso: Isolate, card: Card, value: Any) -> RawResult:
        """The result of a call that returned one value other than a string."""
        return RawResult(output=self.table_output(iso, card, value))

    def table_output(self, iso: Isolate, card: Card, value: Any) -> Any:
        """The JSON output of one returned value other than a string, size-checked.

        A flat table (string keys; strings, integers and booleans) is the common result:
        ``orjson`` serializes it as is, which both checks it and measures it, and only
        anything it refuses (nesting, arrays, other keys) or writes as ``null`` (a float
        that is not finite) goes through :meth:`Isolate.to_py`. Measured need: checking
        the flat table in Python cost a third of a warm call's conversions (docs/lua.md).
        """
        data = None
        try:
            if type(value) is lua_isolate._LUA_TABLE:
                table: Any = value
                output = dict(table.items())
                try:
                    data = orjson.dumps(output)
                except TypeError:
                    pass
                else:
                    if NULL_KEY in output:
                        return None  # the JSON null marker itself
                    if data.find(b"null") >= 0:
                        data = None
            if data is None:
                output = iso.to_py(value)
                data = orjson.dumps(output)
        except (ConversionError, UnicodeDecodeError) as exc:
            raise self._translate(iso, card, None, 0, exc) from exc
        limit = card.limits.max_output_bytes
        if len(data) > limit:
            raise OutputTooLarge(f"{card.name}: output is {len(data)} bytes; the limit is {limit}")
        return output

    def _result(self, iso: Isolate, card: Card, values: tuple[Any, ...]) -> RawResult:
        if len(values) == 1 and type(values[0]) is not str:
            return self._table_result(iso, card, values[0])
        content = values[0] if values else None
        overflow = values[1] if len(values) > 1 else None
        hint = values[2] if len(values) > 2 else None
        host_result = values[3] if len(values) > 3 else None
        if overflow is not None and overflow not in OVERFLOW_MODES:
            raise SkillError(
                f"{card.name}: overflow_mode {overflow!r} is not one of {', '.join(OVERFLOW_MODES)}"
            )
        limit = card.limits.max_output_bytes
        try:
            text = content if isinstance(content, str) else None
            output = iso.to_py(host_result) if host_result is not None else iso.to_py(content)
        except (ConversionError, UnicodeDecodeError) as exc:
            raise self._translate(iso, card, None, 0, exc) from exc
        if text is not None and len(text.encode()) > limit:
            if overflow != "truncate":
                raise OutputTooLarge(
                    f"{card.name}: content is {len(text.encode())} bytes; the limit is {limit} "
                    "(return overflow_mode 'truncate' to cut it instead)"
                )
            text = text.encode()[:limit].decode("utf-8", "ignore")
            if host_result is None:
                output = text
        size = len(output.encode()) if isinstance(output, str) else len(orjson.dumps(output))
        if size > limit:
            raise OutputTooLarge(f"{card.name}: output is {size} bytes; the limit is {limit}")
        events: tuple[dict[str, Any], ...] = ()
        if isinstance(hint, str):
            events = ({"kind": "template_hint", "hint": hint},)
        return RawResult(output=output, content=text, events=events)

    def direct(self, card: Card) -> Any:
        """A synchronous run of ``card`` for the runtime's flattened path, or None (see
        :mod:`skillyard.transports.lua.direct`)."""
        from skillyard.transports.lua.direct import direct_run

        return direct_run(self, card)

    async def health(self) -> dict[str, Any]:
        pooled = sum(len(p) for p in self._pools.values())
        return {"ok": True, "pooled": pooled, **self.stats}

    async def aclose(self) -> None:
        self._pools.clear()


__all__ = ["Compiler", "LuaTransport", "limit_error"]
