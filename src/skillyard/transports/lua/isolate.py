"""One sandboxed Lua 5.4 VM (an *isolate*) and the conversions across its boundary.

An :class:`Isolate` is a ``lupa.lua54.LuaRuntime`` created with eval and Python
builtins disabled, an attribute filter that refuses every Python attribute, a
memory cap, and the :mod:`~skillyard.transports.lua.harness` installed. The
only Python objects it holds are the local ``vulcan`` helpers, kept as upvalues
of Lua closures that skill code cannot reach (``debug`` is gone).

Calls are driven as coroutines: :meth:`Isolate.start` runs until the skill
returns, fails, trips a limit, or yields a host request, which the transport
answers with ``await ctx.host.dispatch(...)`` and hands back via
:meth:`Isolate.resume`. No thread is involved, so a warm call costs a couple of
Lua boundary crossings (see docs/lua.md for the measured comparison with a
worker thread).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from skillyard.transports.lua.harness import HARNESS
from skillyard.transports.lua.patterns import ENGINE

MB = 1024 * 1024
# Above this estimated number of matcher steps a pattern call runs in the hooked Lua engine.
PATTERN_LIMIT = 20_000_000
MAX_DEPTH = 100
API_NAMES = frozenset(
    ("json_encode", "json_decode", "path", "log", "context", "module", "null_marker")
)
_SCALARS = (str, int, bool)
# Values a dict of arguments may hold and still go to Lua in one ``table_from``.
_PLAIN = frozenset((str, int, float, bool, bytes))
# Values arguments may hold and still cross by shape (Isolate.call_bound).
_SHAPE_VALUES = frozenset((str, int, float, bool))
MAX_SHAPE_KEYS = 16
NULL_KEY = "\0skillyard.null"


def _lua_table_type() -> type:
    import lupa.lua54 as lupa

    return type(lupa.LuaRuntime(register_eval=False, register_builtins=False).table())


_LUA_TABLE: type | None = None


class ConversionError(ValueError):
    """A Lua value cannot be expressed as JSON."""


# What an isolate's harness fetches by name: its own bytecode and the chunks it loads on
# first use (compiled once per process), and the pattern engine's source.
SOURCES: dict[str, Any] = {}


def harness_bytecode() -> bytes:
    """The harness compiled once per process; fills :data:`SOURCES` with its lazy chunks."""
    if not SOURCES:
        import lupa.lua54 as lupa

        from skillyard.transports.lua.harness import EXTRA, LIBS
        from skillyard.transports.lua.vulcan import VULCAN

        compiler = lupa.LuaRuntime(encoding=None, register_eval=False, register_builtins=False)
        dump = compiler.eval(
            "function(src, name) return string.dump(assert(load(src, name)), true) end"
        )
        SOURCES["extra"] = bytes(dump(EXTRA.encode(), b"=extra"))
        SOURCES["libs"] = bytes(dump(LIBS.encode(), b"=libs"))
        SOURCES["vulcan_code"] = bytes(dump(VULCAN.encode(), b"=vulcan"))
        SOURCES["engine"] = ENGINE.encode()
        SOURCES["now"] = time.monotonic
        SOURCES["harness"] = bytes(dump(HARNESS.encode(), b"=harness"))
    harness: bytes = SOURCES["harness"]
    return harness


def _deny_attributes(obj: Any, name: Any, is_setting: bool) -> Any:
    raise AttributeError("Python attributes are not reachable from the sandbox")


class Isolate:
    """A sandboxed Lua VM with the skillyard harness installed."""

    __slots__ = (
        "_h_call",
        "_h_describe",
        "_h_eval",
        "_h_resume",
        "_null",
        "_x",
        "calls",
        "chunks",
        "current",
        "dead",
        "h",
        "lua",
        "lua_type",
        "memory_limit",
        "runners",
        "table_from",
    )

    def __init__(self, *, memory_limit: int, fetch: Callable[[str], Any]) -> None:
        import lupa.lua54 as lupa

        self.memory_limit = memory_limit
        self.lua = lupa.LuaRuntime(
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            attribute_filter=_deny_attributes,
            max_memory=0,
        )
        self.lua_type = lupa.lua_type
        global _LUA_TABLE
        if _LUA_TABLE is None:
            _LUA_TABLE = _lua_table_type()
        self.table_from = self.lua.table_from
        harness = self.lua.execute(harness_bytecode(), fetch, memory_limit, PATTERN_LIMIT)
        self.h = harness
        # entry points looked up on first use: each lookup is a crossing into Lua
        self._h_call = self._h_resume = self._h_describe = self._h_eval = self._null = None
        self._x: Any = None
        self.lua.set_max_memory(memory_limit, total=False)
        self.chunks: dict[Any, Any] = {}
        self.runners: dict[Any, Any] = {}
        self.current: Any = None
        self.dead = False
        self.calls = 0

    def extras(self) -> Any:
        """The harness's entry points beyond ``once``, loading its extra part on first use
        (warm runners, host answers, error descriptions, sessions; see harness.py).

        Never from inside a Python function Lua is calling: lupa reads the results of a
        call into the VM made from there off the wrong stack (a coroutine is running)."""
        x = self._x
        if x is None:
            x = self._x = self.h.extra()
        return x

    def chunk(self, key: Any, bytecode: bytes, chunkname: str) -> Any:
        """The compiled entry ``key`` in this isolate (loaded from bytecode once)."""
        fn = self.chunks.get(key)
        if fn is None:
            result = self.extras().compile(bytecode, "@" + chunkname)
            fn = result[0] if isinstance(result, tuple) else result
            if fn is None:
                raise ConversionError(f"cannot load the compiled chunk {chunkname}: {result[1]}")
            self.chunks[key] = fn
        return fn

    def bound(
        self,
        token: Any,
        bytecode: bytes,
        chunkname: str,
        key: str | None,
        budget: float,
        step: int,
        direct: bool = False,
    ) -> dict[Any, Any]:
        """An entry bound to its key and limits in this isolate (``H.bind``), cached under
        ``token``: a dict holding the runner under ``None`` and the runners made for
        argument shapes under their keys (see :meth:`call_bound`).

        A runner returns the result table itself when the call finished with exactly one
        table, else the ``(status, ...)`` tuple :meth:`start` returns. A ``direct`` runner
        has no call context (see :mod:`~skillyard.transports.lua.direct`)."""
        shapes = self.runners.get(token)
        if shapes is None:
            run = self.extras().bind(bytecode, "@" + chunkname, key, budget, step, direct)
            if isinstance(run, tuple):
                raise ConversionError(f"cannot load the compiled chunk {chunkname}: {run[1]}")
            shapes = self.runners[token] = {None: run}
        return shapes

    def call_bound(self, shapes: dict[Any, Any], deadline: float, args: dict[str, Any]) -> Any:
        """Run a bound entry with ``args``; returns what its runner returns.

        A flat object of at most :data:`MAX_SHAPE_KEYS` strings, numbers and booleans
        crosses by shape: the first call with a given tuple of keys makes a runner that
        takes the values alone and builds the table inside Lua (``H.shape``), sparing a
        ``table_from`` crossing (measured in bench/bench_lua.py). Anything else goes
        through :meth:`to_lua`."""
        for v in args.values():
            if type(v) not in _SHAPE_VALUES:
                return shapes[None](deadline, self.to_lua(args))
        keys = tuple(args)
        fn: Any = shapes.get(keys)
        if fn is None:
            if len(keys) <= MAX_SHAPE_KEYS and all(type(k) is str for k in keys):
                fn = self.extras().shape(shapes[None], len(keys), *keys)
            else:
                fn = False
            shapes[keys] = fn
        if fn is False:
            return shapes[None](deadline, self.to_lua(args))
        return fn(deadline, *args.values())

    def once(
        self,
        bytecode: bytes,
        chunkname: str,
        key: str | None,
        args: Any,
        budget: float,
        deadline: float,
        step: int,
        direct: bool = False,
    ) -> Any:
        """Load an entry and run it in one crossing (a fresh isolate's only call).

        Returns what a runner of :meth:`bound` returns; ``direct`` as there."""
        self.calls += 1
        res = self.h.once(bytecode, chunkname, key, budget, deadline, step, args, direct)
        if type(res) is tuple and res[0] is None:
            raise ConversionError(f"cannot load {chunkname}: {res[1]}")
        return res

    def start(
        self, chunk: Any, key: str | None, args: Any, budget: float, deadline: float, step: int
    ) -> tuple[Any, ...]:
        """Begin a call; returns ``(status, ...)`` (done, host, error or limit)."""
        self.calls += 1
        fn = self._h_call
        if fn is None:
            fn = self._h_call = self.extras().call
        result: tuple[Any, ...] = fn(chunk, key, args, budget, deadline, step)
        return result

    def resume(
        self,
        ok: bool,
        value: Any = None,
        code: Any = None,
        message: Any = None,
        error_id: Any = None,
    ) -> tuple[Any, ...]:
        """Answer a host request and continue the call."""
        fn = self._h_resume
        if fn is None:
            fn = self._h_resume = self.extras().resume
        result: tuple[Any, ...] = fn(ok, value, code, message, error_id)
        return result

    def new_env(self) -> Any:
        """A fresh globals table for a persistent session."""
        return self.extras().newenv()

    def eval(
        self, env: Any, code: str, args: Any, budget: float, deadline: float, step: int
    ) -> tuple[Any, ...]:
        """Run ``code`` in the persistent ``env`` (sessions)."""
        fn = self._h_eval
        if fn is None:
            fn = self._h_eval = self.extras().eval
        result: tuple[Any, ...] = fn(env, code, args, budget, deadline, step)
        return result

    def describe(self, err: Any) -> tuple[str | None, str, Any]:
        """``(code, message, error_id)`` of a Lua error value, without running skill code."""
        fn = self._h_describe
        if fn is None:
            fn = self._h_describe = self.extras().describe
        out = fn(err)
        if not isinstance(out, tuple):
            return None, str(out), None
        code, message = out[0], out[1]
        error_id = out[2] if len(out) > 2 else None
        return code, str(message), error_id

    def memory_used(self) -> int:
        """Bytes currently allocated by this VM."""
        return int(self.lua.get_memory_used())

    # -- conversions -----------------------------------------------------------------------

    def to_lua(self, value: Any) -> Any:
        """A JSON value as a Lua value: dicts and lists become tables, nested nulls the
        ``vulcan.json.null`` marker (a nil would leave holes), a top-level null nil.

        Anything else is refused with :class:`ConversionError`: the sandbox holds no
        Python object, so none may arrive as an argument or a host call's answer."""
        if type(value) is dict:
            for k, v in value.items():
                if type(v) not in _PLAIN or type(k) is not str:
                    return self.table_from(self._with_nulls(value, 0), recursive=True)
            return self.table_from(value)
        return self._with_nulls(value, 0, top=True)

    def _with_nulls(self, value: Any, depth: int, top: bool = False) -> Any:
        """``value`` with every ``None`` replaced by the Lua null marker; tables for dicts
        and lists at the top level."""
        if depth > MAX_DEPTH:
            raise ConversionError(f"arguments nested deeper than {MAX_DEPTH} levels")
        if value is None:
            if top:
                return None  # a top-level null is nil: host calls that find nothing return nil
            null = self._null
            if null is None:  # the extra part hands its marker over as it loads
                self.extras()
                null = self._null
            return null
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if not isinstance(k, str | int) or isinstance(k, bool):
                    raise ConversionError(
                        f"a {type(k).__name__} key cannot be passed to Lua (JSON object keys "
                        "are strings)"
                    )
                out[k] = self._with_nulls(v, depth + 1)
            return self.table_from(out, recursive=True) if top else out
        if isinstance(value, list | tuple):
            seq = [self._with_nulls(v, depth + 1) for v in value]
            return self.table_from(seq, recursive=True) if top else seq
        if isinstance(value, str | bytes | int | float):
            return value
        raise ConversionError(
            f"a {type(value).__name__} value cannot be passed to Lua (JSON values only)"
        )

    def to_py(self, value: Any, depth: int = 0) -> Any:
        """A Lua value as JSON (tables with keys 1..n become lists)."""
        t = type(value)
        if t is str or t is int or t is bool or value is None:
            return value
        if t is float:
            if math.isfinite(value):
                return value
            raise ConversionError(f"{value} is not a JSON number")
        if t is not _LUA_TABLE:
            kind = self.lua_type(value)
            if kind != "table":
                raise ConversionError(f"a Lua {kind or 'host'} value cannot be returned as JSON")
        fast = dict(value.items())
        for k, v in fast.items():
            if type(k) is not str or type(v) not in _SCALARS:
                break
        else:
            return None if NULL_KEY in fast else fast
        if depth >= MAX_DEPTH:
            raise ConversionError(f"tables nested deeper than {MAX_DEPTH} levels (or a cycle)")
        out: dict[Any, Any] = {}
        plain = True
        for k, v in fast.items():
            tv = type(v)
            if not (tv is str or tv is int or tv is bool):
                v = self.to_py(v, depth + 1)
            if type(k) is not str:
                plain = False
            out[k] = v
        if plain:
            return out
        n = len(out)
        if all(type(k) is int for k in out) and min(out) == 1 and max(out) == n:
            return [out[i] for i in range(1, n + 1)]
        fixed: dict[str, Any] = {}
        for k, v in out.items():
            if isinstance(k, str):
                fixed[k] = v
            elif isinstance(k, int | float) and not isinstance(k, bool):
                fixed[str(k)] = v
            else:
                raise ConversionError(f"a table key of type {type(k).__name__} is not valid JSON")
        return fixed


__all__ = ["MAX_SHAPE_KEYS", "MB", "ConversionError", "Isolate"]
