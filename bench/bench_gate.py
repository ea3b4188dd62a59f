"""The governed in-process call: allow rule + ledger on, against the raw call and ungoverned."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from bench.harness import Report, time_async, time_sync
from skillyard import Runtime

POLICY = """
version = "bench"
[contracts.bench-echo]
level = "L1"
reversible = true
blast_radius = "none"

[[rules]]
name = "deny-shell"
permissions = ["shell"]
effect = "deny"

[[rules]]
name = "echo"
tool = "bench-echo"
effect = "allow"
"""
FLOOR = "gate floor: raw python call dict -> dict"
ARGS = {"text": "hello world", "n": 42, "tags": ["a", "b"], "flag": True}


def _echo(args: dict) -> dict:
    return {"text": args["text"], "n": args["n"] + 1}


def _cpu_per_call(loop: asyncio.AbstractEventLoop, call, n: int) -> float:
    """Process CPU microseconds per call, flusher thread included (flushed at the end)."""
    import time

    async def go() -> float:
        t0 = time.process_time()
        for _ in range(n):
            await call()
        return (time.process_time() - t0) * 1e6 / n

    return loop.run_until_complete(go())


def run(report: Report) -> None:
    n = report.scale(20_000)
    report.add("gate", FLOOR, time_sync(lambda: _echo(ARGS), n=n, batch=100))
    tmp = Path(tempfile.mkdtemp(prefix="skillyard-bench-gate-"))
    (tmp / "policy.toml").write_text(POLICY)
    loop = asyncio.new_event_loop()
    try:
        cases = [
            ("ungoverned runtime call (no [gate])", tmp / "plain", {}),
            (
                "governed call: allow rule + ledger on",
                tmp / "gov",
                {"gate": {"policy": str(tmp / "policy.toml")}},
            ),
            ("governed call: ledger-only mode", tmp / "led", {"gate": {"mode": "ledger-only"}}),
        ]
        for name, home, config in cases:
            rt = Runtime.open(home, config=config, roots={})
            rt.tool("bench-echo")(_echo)

            def call(rt: Runtime = rt):
                return rt.call("bench-echo", ARGS)

            samples = time_async(loop, call, n=n, batch=100, warmup=500)
            cpu = _cpu_per_call(loop, call, n)
            if "allow rule" in name:
                report.add(
                    "gate",
                    name,
                    samples,
                    floor=FLOOR,
                    max_us=60,
                    note="file-backed home, memo installed; one ledger entry per call, "
                    "group-committed off the call path",
                )
            else:  # the ungoverned path's own target is reported by bench_core
                report.add("gate", name, samples, floor=FLOOR)
            report.add(
                "gate",
                f"  CPU per call (all threads), {name[:30]}",
                [cpu],
                note="process CPU time incl. the ledger flusher; unaffected by disk waits",
            )
            loop.run_until_complete(rt.aclose())
    finally:
        loop.close()
        shutil.rmtree(tmp, ignore_errors=True)
