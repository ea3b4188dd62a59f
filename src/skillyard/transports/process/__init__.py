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
from skillyard.transports.process.persistent import Worker

if TYPE_CHECKING:
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


class ProcessTransport:
    """Runs process skills; keeps one persistent worker per package version."""

    kind = "process"

    def __init__(self, runtime: Runtime | None = None) -> None:
        self.runtime = runtime
        self._workers: dict[tuple[Any, ...], Worker] = {}
        # Cards hash by identity: the hot path finds its worker without building the key.
        self._by_card: dict[Card, Worker] = {}
        self._retiring: set[Worker] = set()
        self._closing: set[asyncio.Task[None]] = set()

    async def call(self, card: Card, args: dict[str, Any], ctx: CallContext) -> RawResult:
        worker = self._by_card.get(card)
        if worker is None or worker.dead is not None or worker.retired:
            if card.options.get("mode") != "worker":
                return await run_oneshot(card, args, ctx)
            key = _worker_key(card)
            worker = self._workers.get(key)
            if worker is None or not worker.usable:
                worker = self._start(card, key, worker)
            if len(self._by_card) > 4096:
                self._by_card.clear()
            self._by_card[card] = worker
        return await worker.call(card, args, ctx)

    def _start(self, card: Card, key: tuple[Any, ...], old: Worker | None) -> Worker:
        self._retiring = {w for w in self._retiring if not w.child.exited.done()}
        if old is not None:
            self._retire(old)
        # A new digest of the same package replaces every worker of the old one.
        for k, w in list(self._workers.items()):
            if k[0] == card.id and k[1] == card.source and k != key:
                del self._workers[k]
                self._retire(w)
        worker = Worker(card, asyncio.get_running_loop())
        self._workers[key] = worker
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
        return [w for w in self._workers.values() if w.usable]

    async def health(self) -> dict[str, Any]:
        return {"ok": True, "workers": [w.info() for w in self._workers.values()]}

    async def aclose(self) -> None:
        workers = [*self._workers.values(), *self._retiring]
        self._workers.clear()
        self._by_card.clear()
        self._retiring.clear()
        await asyncio.gather(*(w.aclose() for w in workers), return_exceptions=True)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


__all__ = ["ProcessTransport"]
