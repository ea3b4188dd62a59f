"""Lua skills: warm and fresh isolates through the runtime, against raw lupa floors.

Floors measured in the same run (PERFORMANCE.md):
- raw lupa call: ``dict(f(rt.table_from(args)).items())`` on one LuaRuntime;
- new ``LuaRuntime`` + load a small sandbox script + first call.

Times are CPU time of this process per call (``time.process_time_ns``), not wall
time: on the shared 2-core machines this runs on, wall time mostly measures how
long the process waited for a core, and that wait inflates a longer call path
more than the raw floor. Floor and skillyard are measured in interleaved rounds.

Also reported, to document the design of host calls (docs/lua.md): a host call
answered by yielding the Lua coroutine back to the event loop, against running
the Lua call in a worker thread that reaches the loop with
``asyncio.run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import Report


def time_sync(fn: Any, *, n: int, batch: int = 1, warmup: int = 100) -> list[float]:
    """Per-call CPU microseconds of this process (see the module docstring)."""
    for _ in range(warmup):
        fn()
    gc.collect()
    samples = []
    for _ in range(max(1, n // batch)):
        t0 = time.process_time_ns()
        for _ in range(batch):
            fn()
        samples.append((time.process_time_ns() - t0) / 1000 / batch)
    return samples


def time_async(
    loop: asyncio.AbstractEventLoop, fn: Any, *, n: int, batch: int = 1, warmup: int = 100
) -> list[float]:
    """Like :func:`time_sync` for a coroutine function, run inside ``loop``."""

    async def go() -> list[float]:
        for _ in range(warmup):
            await fn()
        gc.collect()
        samples = []
        for _ in range(max(1, n // batch)):
            t0 = time.process_time_ns()
            for _ in range(batch):
                await fn()
            samples.append((time.process_time_ns() - t0) / 1000 / batch)
        return samples

    return loop.run_until_complete(go())


ARGS = {"skill": "echo", "text": "hello world", "n": 42, "flag": True}
LUA_SKILL = "function(t) return {ok=true, text=t.text, n=t.n+1} end"
SANDBOX_SCRIPT = """
os = nil; io = nil; debug = nil; package = nil; require = nil
dofile = nil; loadfile = nil; load = nil; collectgarbage = nil
function skill(t)
  local out = {}
  out.ok = true
  out.text = t.text
  out.n = t.n + 1
  return out
end
return skill
"""
SKILL_LUA = """
return function(t)
  local out = {}
  out.ok = true
  out.text = t.text
  out.n = t.n + 1
  return out
