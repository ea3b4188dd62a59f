"""WASM skill calls against the cached low-level JSON-through-memory floor, in one run.

* floor: a WAT echo called through wasmtime's raw C API with preallocated values,
  JSON in and out through linear memory (the anchor's tuned-host path);
* warm instance: ``[options] warm = true``, through the transport and through
  the whole ``Runtime.call`` pipeline (target <= 1.5x the floor);
* fresh Store + instance per call (the default isolation);
* a host import crossing from the wasm thread to ``await ctx.host.dispatch``.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import Report, time_async, time_sync

ARGS = {"skill": "echo", "text": "hello world", "n": 42, "flag": True}
GUESTS = Path(__file__).resolve().parent.parent / "tests" / "transports" / "wasm_guests"
GROUP = "wasm"

FLOOR_WAT = r"""
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func $alloc (export "alloc") (param $n i32) (result i32)
    (local $p i32) (local $end i32)
    global.get $heap local.set $p
    local.get $p local.get $n i32.add i32.const 7 i32.add i32.const -8 i32.and local.set $end
    (block $ok
      local.get $end memory.size i32.const 16 i32.shl i32.le_u br_if $ok
      local.get $end memory.size i32.const 16 i32.shl i32.sub i32.const 65535 i32.add
      i32.const 16 i32.shr_u memory.grow i32.const -1 i32.ne br_if $ok
      unreachable)
    local.get $end global.set $heap
    local.get $p)
  (func (export "reset") i32.const 1024 global.set $heap)
  (func (export "process") (param $p i32) (param $n i32) (result i64)
    (local $o i32)
    local.get $n call $alloc local.set $o
    local.get $o local.get $p local.get $n memory.copy
    local.get $o i64.extend_i32_u i64.const 32 i64.shl
    local.get $n i64.extend_i32_u i64.or)
)
"""


def _floor() -> Any:
    """JSON through linear memory via the raw C API (what a tuned host can do at best)."""
    import wasmtime
    from wasmtime import _bindings as b
    from wasmtime import _ffi as f

    store = wasmtime.Store()
    inst = wasmtime.Instance(store, wasmtime.Module(store.engine, FLOOR_WAT), [])
    ex = inst.exports(store)
    mem = ex["memory"]
    ctx = store._context()
    call = b._wasmtime_func_call
    trap = ctypes.POINTER(b.wasm_trap_t)()
    tref = ctypes.byref(trap)

    def prep(name: str, n: int) -> tuple[Any, Any, Any]:
        params = (b.wasmtime_val_t * 2)()
        for i in range(n):
            params[i].kind = f.WASMTIME_I32.value
        return ctypes.byref(ex[name]._func), params, (b.wasmtime_val_t * 1)()

    fa, pa, ra = prep("alloc", 1)
    fp, pp, rp = prep("process", 2)
    fr, pr, rr = prep("reset", 0)
    a0, p0, p1, r_a, r_p = pa[0].of, pp[0].of, pp[1].of, ra[0].of, rp[0].of
    memref = ctypes.byref(mem._memory)
    mem_data = b._wasmtime_memory_data
    dumps, loads = json.dumps, json.loads
    memmove, string_at, addressof = ctypes.memmove, ctypes.string_at, ctypes.addressof

    def once() -> Any:
        data = dumps(ARGS).encode()
        n = len(data)
        a0.i32 = n
        if call(ctx, fa, pa, 1, ra, 1, tref) or trap:
            raise RuntimeError("alloc failed")
        ptr = r_a.i32
        base = addressof(mem_data(ctx, memref).contents)
        memmove(base + ptr, data, n)
        p0.i32, p1.i32 = ptr, n
        if call(ctx, fp, pp, 2, rp, 1, tref) or trap:
            raise RuntimeError("process failed")
        packed = r_p.i64
        out = string_at(base + ((packed >> 32) & 0xFFFFFFFF), packed & 0xFFFFFFFF)
        if call(ctx, fr, pr, 0, rr, 0, tref) or trap:
            raise RuntimeError("reset failed")
        return loads(out)

    keep = (store, inst, pa, ra, pp, rp, pr, rr)
    return once, keep


def run(report: Report) -> None:
    from skillyard import Runtime

    floor, _keep = _floor()
    assert floor() == ARGS

    tmp = Path(tempfile.mkdtemp(prefix="skillyard-bench-wasm-"))
    try:
        for name, opts in (("warm", "[options]\nwarm = true\n"), ("fresh", "")):
            pkg = tmp / name
            pkg.mkdir()
            shutil.copy(GUESTS / "echo.wasm", pkg / "skill.wasm")
            (pkg / "skill.toml").write_text(f'runtime = "wasm"\nentry = "skill.wasm"\n{opts}')
        for name, opts in (("hosty", ""), ("threaded", "[options]\nthread = true\n")):
            pkg = tmp / name
            pkg.mkdir()
            shutil.copy(GUESTS / "testskill.wasm", pkg / "skill.wasm")
            (pkg / "skill.toml").write_text(
                f'runtime = "wasm"\nentry = "skill.wasm"\n[permissions]\nenv = ["HOME"]\n{opts}'
            )

        loop = asyncio.new_event_loop()
        rt = Runtime.memory(roots={"project": [tmp]})
        try:
            _bench_runtime(report, loop, rt, floor)
        finally:
            loop.run_until_complete(rt.aclose())
            loop.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _bench_runtime(report: Report, loop: asyncio.AbstractEventLoop, rt: Any, floor: Any) -> None:
    from skillyard.transports.base import DEFAULT_CALLER, CallContext

    transport = rt.transport("wasm")
    warm_card = rt.card("warm-echo")
    floor_name = "wasm floor: raw ffi JSON through memory"

    async def direct() -> Any:
        ctx = CallContext(
            runtime=rt,
            card=warm_card,
            args=ARGS,
            caller=DEFAULT_CALLER,
            call_id="bench",
            deadline=loop.time() + 30,
        )
        return (await transport.call(warm_card, ARGS, ctx)).output

    assert loop.run_until_complete(direct()) == ARGS
    # Interleave the floor and the warm call in short rounds so load on a shared
    # machine hits both alike; the ratio of medians is then a fair comparison.
    floor_samples: list[float] = []
    warm_samples: list[float] = []
    for _ in range(max(4, report.scale(40))):
        floor_samples += time_sync(floor, n=1000, batch=100, warmup=10)
        warm_samples += time_async(loop, direct, n=1000, batch=100, warmup=10)
    report.add(
        GROUP,
        floor_name,
        floor_samples,
        note="the cached low-level call (anchor: 19-32 us)",
    )
    report.add(
        GROUP,
        "wasm warm instance: transport.call",
        warm_samples,
        floor=floor_name,
        max_ratio=1.5,
        note="msgpack envelopes, deadline, state, raw ffi calls; interleaved with the floor",
    )

    async def warm() -> Any:
        return (await rt.call("warm-echo", ARGS)).output

    assert loop.run_until_complete(warm()) == ARGS
    report.add(
        GROUP,
        "wasm warm instance: Runtime.call pipeline",
        time_async(loop, warm, n=report.scale(50_000), batch=50),
        floor=floor_name,
        note="plus resolve, schema validation, call context, result record",
    )

    async def fresh() -> Any:
        return (await rt.call("fresh-echo", ARGS)).output

    assert loop.run_until_complete(fresh()) == ARGS
    report.add(
        GROUP,
        "wasm fresh Store+instance per call: Runtime.call",
        time_async(loop, fresh, n=report.scale(10_000), batch=10),
        floor=floor_name,
        note="the default isolation (anchor: new Store+Instance 20 us)",
    )

    inline_name = "wasm inline, WASI module, fresh store: Runtime.call"
    thread_name = "wasm worker thread ([options] thread), fresh store: Runtime.call"
    for name, tool, note in (
        (inline_name, "hosty-echo", "the C guest with WASI stdio: WASI context per store"),
        (thread_name, "threaded-echo", "the same plus the asyncio.to_thread hop"),
    ):

        async def one(tool: str = tool) -> Any:
            return (await rt.call(tool, ARGS)).output

        assert loop.run_until_complete(one()) == ARGS
        report.add(
            GROUP,
            name,
            time_async(loop, one, n=report.scale(5_000), batch=10),
            floor=floor_name,
            note=note,
        )

    home = os.environ.get("HOME")
    for name, tool, floor_row, note in (
        (
            "wasm host import env_get inline (call_sync)",
            "hosty-env",
            inline_name,
            "one import answered on the loop thread by the host API",
        ),
        (
            "wasm host import env_get from a worker thread",
            "threaded-env",
            thread_name,
            "one import crossing to the host API from the worker thread",
        ),
    ):

        async def imp(tool: str = tool) -> Any:
            return (await rt.call(tool, {"name": "HOME"})).output

        assert loop.run_until_complete(imp()) == {"value": home}
        report.add(
            GROUP,
            name,
            time_async(loop, imp, n=report.scale(5_000), batch=10),
            floor=floor_row,
            note=note,
        )
