"""Process skills: a child process per call (``json``, ``lines``) or a persistent worker.

Selected by ``runtime = "process"`` in skill.toml. The card's operation is the
command as a JSON array of argv (``{python}`` as argv[0] means this
interpreter); ``options.mode`` picks how the runtime talks to it:

- ``json``: one process per call; the arguments as JSON on stdin, one JSON
  object on stdout is the output (``{"error": {...}}`` reports a skill error).
- ``lines``: one process per call; every stdout line is streamed as a ``delta``
  event and the output is ``{"text", "lines"}``.
- ``worker``: a persistent child speaking newline-delimited JSON-RPC 2.0,
  several calls in flight, reverse ``host.*`` requests (docs/process-protocol.md).

Every child gets a scrubbed environment, a private HOME, its own process
group (killed as a whole on timeout), rlimits from the card's limits, and an
output cap; crashes and garbage become :class:`~skillyard.errors.SkillCrashed`
and :class:`~skillyard.errors.ProtocolError` with the end of its stderr.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from skillyard.transports.base import CallContext, RawResult
from skillyard.transports.process.oneshot import run_oneshot
from skillyard.transports.process.persistent import Flight, Worker

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from skillyard.card import Card
    from skillyard.runtime import Runtime


def _worker_key(card: Card) -> tuple[Any, ...]:
    opts = card.options
    lim = card.limits
    return (
        card.id,
        card.source,
        card.digest,
        card.operation,
        tuple(opts.get("env") or ()),
        opts.get("cwd"),
        lim.cpu_sec,
        lim.memory_mb,
        lim.open_files,
    )


class _Pool:
    """The workers of one package version (``options.workers`` of them at most)."""

    __slots__ = ("size", "workers")

    def __init__(self, size: int) -> None:
        self.size = size
        self.workers: list[Worker] = []

    def pick(self) -> Worker | None:
        """An idle worker, else the least loaded one when the pool is full, else None (grow).

        The load counts the calls waiting for a worker's slots too: counting only the
        calls in flight sent every call over ``concurrency`` to the first full worker
        (24 of 40 calls on one of two workers).
        """
        best: Worker | None = None
        alive = 0
        for w in self.workers:
            if w.dead is None and not w.retired:
                if not w.pending and not w.queued:
                    return w
                alive += 1
                if best is None or w.load < best.load:
                    best = w
        return best if alive >= self.size else None


class ProcessTransport:
    """Runs process skills; keeps a pool of persistent workers per package version."""

    kind = "process"

    def __init__(self, runtime: Runtime | None = None) -> None:
        self.runtime = runtime
        self._pools: dict[tuple[Any, ...], _Pool] = {}
        # Cards hash by identity: the hot path finds its pool without building the key.
        self._by_card: dict[Card, _Pool] = {}
        self._retiring: set[Worker] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._flight = Flight()

    def call(
        self, card: Card, args: dict[str, Any], ctx: CallContext
    ) -> Coroutine[Any, Any, RawResult]:
        # A plain function handing back the worker's coroutine: one coroutine frame less
        # per call than ``return await worker.call(...)``.
        pool = self._by_card.get(card)
        if pool is None:
            if card.options.get("mode") != "worker":
                return run_oneshot(card, args, ctx)
            pool = self._pool(card)
            if len(self._by_card) > 4096:
                self._by_card.clear()
            self._by_card[card] = pool
        worker = pool.pick()
        if worker is None:
            worker = self._start(card, pool)
        return worker.call(card, args, ctx)

    def _pool(self, card: Card) -> _Pool:
        key = _worker_key(card)
        pool = self._pools.get(key)
        if pool is None:
            # A new version of the same package replaces every worker of the old one.
            for k, old in list(self._pools.items()):
                if k[0] == card.id and k[1] == card.source:
                    del self._pools[k]
                    for w in old.workers:
                        self._retire(w)
            self._by_card = {c: p for c, p in self._by_card.items() if p in self._pools.values()}
            pool = self._pools[key] = _Pool(int(card.options.get("workers") or 1))
        return pool

    def _start(self, card: Card, pool: _Pool) -> Worker:
        self._retiring = {w for w in self._retiring if not w.child.exited.done()}
        for w in pool.workers:
            if w.retired and w.dead is None:
                self._retiring.add(w)
        pool.workers = [w for w in pool.workers if w.dead is None and not w.retired]
        worker = Worker(card, asyncio.get_running_loop(), self._flight)
        pool.workers.append(worker)
        return worker

    def _retire(self, worker: Worker) -> None:
        if worker.dead is not None and worker.child.exited.done():
            return
        worker.retired = True
        if not worker.pending:
            task = asyncio.get_running_loop().create_task(worker.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        else:
            self._retiring.add(worker)

    def workers(self) -> list[Worker]:
        """The workers currently serving calls."""
        return [w for p in self._pools.values() for w in p.workers if w.usable]

    async def health(self) -> dict[str, Any]:
        return {
            "ok": True,
            "workers": [w.info() for p in self._pools.values() for w in p.workers],
        }

    async def aclose(self) -> None:
        workers = [w for p in self._pools.values() for w in p.workers]
        workers += self._retiring
        self._pools.clear()
        self._by_card.clear()
        self._retiring.clear()
        await asyncio.gather(*(w.aclose() for w in workers), return_exceptions=True)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


__all__ = ["ProcessTransport"]
