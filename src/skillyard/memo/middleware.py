"""The memo step of the pipeline: cassette replay/record, then the result cache.

It sits inside the gate (so a replayed or cached answer still passed policy) and
around execution (so only results that passed output validation are stored).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skillyard.memo.cache import Cache
from skillyard.memo.config import PRIVATE_MODES, MemoConfig
from skillyard.memo.results import pack, unpack

if TYPE_CHECKING:
    from skillyard.card import Card
    from skillyard.memo.cassette import Cassette
    from skillyard.runtime import Runtime
    from skillyard.transports.base import CallContext, Caller, CallResult, EventSink

CallNext = Callable[["CallContext"], Awaitable["CallResult"]]
log = logging.getLogger("skillyard.memo")

# The card's cassette policy, in the VCR.py record modes users know.
CARD_MODES = {"record-replay": "new_episodes", "replay-only": "none", "record-only": "all"}


class Memo:
    """Middleware: serve from a cassette or the cache when allowed, store what is allowed."""

    def __init__(
        self,
        runtime: Runtime,
        config: MemoConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = runtime
        self.config = config or MemoConfig()
        self.cache = Cache(runtime.store, config=self.config, clock=clock)
        self._cassettes: list[Cassette] = []
        self._card_cassettes: dict[Path, Cassette] = {}
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self._modes: dict[int, tuple[Card, str | None]] = {}

    # -- cassettes ------------------------------------------------------------------------

    @property
    def cassette(self) -> Cassette | None:
        """The cassette every call goes through right now (the innermost ``use_cassette``)."""
        return self._cassettes[-1] if self._cassettes else None

    def push_cassette(self, cassette: Cassette) -> None:
        """Make ``cassette`` answer every call until :meth:`pop_cassette`."""
        self._cassettes.append(cassette)
        self.runtime.refresh_middleware()

    def pop_cassette(self, cassette: Cassette) -> None:
        """Stop using ``cassette`` (and save what it recorded)."""
        if cassette in self._cassettes:
            self._cassettes.remove(cassette)
            self.runtime.refresh_middleware()
        cassette.close()

    @property
    def cassette_dir(self) -> Path:
        """Where cassettes named without a directory live."""
        if self.config.cassette_dir is not None:
            return self.config.cassette_dir
        home = self.runtime.home
        return (home.path if home is not None else Path.cwd()) / "cassettes"

    def _card_cassette(self, card: Card) -> Cassette:
        from skillyard.memo.cassette import Cassette

        path = self.cassette_dir / f"{card.name}.{self.config.cassette_format}"
        cassette = self._card_cassettes.get(path)
        if cassette is None:
            cassette = Cassette(
                path,
                mode=CARD_MODES[card.policy.cassette],  # type: ignore[arg-type]
                match_on=self.config.cassette_match_on,
                record_private=self.config.record_private,
                max_bytes=self.config.max_cassette_bytes,
            )
            cassette.open()
            self._card_cassettes[path] = cassette
        return cassette

    # -- the step -------------------------------------------------------------------------

    def cacheable(self, card: Card) -> bool:
        """True when calls to ``card`` may be served from and stored in the cache."""
        policy = card.policy
        return (
            self.config.enabled
            and policy.idempotent
            and policy.cache != "disabled"
            and (policy.privacy not in PRIVATE_MODES or policy.privacy in self.config.cache_private)
        )

    def _mode(self, card: Card) -> str | None:
        """The card's cache mode when it may use the cache (kept per card: this is hot)."""
        hit = self._modes.get(id(card))
        if hit is not None and hit[0] is card:
            return hit[1]
        mode = card.policy.cache if self.cacheable(card) else None
        if len(self._modes) > 4096:
            self._modes.clear()
        self._modes[id(card)] = (card, mode)
        return mode

    def applies(self, card: Card) -> bool:
        """Whether a cache or cassette could serve or record this card's calls right now."""
        return (
            bool(self._cassettes)
            or card.policy.cassette != "disabled"
            or self._mode(card) is not None
        )

    def peek(
        self,
        card: Card,
        args: dict[str, Any],
        caller: Caller,
        call_id: str,
        sink: EventSink | None,
    ) -> CallResult | None:
        """A cache hit from this process's copy, answered before any call context exists.

        The runtime asks the outermost middleware of a card (so never past a gate). Only
        the in-process copy is consulted: anything else (a miss, an entry only SQLite
        holds, a cassette in use) returns None and :meth:`on_call` decides as usual.
        """
        if self._cassettes or card.policy.cassette != "disabled":
            return None
        mode = self._mode(card)
        if mode != "read-through" and mode != "read-only":
            return None
        t0 = time.perf_counter_ns()
        key = self.cache.key(card, caller.principal, args)
        if key is None:
            return None
        payload = self.cache.local(key, card.name)
        if payload is None:
            return None
        return unpack(card.name, call_id, sink, payload, t0)

    async def on_call(self, ctx: CallContext, call_next: CallNext) -> CallResult:
        card = ctx.card
        if self._cassettes or card.policy.cassette != "disabled":
            cassette = self._cassettes[-1] if self._cassettes else self._card_cassette(card)

            async def inner(c: CallContext) -> CallResult:
                mode = self._mode(c.card)
                if mode is None:
                    return await call_next(c)
                return await self._cached(c, call_next, mode)

            return await cassette.handle(ctx, inner)
        mode = self._mode(card)
        if mode is None:
            return await call_next(ctx)
        if mode == "read-through" or mode == "read-only":
            # a hit is answered here, without another coroutine frame: this path is hot
            t0 = time.perf_counter_ns()
            key = self.cache.key(card, ctx.caller.principal, ctx.args)
            if key is None:
                return await call_next(ctx)
            hit = self._lookup(ctx, key, t0)
            if hit is not None:
                ctx.notes["memo.cache_key"] = key
                return hit
            return await self._cached(ctx, call_next, mode, (key, t0))
        return await self._cached(ctx, call_next, mode)

    async def _cached(
        self,
        ctx: CallContext,
        call_next: CallNext,
        mode: str,
        missed: tuple[str, int] | None = None,
    ) -> CallResult:
        """The cache around one call; ``missed`` is (key, start) when a lookup already missed."""
        card = ctx.card
        principal = ctx.caller.principal
        if missed is not None:
            key, t0 = missed
        else:
            t0 = time.perf_counter_ns()
            maybe = self.cache.key(card, principal, ctx.args)
            if maybe is None:
                return await call_next(ctx)
            key = maybe
        ctx.notes["memo.cache_key"] = key
        leader: asyncio.Future[None] | None = None
        if mode == "read-through" or mode == "read-only":
            if missed is None:
                hit = self._lookup(ctx, key, t0)
                if hit is not None:
                    return hit
            waiting = self._inflight.get(key)
            if waiting is not None and mode == "read-through":
                # the same call is already running here: share its answer instead of racing it
                await asyncio.shield(waiting)
                hit = self._lookup(ctx, key, t0)
                if hit is not None:
                    return hit
            if mode == "read-through" and key not in self._inflight:
                leader = asyncio.get_running_loop().create_future()
                self._inflight[key] = leader
        elif mode == "refresh":
            self._safely(self.cache.delete, key)
        try:
            result = await call_next(ctx)
            if (
                mode != "read-only"
                and result.source == "live"
                and result.decision.phase == "completed"
            ):
                scope = "*shared*" if card.policy.cache_shared else principal
                self._store(card, scope, key, result)
            return result
        finally:
            if leader is not None:
                self._inflight.pop(key, None)
                leader.set_result(None)

    def _lookup(self, ctx: CallContext, key: str, t0: int) -> CallResult | None:
        try:
            payload = self.cache.get(key, ctx.card.name)
        except sqlite3.Error as exc:
            log.warning("cache unavailable (%s); calling through", exc)
            return None
        if payload is None:
            return None
        result = unpack(ctx.card.name, ctx.call_id, ctx.sink, payload, t0)
        if result is None:
            log.warning("dropping an unreadable cache entry for %s", ctx.card.name)
            self._safely(self.cache.delete, key)
            return None
        ctx.notes["memo.source"] = "cache"
        return result

    def _store(self, card: Card, scope: str, key: str, result: CallResult) -> None:
        try:
            payload = pack(result)
        except TypeError:
            return  # not plain JSON: nothing faithful to store
        ttl = card.policy.cache_ttl_sec or self.config.default_ttl_sec
        self._safely(
            self.cache.put,
            key,
            payload,
            tool=card.name,
            principal=scope,
            digest=card.digest,
            ttl_sec=ttl,
        )

    def _safely(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """A broken or busy cache never fails a call: it behaves as a miss."""
        try:
            return fn(*args, **kw)
        except sqlite3.Error as exc:
            log.warning("cache unavailable (%s); calling through", exc)
            return None

    async def aclose(self) -> None:
        """Save recording cassettes and write pending cache counters."""
        for cassette in [*self._cassettes, *self._card_cassettes.values()]:
            cassette.close()
        self._cassettes.clear()
        self._card_cassettes.clear()
        self._safely(self.cache.close)
