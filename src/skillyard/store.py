"""The embedded SQLite state of one runtime home.

One file (``state.db``) in WAL mode holds everything that must survive a crash:
holds, approvals, the ledger, the cache, sessions, config and kv. Each
subsystem owns its tables and brings them up to date with :meth:`Store.migrate`,
so no module needs to know another's schema.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_BUSY_TIMEOUT_MS = 10_000


class Store:
    """A thread-safe handle on the runtime's SQLite file (``:memory:`` for tests)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._lock = threading.RLock()
        self._migrated: set[str] = set()
        self._memory_conn: sqlite3.Connection | None = None
        if self.path == ":memory:":
            self._memory_conn = self._open()
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self.transaction() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS schema_versions (name TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        if self.path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (one shared connection for ``:memory:``)."""
        if self._memory_conn is not None:
            return self._memory_conn
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self, *, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): all or nothing, safe across processes."""
        conn = self.conn
        with self._lock:
            conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run one statement outside an explicit transaction (autocommit)."""
        with self._lock:
            return self.conn.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read and return all rows."""
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    def migrate(self, name: str, steps: Sequence[str | Sequence[str]]) -> None:
        """Bring subsystem ``name`` to ``len(steps)``: step *i* is SQL run once, in order."""
        if name in self._migrated:
            return
        with self.transaction() as c:
            row = c.execute("SELECT version FROM schema_versions WHERE name=?", (name,)).fetchone()
            current = row[0] if row else 0
            for step in steps[current:]:
                for sql in [step] if isinstance(step, str) else step:
                    c.execute(sql)
            if current != len(steps):
                c.execute(
                    "INSERT INTO schema_versions(name, version) VALUES(?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET version=excluded.version",
                    (name, len(steps)),
                )
        self._migrated.add(name)

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._memory_conn is not None:
            self._memory_conn.close()
            self._memory_conn = None
