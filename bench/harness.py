"""Timing helpers shared by every bench module.

A bench module ``bench/bench_*.py`` defines ``run(report: Report) -> None``. It
measures its raw floor and the skillyard path in the same run and reports rows;
a row with a target says whether the ratio met it. Numbers are medians of batch
means (cases under ~20 us are timed in batches), in microseconds.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    group: str
    name: str
    median_us: float
    p95_us: float
    n: int
    floor: str | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""


@dataclass
class Report:
    quick: bool = False
    rows: list[Row] = field(default_factory=list)

    def scale(self, n: int) -> int:
        return max(10, n // 10) if self.quick else n

    def find(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def add(
        self,
        group: str,
        name: str,
        samples_us: list[float],
        *,
        floor: str | None = None,
        max_ratio: float | None = None,
        max_us: float | None = None,
        note: str = "",
    ) -> Row:
        """Record a row; ``max_ratio`` compares against ``floor``, ``max_us`` is an absolute target."""
        ordered = sorted(samples_us)
        med = statistics.median(ordered)
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
        row = Row(group, name, med, p95, len(samples_us), note=note)
        if floor is not None:
            base = self.find(floor).median_us
            row.floor = floor
            row.ratio = med / base if base else None
            if max_ratio is not None and row.ratio is not None:
                row.target = f"<= {max_ratio:g}x"
                row.met = row.ratio <= max_ratio
        if max_us is not None:
            row.target = ((row.target + ", ") if row.target else "") + f"<= {max_us:g} us"
            row.met = (row.met is not False) and med <= max_us
        self.rows.append(row)
        return row

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows]}


def time_sync(fn: Callable[[], Any], *, n: int, batch: int = 1, warmup: int = 100) -> list[float]:
    """Per-call microseconds: ``n`` calls timed in batches of ``batch``."""
    for _ in range(warmup):
        fn()
    samples = []
    gc.collect()
    for _ in range(max(1, n // batch)):
        t0 = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter_ns() - t0) / 1000 / batch)
    return samples


def time_async(
    loop: asyncio.AbstractEventLoop,
    fn: Callable[[], Awaitable[Any]],
    *,
    n: int,
    batch: int = 1,
    warmup: int = 100,
) -> list[float]:
    """Like :func:`time_sync` for a coroutine function, run inside ``loop``."""

    async def go() -> list[float]:
        for _ in range(warmup):
            await fn()
        samples = []
        gc.collect()
        for _ in range(max(1, n // batch)):
            t0 = time.perf_counter_ns()
            for _ in range(batch):
                await fn()
            samples.append((time.perf_counter_ns() - t0) / 1000 / batch)
        return samples

    return loop.run_until_complete(go())
