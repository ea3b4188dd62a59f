"""Group commit for the ledger entries of allowed calls, made crash-safe by a spool file.

A SQLite commit costs 70-120 us on the machines we measure, more than the whole
budget of a governed in-process call. So an allowed call writes its proposal and
decision to a per-process spool file before it runs (a memory-mapped file: a
memcpy, which survives kill -9), and after it runs queues **one** ledger entry, ``call``, that
records proposal, decision, execution and result together. A background thread
commits queued entries into the hash chain in batches (every ``interval``
seconds), off the call path, so a call never waits for the disk.

When a process dies, the next runtime that opens the store reads its spool: a
spooled record whose action never reached the ledger is appended there, followed
by ``interrupted`` when it was an allowed call (it may or may not have run; it
will not run again). Denials are spooled and queued like any other record.

Holds, approvals and held executions do not go through here: their state must
be visible to other processes at once, so they commit directly.
"""

from __future__ import annotations

import itertools
import mmap
import os
import sqlite3
import threading
import time
from pathlib import Path

import orjson

from skillyard.gate import actions, ledger
from skillyard.gate.ledger import Entry
from skillyard.store import Store

ROTATE_BYTES = 2 * 1024 * 1024


_journals = itertools.count(1)


def _spool_name(instance: str, n: int) -> str:
    # one file per journal: two runtimes of one process on one home must not share a spool
    return f"{instance.replace(':', '-')}-{n}.spool"


def _instance_of(name: str) -> str:
    pid, rand = name[: -len(".spool")].split("-")[:2]
    return f"{pid}:{rand}"


def _line(e: Entry) -> bytes:
    return (
        orjson.dumps(
            [
                e.event,
                e.actor,
                e.tool,
                e.action_id,
                e.card_digest,
                e.policy_version,
                e.privacy,
                orjson.Fragment(e.encode()),
                e.at,
            ]
        )
        + b"\n"
    )


def _from_line(raw: bytes) -> Entry | None:
    try:
        v = orjson.loads(raw)
        e = Entry(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], None, at=v[8])
    except (orjson.JSONDecodeError, IndexError, TypeError):
        return None  # a torn last line: the write never completed
    e.body = ledger.canonical(e.payload, lenient=True)  # already filtered when spooled
    return e


class _Spool:
    """A memory-mapped, append-only file.

    A write is a memcpy, not a system call (an ``write(2)`` append can wait for the file
    system's journal on a busy disk), and the mapped pages belong to the page cache, so
    what was written survives kill -9 of this process.
    """

    def __init__(self, path: Path, size: int = 1 << 22) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size)
            self.mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.pos = 0

    def write(self, data: bytes) -> None:
        end = self.pos + len(data)
        if end > len(self.mm):
            self.mm.resize(max(end, 2 * len(self.mm)))
        self.mm[self.pos : end] = data
        self.pos = end

    def reset(self) -> None:
        """Forget everything written (it is all in the ledger now)."""
        self.mm[: self.pos] = bytes(self.pos)
        self.pos = 0

    def close(self) -> None:
        self.mm.close()


