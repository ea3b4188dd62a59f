"""The persistent result cache: SQLite rows keyed by a versioned hash, LRU-capped, TTL-aware.

The key covers everything that could change an answer: the key version, the
card's digest (so new code never sees old results), tool name, semantic key,
privacy mode, the caller's scope (principal, unless the card says shared), both
schemas and the canonical JSON of the arguments.

Several processes may share one cache: every write is a ``BEGIN IMMEDIATE``
transaction, sizes are kept in a totals row by triggers, and eviction runs in
the same transaction as the insert. A hit must be far cheaper than the call it
saves, so each process keeps a small in-memory copy of rows it has read, valid
while a shared change counter (an 8-byte memory-mapped file next to the
database, bumped after every write) has not moved. LRU order and hit counts are
written back in batches, not on every hit.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from skillyard.memo.config import MemoConfig

try:  # POSIX only; without it every hit reads SQLite (still correct, just slower)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import sqlite3

    from skillyard.card import Card
    from skillyard.store import Store

KEY_VERSION = "memo-v1"
_LOCAL_MAX_ENTRIES = 2048
_LOCAL_MAX_BYTES = 32 * 1024 * 1024  # the in-process copy never holds more than this
_LOCAL_MAX_PAYLOAD = 256 * 1024  # bigger results are read from SQLite on every hit
_LOCAL_MAX_AGE_SEC = 10.0  # bounds staleness if a writer died between commit and bump
_FLUSH_EVERY = 256
_FLUSH_AFTER_SEC = 1.0
_STAT_FIELDS = ("hits", "misses", "stores", "evictions", "expired", "rejected")
_HITS, _MISSES, _STORES, _EVICTIONS, _EXPIRED, _REJECTED = range(len(_STAT_FIELDS))

MIGRATIONS: list[str | list[str]] = [
    [
        """CREATE TABLE memo_cache (
            key TEXT PRIMARY KEY,
            tool TEXT NOT NULL,
            principal TEXT NOT NULL,
            digest TEXT NOT NULL,
            payload BLOB NOT NULL,
            size INTEGER NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL,
            used_seq INTEGER NOT NULL
        )""",
        "CREATE INDEX memo_cache_lru ON memo_cache(used_seq)",
        "CREATE INDEX memo_cache_tool ON memo_cache(tool)",
        "CREATE INDEX memo_cache_expiry ON memo_cache(expires_at) WHERE expires_at IS NOT NULL",
        """CREATE TABLE memo_totals (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            entries INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            seq INTEGER NOT NULL
        )""",
        "INSERT INTO memo_totals(id, entries, bytes, seq) VALUES (1, 0, 0, 0)",
        """CREATE TABLE memo_stats (
            tool TEXT PRIMARY KEY,
            hits INTEGER NOT NULL DEFAULT 0,
            misses INTEGER NOT NULL DEFAULT 0,
            stores INTEGER NOT NULL DEFAULT 0,
            evictions INTEGER NOT NULL DEFAULT 0,
            expired INTEGER NOT NULL DEFAULT 0,
            rejected INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TRIGGER memo_cache_ins AFTER INSERT ON memo_cache BEGIN
            UPDATE memo_totals SET entries = entries + 1, bytes = bytes + NEW.size WHERE id = 1;
        END""",
        """CREATE TRIGGER memo_cache_del AFTER DELETE ON memo_cache BEGIN
            UPDATE memo_totals SET entries = entries - 1, bytes = bytes - OLD.size WHERE id = 1;
        END""",
        """CREATE TRIGGER memo_cache_upd AFTER UPDATE OF size ON memo_cache BEGIN
            UPDATE memo_totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 1;
        END""",
    ]
]


def canonical(value: Any) -> bytes:
    """Canonical JSON (sorted keys, no whitespace); raises TypeError for non-JSON values."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class _Generation:
    """A cross-process change counter: an 8-byte memory-mapped file, bumped under flock."""

    def __init__(self, path: str | None) -> None:
        self._fd = -1
        self._mm: mmap.mmap | None = None
        self._value = 0
        self.shared = path is None  # an in-memory store has no other process to hear from
        if path is None or fcntl is None:
            return
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return
        try:
            if os.fstat(fd).st_size < 8:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    if os.fstat(fd).st_size < 8:
                        os.ftruncate(fd, 8)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            self._mm = mmap.mmap(fd, 8)
        except (OSError, ValueError):
            os.close(fd)
            return
        self._fd = fd
        self.shared = True
        # Read on every cache hit: a native 8-byte view is ~5x cheaper than decoding a
        # slice, and the file is little-endian, so only little-endian hosts use it.
        if sys.byteorder == "little":
            self._view = memoryview(self._mm).cast("Q")

    _view: memoryview | None = None

    def read(self) -> int:
        view = self._view
        if view is not None:
            return view[0]
        mm = self._mm
        return int.from_bytes(mm[:8], "little") if mm is not None else self._value

    def bump(self) -> None:
        mm = self._mm
        if mm is None or fcntl is None:
            self._value += 1
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            mm[:8] = ((int.from_bytes(mm[:8], "little") + 1) % (1 << 63)).to_bytes(8, "little")
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(frozen=True, slots=True)
class ToolStats:
    """Counters and size of one tool's cache entries."""

    tool: str
    entries: int = 0
    bytes: int = 0
    hits: int = 0
    misses: int = 0
    stores: int = 0
    evictions: int = 0
    expired: int = 0
    rejected: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}


