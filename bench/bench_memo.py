"""What a cache hit and a cassette replay cost, next to the calls they save, in the same run.

Rows: the trivial Python skill called live through ``Runtime.call`` (memo
installed, cache off); the same call answered from the cache (in-memory store,
on-disk WAL store, and on-disk with the in-process copy turned off so every hit
reads SQLite); a cassette replay; and, when the process transport is present, a
persistent process worker call next to a cache hit of the same skill. Target
(PERFORMANCE.md): a cache hit costs <= 1/5 of a persistent process skill call.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from bench.harness import Report, time_async

ARGS = {"skill": "echo", "text": "hello world", "n": 42, "flag": True}
LIVE = "memo: python skill call, live (cache off)"
PROCESS = "memo: process skill call, persistent worker (cache off)"


def skill(args: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "text": args["text"], "n": args["n"] + 1}


WORKER = """
from skillyard.worker import serve

def echo(args, ctx):
    return {"ok": True, "text": args["text"], "n": args["n"] + 1}

serve({"echo": echo})
"""


def _python_rows(report: Report, tmp: Path) -> None:
    from skillyard import Policy, SyncRuntime
    from skillyard.memo import memo_of, use_cassette

    cached = Policy(cache="read-through", idempotent=True)
    n = report.scale(30_000)
    rt = SyncRuntime.memory()
    try:
        rt.tool("bench-live")(skill)
        rt.tool("bench-cached", policy=cached)(skill)
        call = rt.runtime.call
        report.add(
            "memo", LIVE, time_async(rt._loop, lambda: call("bench-live", ARGS), n=n, batch=50)
        )
        rt.call("bench-cached", ARGS)
        report.add(
            "memo",
            "memo: cache hit, in-memory store",
            time_async(rt._loop, lambda: call("bench-cached", ARGS), n=n, batch=50),
            floor=LIVE,
        )
        with use_cassette(rt.runtime, "bench", directory=tmp, mode="once"):
            rt.call("bench-live", ARGS)
        with use_cassette(
            rt.runtime, "bench", directory=tmp, mode="none", allow_playback_repeats=True
        ):
            report.add(
                "memo",
                "memo: cassette replay",
                time_async(rt._loop, lambda: call("bench-live", ARGS), n=n, batch=50),
                floor=LIVE,
            )
    finally:
        rt.close()

    disk = SyncRuntime.open(tmp / "home")
    try:
        disk.tool("bench-cached", policy=cached)(skill)
        call = disk.runtime.call
        disk.call("bench-cached", ARGS)
        report.add(
            "memo",
            "memo: cache hit, on-disk WAL store",
            time_async(disk._loop, lambda: call("bench-cached", ARGS), n=n, batch=50),
            floor=LIVE,
        )
        counter = iter(range(10**9))
        report.add(
            "memo",
            "memo: cache miss and store, on-disk WAL store",
            time_async(
                disk._loop,
                lambda: call("bench-cached", {**ARGS, "n": next(counter)}),
                n=report.scale(3_000),
                warmup=20,
            ),
            floor=LIVE,
            note="what a first call pays on top of running the skill",
        )
        memo = memo_of(disk.runtime)
        assert memo is not None and memo.cache._gen is not None
        memo.cache._gen.shared = False  # no in-process copy: every hit reads SQLite
        memo.cache.forget_local()
        report.add(
            "memo",
            "memo: cache hit, on-disk, SQLite read per hit",
            time_async(disk._loop, lambda: call("bench-cached", ARGS), n=report.scale(10_000)),
            floor=LIVE,
            note="what the in-process copy saves",
        )
    finally:
        disk.close()


def _process_rows(report: Report, tmp: Path) -> None:
    from skillyard import SyncRuntime

    pkg = tmp / "skills" / "bench-proc"
    pkg.mkdir(parents=True)
    (pkg / "main.py").write_text(textwrap.dedent(WORKER))
    (pkg / "skill.toml").write_text(
        'version = "1.0.0"\nruntime = "process"\nentry = ["{python}", "main.py"]\n'
        '[options]\nmode = "worker"\n'
        '[[methods]]\nname = "echo"\n'
        '[[methods]]\nname = "cached"\nhandler = "echo"\n'
        'policy = { cache = "read-through", idempotent = true }\n'
    )
    rt = SyncRuntime.open(tmp / "proc-home", roots={"project": [tmp / "skills"]})
    try:
        call = rt.runtime.call
        n = report.scale(5_000)
        rt.call("bench-proc-echo", ARGS)
        report.add(
            "memo",
            PROCESS,
            time_async(rt._loop, lambda: call("bench-proc-echo", ARGS), n=n, warmup=200),
        )
        rt.call("bench-proc-cached", ARGS)
        report.add(
            "memo",
            "memo: cache hit of the process skill (on-disk store)",
            time_async(rt._loop, lambda: call("bench-proc-cached", ARGS), n=n * 4, batch=50),
            floor=PROCESS,
            max_ratio=0.2,
        )
    finally:
        rt.close()


def run(report: Report) -> None:
    with tempfile.TemporaryDirectory() as d:
        _python_rows(report, Path(d))
    if importlib.util.find_spec("skillyard.transports.process") is None:
        print(
            "bench_memo: no process transport in this tree; process rows skipped", file=sys.stderr
        )
        return
    with tempfile.TemporaryDirectory() as d:
        _process_rows(report, Path(d))