class Journal:
    """Spools intents, queues ledger entries and commits them from a background thread."""

    def __init__(
        self, store: Store, *, spool_dir: Path | None, interval: float = 0.01, batch: int = 8192
    ) -> None:
        self.store = store
        self.interval = interval
        self.batch = batch
        self._lock = threading.Lock()
        self._queue: list[Entry] = []
        self._open = 0  # calls spooled and not yet queued (rotation waits for none)
        self._spool: _Spool | None = None
        self._path: Path | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()
        # A file store gets a connection of our own: a slow commit here must not hold the
        # store's lock, which every other subsystem of this process waits on.
        self._conn: sqlite3.Connection | None = None
        if store.path != ":memory:":
            self._conn = sqlite3.connect(
                store.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        if spool_dir is not None:
            spool_dir.mkdir(parents=True, exist_ok=True)
            self._path = spool_dir / _spool_name(actions.INSTANCE, next(_journals))
            self._spool = _Spool(self._path)

    def intent(self, entry: Entry) -> None:
        """Spool the record of a call about to run (durable before it runs; not queued)."""
        if entry.at is None:
            entry.at = time.time()
        if self._spool is None:
            return
        e = entry  # only recovery reads this line back, so it need not be canonical yet
        data = (
            orjson.dumps(
                [
                    e.event,
                    e.actor,
                    e.tool,
                    e.action_id,
                    e.card_digest,
                    e.policy_version,
                    e.privacy,
                    ledger.filter_payload(e.privacy, e.payload),
                    e.at,
                ],
                default=repr,
            )
            + b"\n"
        )
        with self._lock:
            self._spool.write(data)
            self._open += 1

    def add(self, entry: Entry, *, spool: bool = False, closes: bool = False) -> None:
        """Queue an entry for the ledger (``spool``: also spool it; ``closes``: ends an intent)."""
        if entry.at is None:
            entry.at = time.time()
        data = _line(entry) if spool and self._spool is not None else None
        if data is None:
            entry.encode()  # hash-ready now, so the flusher does less under the GIL
        with self._lock:
            if data is not None:
                self._spool.write(data)  # type: ignore[union-attr]
            self._queue.append(entry)
            if closes and self._spool is not None:
                self._open -= 1
            backlog = len(self._queue) >= self.batch
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="skillyard-ledger", daemon=True
                )
                self._thread.start()
        if backlog:
            self.flush()  # backpressure: the flusher cannot keep up (a slow disk)

    def _loop(self) -> None:
        # Commits (and SQLite's checkpoints, which wait on the disk) happen here.
        while not self._stop.wait(self.interval):
            if self._queue:
                try:
                    self.flush()
                except Exception:  # the store is closing or busy: retry next tick
                    continue

    def flush(self) -> int:
        """Commit everything queued so far; returns the number of entries moved."""
        with self._flush_lock:
            with self._lock:
                batch, self._queue = self._queue, []
            if not batch:
                return 0
            try:
                self._commit(batch)
            except BaseException:
                with self._lock:
                    self._queue[:0] = batch
                raise
        self._maybe_rotate()
        return len(batch)

    def _commit(self, batch: list[Entry]) -> None:
        conn = self._conn
        if conn is None:
            with self.store.transaction() as c:
                ledger.append(c, batch)
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            ledger.append(conn, batch)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _maybe_rotate(self) -> None:
        with self._lock:
            spool = self._spool
            if spool is None or spool.pos < ROTATE_BYTES or self._queue or self._open:
                return
            spool.reset()  # everything spooled is in the ledger now

    def close(self) -> None:
        """Stop the flusher, commit what is left and remove the spool file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._spool is not None:
            self._spool.close()
            self._spool = None
            if self._open == 0 and self._path is not None:
                self._path.unlink(missing_ok=True)


def recover(store: Store, spool_dir: Path | None) -> int:
    """Move what dead processes spooled but never committed; mark their calls interrupted."""
    if spool_dir is None or not spool_dir.is_dir():
        return 0
    interrupted = 0
    for name in sorted(os.listdir(spool_dir)):
        if not name.endswith(".spool"):
            continue
        instance = _instance_of(name)
        if instance == actions.INSTANCE or actions.owner_alive(instance):
            continue
        path = spool_dir / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        records = [e for e in map(_from_line, data.split(b"\n")) if e is not None]
        with store.transaction() as conn:
            todo: list[Entry] = []
            for e in records:
                if (
                    e.action_id is None
                    or conn.execute(
                        "SELECT 1 FROM gate_ledger WHERE action_id=? LIMIT 1", (e.action_id,)
                    ).fetchone()
                ):
                    continue  # it reached the ledger before the process died
                todo.append(e)
                if e.event == "decided" and e.payload.get("outcome") in ("allow", "none"):
                    interrupted += 1
                    todo.append(
                        Entry(
                            "interrupted",
                            "gate",
                            e.tool,
                            e.action_id,
                            e.card_digest,
                            e.policy_version,
                            e.privacy,
                            {"message": actions.INTERRUPTED_CALL, "owner": instance},
                            -1,
                        )
                    )
            if todo:
                ledger.append(conn, todo)
        path.unlink(missing_ok=True)
    return interrupted