class Cache:
    """The result cache of one runtime store (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        config: MemoConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config or MemoConfig()
        self.clock = clock
        self._ready = False
        self._gen: _Generation | None = None
        self._prefixes: dict[int, tuple[Card, str]] = {}
        self._local: dict[str, tuple[bytes, float | None, int, float]] = {}
        self._local_bytes = 0
        self._hexes: dict[bytes, str] = {}
        self._touches: dict[str, None] = {}
        self._pending: dict[str, list[int]] = {}
        self._last_flush = time.monotonic()

    # -- keys -----------------------------------------------------------------------------

    def _prefix(self, card: Card) -> str:
        hit = self._prefixes.get(id(card))
        if hit is not None and hit[0] is card:
            return hit[1]
        policy = card.policy
        parts = [
            KEY_VERSION,
            card.name,
            # cards without a package digest (registered functions) are bound to their version
            card.digest or f"unbound:{card.operation}@{card.version}",
            policy.semantic_key or "",
            policy.privacy,
            card.input_schema,
            card.output_schema,
        ]
        prefix = hashlib.sha256(canonical(parts)).hexdigest()
        if len(self._prefixes) > 4096:
            self._prefixes.clear()
        self._prefixes[id(card)] = (card, prefix)
        return prefix

    def key(self, card: Card, principal: str, args: Any) -> str | None:
        """The cache key for one call, or ``None`` when the arguments are not plain JSON."""
        scope = "*shared*" if card.policy.cache_shared else principal
        try:
            body = canonical([self._prefix(card), scope, args])
        except TypeError:
            return None
        hexes = self._hexes
        key = hexes.get(body)  # hashing the body for a dict is cheaper than sha256 on a hit
        if key is None:
            key = hashlib.sha256(body).hexdigest()
            if len(body) <= 4096:
                if len(hexes) >= _LOCAL_MAX_ENTRIES:
                    hexes.clear()
                hexes[body] = key
        return key

    # -- setup ----------------------------------------------------------------------------

    def _setup(self) -> _Generation:
        if self._gen is None:
            self.store.migrate("memo", MIGRATIONS)
            path = self.store.path
            self._gen = _Generation(None if path == ":memory:" else path + ".memo-gen")
            self._ready = True
        return self._gen

    # -- reads ----------------------------------------------------------------------------

    def local(self, key: str, tool: str) -> bytes | None:
        """The payload for ``key`` from this process's copy when it is still valid, else
        ``None`` (the copy holds nothing, or nothing current: :meth:`get` decides)."""
        local = self._local.get(key)
        if local is None:
            return None
        gen = self._gen or self._setup()
        payload, expires, stamp, filled = local
        now = time.monotonic()
        if (
            stamp == gen.read()
            and (expires is None or expires > self.clock())
            and now - filled < _LOCAL_MAX_AGE_SEC
        ):
            self._hit(key, tool, now)
            return payload
        self._forget(key)
        return None

    def get(self, key: str, tool: str) -> bytes | None:
        """The stored payload for ``key``, or ``None`` (missing or expired)."""
        gen = self._gen or self._setup()
        payload = self.local(key, tool)
        if payload is not None:
            return payload
        stamp = gen.read()
        rows = self.store.query("SELECT payload, expires_at FROM memo_cache WHERE key = ?", (key,))
        if not rows:
            self._count(tool, _MISSES)
            return None
        payload, expires = rows[0]
        if expires is not None and expires <= self.clock():
            self._count(tool, _EXPIRED)
            self._count(tool, _MISSES)
            return None
        payload = bytes(payload)
        now = time.monotonic()
        if gen.shared and len(payload) <= _LOCAL_MAX_PAYLOAD:
            local_map = self._local
            while local_map and (
                len(local_map) >= _LOCAL_MAX_ENTRIES
                or self._local_bytes + len(payload) > _LOCAL_MAX_BYTES
            ):
                oldest = next(iter(local_map))
                self._local_bytes -= len(local_map.pop(oldest)[0])
            local_map[key] = (payload, expires, stamp, now)
            self._local_bytes += len(payload)
        self._hit(key, tool, now)
        return payload

    def _forget(self, key: str) -> None:
        entry = self._local.pop(key, None)
        if entry is not None:
            self._local_bytes -= len(entry[0])

    def forget_local(self) -> None:
        """Drop this process's in-memory copy (the next hits read SQLite again)."""
        self._local.clear()
        self._local_bytes = 0

    def _hit(self, key: str, tool: str, now: float) -> None:
        touches = self._touches
        if key in touches:
            del touches[key]
        touches[key] = None
        row = self._pending.get(tool)
        if row is None:
            row = self._pending[tool] = [0] * len(_STAT_FIELDS)
        row[_HITS] += 1
        if len(touches) >= _FLUSH_EVERY or now - self._last_flush > _FLUSH_AFTER_SEC:
            self.flush()

    def _count(self, tool: str, what: int, n: int = 1) -> None:
        row = self._pending.get(tool)
        if row is None:
            row = self._pending[tool] = [0] * len(_STAT_FIELDS)
        row[what] += n

    # -- writes ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Write batched LRU touches and counters to the database."""
        self._last_flush = time.monotonic()
        if not self._touches and not self._pending:
            return
        self._setup()
        with self.store.transaction() as c:
            self._flush_in(c)

    def _flush_in(self, c: sqlite3.Connection) -> None:
        touches, self._touches = list(self._touches), {}
        pending, self._pending = self._pending, {}
        if touches:
            (top,) = c.execute(
                "UPDATE memo_totals SET seq = seq + ? WHERE id = 1 RETURNING seq", (len(touches),)
            ).fetchone()
            first = top - len(touches) + 1
            c.executemany(
                "UPDATE memo_cache SET used_seq = ? WHERE key = ?",
                [(first + i, k) for i, k in enumerate(touches)],
            )
        if pending:
            cols = ", ".join(_STAT_FIELDS)
            sets = ", ".join(f"{f} = {f} + excluded.{f}" for f in _STAT_FIELDS)
            c.executemany(
                f"INSERT INTO memo_stats(tool, {cols}) VALUES (?{', ?' * len(_STAT_FIELDS)}) "
                f"ON CONFLICT(tool) DO UPDATE SET {sets}",
                [(tool, *row) for tool, row in pending.items()],
            )

    def put(
        self,
        key: str,
        payload: bytes,
        *,
        tool: str,
        principal: str,
        digest: str,
        ttl_sec: float | None,
    ) -> bool:
        """Store ``payload`` under ``key`` (replacing it); False when it is over the size caps."""
        gen = self._gen or self._setup()
        size = len(payload)
        if size > self.config.max_entry_bytes or size > self.config.max_bytes:
            self._count(tool, _REJECTED)
            return False
        now = self.clock()
        expires = now + ttl_sec if ttl_sec else None
        with self.store.transaction() as c:
            self._flush_in(c)
            (seq,) = c.execute(
                "UPDATE memo_totals SET seq = seq + 1 WHERE id = 1 RETURNING seq"
            ).fetchone()
            c.execute(
                "INSERT INTO memo_cache(key, tool, principal, digest, payload, size, created_at, "
                "expires_at, used_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET payload = excluded.payload, size = excluded.size, "
                "created_at = excluded.created_at, expires_at = excluded.expires_at, "
                "used_seq = excluded.used_seq",
                (key, tool, principal, digest, payload, size, now, expires, seq),
            )
            self._count(tool, _STORES)
            self._evict(c, now, keep=key)
            self._flush_in(c)
        self._forget(key)
        gen.bump()
        return True

    def _evict(self, c: sqlite3.Connection, now: float, *, keep: str) -> None:
        cfg = self.config
        entries, total = c.execute("SELECT entries, bytes FROM memo_totals WHERE id = 1").fetchone()
        if entries <= cfg.max_entries and total <= cfg.max_bytes:
            return
        for (tool,) in c.execute(
            "DELETE FROM memo_cache WHERE expires_at IS NOT NULL AND expires_at <= ? "
            "RETURNING tool",
            (now,),
        ).fetchall():
            self._count(tool, _EXPIRED)
        entries, total = c.execute("SELECT entries, bytes FROM memo_totals WHERE id = 1").fetchone()
        while entries > cfg.max_entries or total > cfg.max_bytes:
            batch = c.execute(
                "SELECT key, tool, size FROM memo_cache WHERE key != ? ORDER BY used_seq LIMIT 64",
                (keep,),
            ).fetchall()
            if not batch:
                break
            doomed = []
            for key, tool, size in batch:
                if entries <= cfg.max_entries and total <= cfg.max_bytes:
                    break
                doomed.append((key,))
                entries -= 1
                total -= size
                self._count(tool, _EVICTIONS)
            c.executemany("DELETE FROM memo_cache WHERE key = ?", doomed)

    def delete(self, key: str) -> bool:
        """Remove one entry; True when there was one."""
        gen = self._gen or self._setup()
        self._forget(key)
        self._touches.pop(key, None)
        with self.store.transaction() as c:
            n = c.execute("DELETE FROM memo_cache WHERE key = ?", (key,)).rowcount
        if n:
            gen.bump()
        return bool(n)

    def clear(self, tool: str | None = None, *, expired_only: bool = False) -> int:
        """Remove every entry (of ``tool``, or only expired ones); returns how many."""
        gen = self._setup()
        where: list[str] = []
        params: list[Any] = []
        if tool is not None:
            where.append("tool = ?")
            params.append(tool)
        if expired_only:
            where.append("expires_at IS NOT NULL AND expires_at <= ?")
            params.append(self.clock())
        sql = "DELETE FROM memo_cache" + (" WHERE " + " AND ".join(where) if where else "")
        with self.store.transaction() as c:
            self._flush_in(c)
            n = c.execute(sql, params).rowcount
            if tool is None and not expired_only:
                c.execute("DELETE FROM memo_stats")
            elif tool is not None and not expired_only:
                c.execute("DELETE FROM memo_stats WHERE tool = ?", (tool,))
        self.forget_local()
        self._touches.clear()
        gen.bump()
        return int(n)

    # -- reporting ------------------------------------------------------------------------

    def stats(self, tool: str | None = None) -> dict[str, Any]:
        """Totals, limits and per-tool counters (hits, misses, stores, evictions...)."""
        self.flush()
        self._setup()
        per: dict[str, dict[str, int]] = {}
        filt, params = (" WHERE tool = ?", (tool,)) if tool is not None else ("", ())
        for name, n, size in self.store.query(
            f"SELECT tool, COUNT(*), COALESCE(SUM(size), 0) FROM memo_cache{filt} GROUP BY tool",
            params,
        ):
            per.setdefault(name, {})
            per[name].update(entries=n, bytes=size)
        cols = ", ".join(_STAT_FIELDS)
        for row in self.store.query(f"SELECT tool, {cols} FROM memo_stats{filt}", params):
            per.setdefault(row[0], {}).update(zip(_STAT_FIELDS, row[1:], strict=True))
        tools = [ToolStats(tool=name, **vals) for name, vals in sorted(per.items())]
        entries, total = self.store.query("SELECT entries, bytes FROM memo_totals WHERE id = 1")[0]
        return {
            "entries": entries,
            "bytes": total,
            "max_entries": self.config.max_entries,
            "max_bytes": self.config.max_bytes,
            "default_ttl_sec": self.config.default_ttl_sec,
            "tools": [t.to_dict() for t in tools],
        }

    def close(self) -> None:
        """Write pending counters and release the change counter."""
        if self._ready:
            try:
                self.flush()
            finally:
                if self._gen is not None:
                    self._gen.close()
                    self._gen = None
                self._ready = False
