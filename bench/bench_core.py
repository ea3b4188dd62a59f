"""Per-call cost of the core paths next to their raw floors, measured in the same run.

Rows: a plain Python call and the same function through ``Runtime.call`` and
``SyncRuntime.call`` (no middleware: the flattened path); a persistent NDJSON+orjson echo child driven by a blocking client
and the same work in a skillyard persistent process worker; spawning a Python
process per call and a json-mode process skill; ``import skillyard`` and
``skillyard --help`` wall time in a fresh interpreter.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson

from bench.harness import Report, time_async, time_sync

ARGS = {"skill": "echo", "text": "hello world", "n": 42, "flag": True}


def skill(args: dict[str, Any]) -> dict[str, Any]:
    """The trivial skill of PERFORMANCE.md: the work is negligible on purpose."""
    return {"ok": True, "text": args["text"], "n": args["n"] + 1}


RAW_CHILD = r"""
import sys, orjson
w = sys.stdout.buffer
for line in sys.stdin.buffer:
    a = orjson.loads(line)
    w.write(orjson.dumps({"ok": True, "text": a["text"], "n": a["n"] + 1}) + b"\n")
    w.flush()
"""

WORKER = """
from skillyard.worker import serve

def echo(args, ctx):
    return {"ok": True, "text": args["text"], "n": args["n"] + 1}

serve({"echo": echo})
"""

BURN = """
from skillyard.worker import serve

def burn(args, ctx):
    x = 0
    for i in range(args["n"]):
        x += i
    return {"x": x}

serve({"burn": burn})
"""

RAW_BURN = r"""
import sys, orjson

def burn(n):
    x = 0
    for i in range(n):
        x += i
    return {"x": x}

w = sys.stdout.buffer
for line in sys.stdin.buffer:
    w.write(orjson.dumps(burn(orjson.loads(line)["n"])) + b"\n")
    w.flush()