end
"""
HOST_LUA = "return function(t) return {v = vulcan.config.get('k'), n = t.n + 1} end"


def _package(root: Path, name: str, body: str, isolation: str) -> Path:
    pkg = root / name
    (pkg / "runtime").mkdir(parents=True)
    (pkg / "runtime" / "main.lua").write_text(body)
    (pkg / "skill.yaml").write_text(
        f"entries:\n  - name: run\n    lua_entry: runtime/main.lua\n    isolation: {isolation}\n"
    )
    return pkg


class _Host:
    async def dispatch(self, method: str, params: dict[str, Any]) -> Any:
        return "v"


def _interleave(rounds: int, *cases: Any) -> list[list[float]]:
    """Run each (fn) case for a slice in turn, ``rounds`` times, so load noise hits all alike."""
    out: list[list[float]] = [[] for _ in cases]
    for _ in range(rounds):
        for i, case in enumerate(cases):
            out[i].extend(case())
    return out


def run(report: Report) -> None:
    import lupa.lua54 as lupa

    from skillyard.runtime import Runtime

    loop = asyncio.new_event_loop()
    rounds = 3 if report.quick else 7

    # -- warm ----------------------------------------------------------------------------
    raw_rt = lupa.LuaRuntime(register_eval=False, register_builtins=False)
    lua_fn = raw_rt.eval(LUA_SKILL)
    table_from = raw_rt.table_from

    def raw_call() -> Any:
        return dict(lua_fn(table_from(ARGS)).items())

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rt = Runtime.memory()
        rt.host_factory = lambda ctx: _Host()
        for name, body, isolation in (
            ("warm", SKILL_LUA, "warm"),
            ("fresh", SKILL_LUA, "fresh"),
            ("hosted", HOST_LUA, "warm"),
        ):
            rt.add_package(_package(root, name, body, isolation), root="user")
        assert loop.run_until_complete(rt.call("warm-run", ARGS)).output == {
            "ok": True,
            "text": "hello world",
            "n": 43,
        }
        transport = rt.transport("lua")
        card = rt.card("warm-run")

        async def warm_runtime() -> Any:
            return await rt.call("warm-run", ARGS)

        from skillyard.transports.base import SYSTEM, CallContext

        async def warm_transport() -> Any:
            ctx = CallContext(
                runtime=rt, card=card, args=ARGS, caller=SYSTEM, call_id="b", deadline=1e18
            )
            return await transport.call(card, ARGS, ctx)

        run = transport.direct(card)
        assert run is not None

        def warm_direct() -> Any:
            return run(ARGS)

        n = report.scale(20_000) // rounds
        floor, via_rt, via_tr, via_direct = _interleave(
            rounds,
            lambda: time_sync(raw_call, n=n, batch=100),
            lambda: time_async(loop, warm_runtime, n=n, batch=100),
            lambda: time_async(loop, warm_transport, n=n, batch=100),
            lambda: time_sync(warm_direct, n=n, batch=100),
        )
        f = "lupa raw call dict->table->dict (floor)"
        report.add("lua", f, floor)
        report.add("lua", "lua warm isolate via Runtime.call", via_rt, floor=f, max_ratio=2.0)
        report.add("lua", "lua warm isolate via LuaTransport.call", via_tr, floor=f)
        report.add(
            "lua",
            "lua warm isolate, the transport's part of Runtime.call",
            via_direct,
            floor=f,
            note="LuaTransport.direct: what Runtime.call runs inside its pipeline",
        )

        # -- fresh ---------------------------------------------------------------------------
        def cold_call() -> Any:
            lrt = lupa.LuaRuntime(register_eval=False, register_builtins=False)
            fn = lrt.execute(SANDBOX_SCRIPT)
            return dict(fn(lrt.table_from(ARGS)).items())

        async def fresh_runtime() -> Any:
            return await rt.call("fresh-run", ARGS)

        n = report.scale(2_000) // rounds
        cold, fresh = _interleave(
            rounds,
            lambda: time_sync(cold_call, n=n, warmup=20),
            lambda: time_async(loop, fresh_runtime, n=n, warmup=20),
        )
        c = "new LuaRuntime + load + call (floor)"
        report.add("lua", c, cold)
        report.add("lua", "lua fresh isolate via Runtime.call", fresh, floor=c, max_ratio=1.5)

        # -- how a Lua call reaches the async host ------------------------------------------
        async def hosted() -> Any:
            return await rt.call("hosted-run", ARGS)

        host = _Host()
        thread_rt = lupa.LuaRuntime(register_eval=False, register_builtins=False)

        def blocking_dispatch(method: str) -> Any:
            fut = asyncio.run_coroutine_threadsafe(host.dispatch(method, {}), loop)
            return fut.result()

        thread_fn = thread_rt.eval(
            "function(t, get) return {v = get('config.get'), n = t.n + 1} end"
        )

        async def threaded() -> Any:
            def work() -> Any:
                return dict(thread_fn(thread_rt.table_from(ARGS), blocking_dispatch).items())

            return await asyncio.to_thread(work)

        n = report.scale(4_000) // rounds
        co, th = _interleave(
            rounds,
            lambda: time_async(loop, hosted, n=n, batch=10),
            lambda: time_async(loop, threaded, n=n, batch=10),
        )
        h = "lua call + 1 host call, coroutine yield to the loop"
        report.add("lua-host", h, co, floor=f)
        report.add(
            "lua-host",
            "raw lupa call + 1 host call, worker thread + run_coroutine_threadsafe",
            th,
            floor=f,
            note="the design not taken (docs/lua.md)",
        )
        loop.run_until_complete(rt.aclose())
    loop.close()