"""

ONESHOT = """
import json, sys
a = json.load(sys.stdin)
sys.stdout.write(json.dumps({"ok": True, "text": a["text"], "n": a["n"] + 1}))
"""


def _package(
    base: Path, name: str, script: str, mode: str, extra: str = "", method: str = "echo"
) -> Path:
    pkg = base / name
    pkg.mkdir()
    (pkg / "main.py").write_text(textwrap.dedent(script))
    (pkg / "skill.toml").write_text(
        'version = "1.0.0"\nruntime = "process"\nentry = ["{python}", "main.py"]\n'
        f'[options]\nmode = "{mode}"\n{extra}\n[[methods]]\nname = "{method}"\n'
    )
    return pkg


def _wall(argv: list[str], n: int) -> list[float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    samples = []
    subprocess.run(argv, env=env, check=True, capture_output=True)  # warm the page cache
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        samples.append((time.perf_counter() - t0) * 1e6)
    return samples


def _paired(
    loop: asyncio.AbstractEventLoop,
    floor: Any,
    path: Any,
    *,
    n: int,
    batch: int = 1,
    rounds: int = 10,
) -> tuple[list[float], list[float]]:
    """Time a sync floor and an async path in alternating rounds, so both see the same load."""
    floor_samples: list[float] = []
    path_samples: list[float] = []
    per = max(batch, n // rounds)
    time_sync(floor, n=200, batch=batch, warmup=200)
    time_async(loop, path, n=200, batch=batch, warmup=200)
    for _ in range(rounds):
        floor_samples += time_sync(floor, n=per, batch=batch, warmup=10)
        path_samples += time_async(loop, path, n=per, batch=batch, warmup=10)
    return floor_samples, path_samples


def _bare_runtime() -> Any:
    """A runtime with no extensions and no middleware: the pipeline alone."""
    from skillyard.runtime import Runtime, SyncRuntime
    from skillyard.store import Store

    return SyncRuntime(Runtime(store=Store(":memory:")))


def _python_rows(report: Report) -> None:
    rt = _bare_runtime()
    try:
        rt.tool("bench-echo")(skill)
        call = rt.runtime.call
        n = report.scale(50_000)
        floor, path = _paired(
            rt._loop, lambda: skill(ARGS), lambda: call("bench-echo", ARGS), n=n, batch=50
        )
        report.add("core", "raw python call dict -> dict", floor)
        report.add(
            "core",
            "python skill via Runtime.call (no middleware)",
            path,
            floor="raw python call dict -> dict",
            max_ratio=10,
            note="async API: the flattened path inside one coroutine",
        )
        sync_call = rt.call
        sync_floor: list[float] = []
        sync_path: list[float] = []
        for _ in range(10):  # alternating rounds, as _paired does
            sync_floor += time_sync(lambda: skill(ARGS), n=n // 10, batch=50, warmup=10)
            sync_path += time_sync(lambda: sync_call("bench-echo", ARGS), n=n // 10, batch=50)
        report.add("core", "raw python call dict -> dict (paired with SyncRuntime)", sync_floor)
        report.add(
            "core",
            "python skill via SyncRuntime.call (no middleware)",
            sync_path,
            floor="raw python call dict -> dict (paired with SyncRuntime)",
            max_ratio=10,
            note="blocking API: the flattened path with no event loop",
        )
    finally:
        rt.close()


def _process_rows(report: Report) -> None:
    n = report.scale(10_000)
    proc = subprocess.Popen(
        [sys.executable, "-c", RAW_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    w, r = proc.stdin, proc.stdout

    def raw_call() -> Any:
        w.write(orjson.dumps(ARGS) + b"\n")
        w.flush()
        return orjson.loads(r.readline())

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        rt = _bare_runtime()
        try:
            rt.runtime.add_package(_package(base, "bench-worker", WORKER, "worker"))
            rt.runtime.add_package(
                _package(base, "bench-noloopwait", WORKER, "worker", "spin_us = 0")
            )
            rt.runtime.add_package(_package(base, "bench-oneshot", ONESHOT, "json"))
            call = rt.runtime.call
            assert raw_call() == skill(ARGS)
            assert rt.call("bench-worker-echo", ARGS).output == skill(ARGS)
            floor, path = _paired(rt._loop, raw_call, lambda: call("bench-worker-echo", ARGS), n=n)
            report.add(
                "process",
                "raw NDJSON+orjson echo child",
                floor,
                note="blocking client, the child of the PERFORMANCE.md anchors",
            )
            report.add(
                "process",
                "skillyard persistent worker call (no middleware)",
                path,
                floor="raw NDJSON+orjson echo child",
                max_ratio=1.5,
                note="Runtime.call -> worker -> skillyard.worker.serve, latency fast path on",
            )
            _, no_spin = _paired(
                rt._loop, raw_call, lambda: call("bench-noloopwait-echo", ARGS), n=n // 2
            )
            report.add(
                "process",
                "skillyard persistent worker call, spin_us = 0 (no middleware)",
                no_spin,
                floor="raw NDJSON+orjson echo child",
                note="every answer through an event-loop round trip (no target)",
            )
            spawn_n = max(5, report.scale(30))

            def spawn_raw() -> Any:
                out = subprocess.run(
                    [sys.executable, "-c", ONESHOT],
                    input=orjson.dumps(ARGS),
                    capture_output=True,
                    check=True,
                )
                return orjson.loads(out.stdout)

            report.add(
                "process", "raw spawn python per call", time_sync(spawn_raw, n=spawn_n, warmup=2)
            )
            report.add(
                "process",
                "skillyard json-mode process call",
                time_async(rt._loop, lambda: call("bench-oneshot-echo", ARGS), n=spawn_n, warmup=2),
                floor="raw spawn python per call",
                max_ratio=1.5,
            )
        finally:
            rt.close()
            w.close()
            proc.wait(timeout=10)


def _pool_rows(report: Report) -> None:
    """Throughput of CPU-bound calls on one worker and on a pool of two (per call, wall)."""
    calls = 40 if not report.quick else 10
    rounds = max(3, report.scale(8))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        rt = _bare_runtime()
        try:
            for size in (1, 2):
                rt.runtime.add_package(
                    _package(base, f"burn{size}", BURN, "worker", f"workers = {size}", "burn")
                )
            call = rt.runtime.call

            def batch(tool: str) -> float:
                async def go() -> None:
                    await asyncio.gather(*(call(tool, {"n": 100_000}) for _ in range(calls)))

                t0 = time.perf_counter()
                rt.run(go())
                return (time.perf_counter() - t0) * 1e6 / calls

            # The same calls on raw NDJSON children driven by a blocking client: what two
            # processes get out of this machine's two cores right now (no target).
            kids = [
                subprocess.Popen(
                    [sys.executable, "-c", RAW_BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE
                )
                for _ in range(2)
            ]
            line = orjson.dumps({"n": 100_000}) + b"\n"

            def raw_batch(n_kids: int) -> float:
                t0 = time.perf_counter()
                for kid in kids[:n_kids]:
                    assert kid.stdin is not None
                    kid.stdin.write(line * (calls // n_kids))
                    kid.stdin.flush()
                for kid in kids[:n_kids]:
                    assert kid.stdout is not None
                    for _ in range(calls // n_kids):
                        kid.stdout.readline()
                return (time.perf_counter() - t0) * 1e6 / calls

            batch("burn1-burn")
            batch("burn2-burn")  # start both pools' workers before timing
            raw_batch(2)
            one: list[float] = []
            two: list[float] = []
            raw_one: list[float] = []
            raw_two: list[float] = []
            for _ in range(rounds):
                one.append(batch("burn1-burn"))
                two.append(batch("burn2-burn"))
                raw_one.append(raw_batch(1))
                raw_two.append(raw_batch(2))
            for kid in kids:
                assert kid.stdin is not None
                kid.stdin.close()
                kid.wait(timeout=10)
            report.add("process", "raw NDJSON child, CPU-bound calls (per call, wall)", raw_one)
            report.add(
                "process",
                "raw NDJSON children: 2, same calls",
                raw_two,
                floor="raw NDJSON child, CPU-bound calls (per call, wall)",
                note="what 2 processes get from the 2 cores in this run (no target)",
            )
            report.add("process", "1 persistent worker, CPU-bound calls (per call, wall)", one)
            report.add(
                "process",
                "2 persistent workers (options.workers = 2), same calls",
                two,
                floor="1 persistent worker, CPU-bound calls (per call, wall)",
                max_ratio=round(1 / 1.7, 3),
                note="target: >= 1.7x the throughput of one worker on 2 cores",
            )
        finally:
            rt.close()


def _startup_rows(report: Report) -> None:
    n = max(5, report.scale(20))
    report.add(
        "startup", "python -c pass (interpreter floor)", _wall([sys.executable, "-c", "pass"], n)
    )
    report.add(
        "startup",
        "import skillyard (wall, fresh interpreter)",
        _wall([sys.executable, "-c", "import skillyard"], n),
        max_us=150_000,
    )
    script = Path(sys.executable).parent / "skillyard"
    argv = (
        [str(script), "--help"]
        if script.exists()
        else [sys.executable, "-m", "skillyard", "--help"]
    )
    report.add("startup", "skillyard --help (wall)", _wall(argv, n), max_us=300_000)


def run(report: Report) -> None:
    _python_rows(report)
    _process_rows(report)
    _pool_rows(report)
    _startup_rows(report)
    asyncio.set_event_loop(None)
