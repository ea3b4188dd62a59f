"""Group commit for the ledger entries of allowed calls, made crash-safe by a spool file.

A SQLite commit costs 70-120 us on the machines we measure, more than the whole
budget of a governed in-process call. So the allowed-call path appends its
entries to a per-process spool file (one ``write(2)``, which survives kill -9)
and a background thread moves them into the hash-chained ledger in batches
(every ``interval`` seconds). The spool offset moved is recorded in the same
transaction as the entries, so nothing is moved twice. When a process dies, the
next runtime that opens the store moves what its spool still holds and records
an ``interrupted`` entry for every call that was allowed but has no result.

Holds, approvals and held executions do not go through here: their state must
be visible to other processes at once, so they commit directly.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import orjson

from skillyard.gate import actions, ledger
from skillyard.gate.ledger import AUTO, Entry
from skillyard.store import Store

MIGRATIONS = [
    ["CREATE TABLE gate_spool (instance TEXT PRIMARY KEY, offset INTEGER NOT NULL)"],
]
ROTATE_BYTES = 8 * 1024 * 1024


def _spool_name(instance: str) -> str:
    return instance.replace(":", "-") + ".spool"


def _instance_of(name: str) -> str:
    return name[: -len(".spool")].replace("-", ":", 1)


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
        e = Entry(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], AUTO, at=v[8])
    except (orjson.JSONDecodeError, IndexError, TypeError):
        return None  # a torn last line: the write never completed
    e.body = ledger.canonical(e.payload, lenient=True)  # already filtered when spooled
    return e


class Journal:
    """Buffers ledger entries and commits them in batches from a background thread."""

    def __init__(
        self, store: Store, *, spool_dir: Path | None, interval: float = 0.01, batch: int = 8192
    ) -> None:
        self.store = store
        self.interval = interval
        self.batch = batch
        store.migrate("gate_spool", MIGRATIONS)
        self._lock = threading.Lock()
        self._queue: list[tuple[list[Entry], int]] = []
        self._queued = 0
        self._offset = 0
        self._open = 0  # calls allowed and not yet finished (rotation waits for none)
        self._fd: int | None = None
        self._path: Path | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if spool_dir is not None:
            spool_dir.mkdir(parents=True, exist_ok=True)
            self._path = spool_dir / _spool_name(actions.INSTANCE)
            self._fd = os.open(
                self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600
            )

    def add(self, entries: list[Entry], *, opens: int = 0, spool: bool = True) -> None:
        """Queue entries (hot path): spool them, then let the flusher commit them.

        ``spool=False`` (results) skips the spool write: if the process dies before the
        flusher commits it, recovery records the call as interrupted, which is still true
        (its result never reached the ledger).
        """
        t = time.time()
        for e in entries:
            if e.at is None:
                e.at = t
        if self._fd is not None and spool:
            data = b"".join([_line(e) for e in entries])
        else:
            data = b""
            for e in entries:
                e.encode()  # hash-ready now, so the flusher does less under the GIL
        with self._lock:
            if data:
                os.write(self._fd, data)  # type: ignore[arg-type]
                self._offset += len(data)
            self._queue.append((entries, self._offset))
            self._queued += len(entries)
            self._open += opens
            inline = self._queued >= self.batch
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="skillyard-ledger", daemon=True
                )
                self._thread.start()
        if inline:
            # Backpressure: the flusher cannot keep up (a slow disk); commit here.
            self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            # Commits (and SQLite's checkpoints, which wait on the disk) happen here, so
            # a call never waits for the disk.
            if self._queue:
                try:
                    self.flush()
                except Exception:  # the store is closing or busy: retry next tick
                    continue

    def flush(self) -> int:
        """Commit everything queued so far; returns the number of entries moved."""
        with self._lock:
            batch, self._queue = self._queue, []
            self._queued = 0
        if not batch:
            return 0
        entries = [e for group, _ in batch for e in group]
        offset = batch[-1][1]
        try:
            with self.store.transaction() as conn:
                ledger.append(conn, entries)
                if self._fd is not None:
                    conn.execute(
                        "INSERT INTO gate_spool(instance, offset) VALUES(?, ?) ON CONFLICT(instance)"
                        " DO UPDATE SET offset=excluded.offset",
                        (actions.INSTANCE, offset),
                    )
        except BaseException:
            with self._lock:
                self._queue[:0] = batch
                self._queued += len(entries)
            raise
        self._maybe_rotate()
        return len(entries)

    def finished(self) -> None:
        with self._lock:
            self._open -= 1

    def _maybe_rotate(self) -> None:
        with self._lock:
            if self._fd is None or self._offset < ROTATE_BYTES or self._queue or self._open:
                return
            os.ftruncate(self._fd, 0)
            self._offset = 0
        with self.store.transaction() as conn:
            conn.execute("UPDATE gate_spool SET offset=0 WHERE instance=?", (actions.INSTANCE,))

    def close(self) -> None:
        """Stop the flusher, commit what is left and remove the spool file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            assert self._path is not None
            with self.store.transaction() as conn:
                conn.execute("DELETE FROM gate_spool WHERE instance=?", (actions.INSTANCE,))
            self._path.unlink(missing_ok=True)


def recover(store: Store, spool_dir: Path | None) -> int:
    """Move the spools of dead processes into the ledger; mark their open calls interrupted."""
    if spool_dir is None or not spool_dir.is_dir():
        return 0
    store.migrate("gate_spool", MIGRATIONS)
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
        with store.transaction() as conn:
            row = conn.execute(
                "SELECT offset FROM gate_spool WHERE instance=?", (instance,)
            ).fetchone()
            done = row[0] if row else 0
            parsed = [(pos, _from_line(raw)) for pos, raw in _lines(data)]
            open_calls: dict[str, Entry] = {}
            for _, e in parsed:
                if e is None or e.action_id is None:
                    continue
                if e.event == "decided" and e.payload.get("outcome") in ("allow", "none"):
                    open_calls[e.action_id] = e
            # Results are not spooled; the ones that reached the ledger close their call.
            for action_id in list(open_calls):
                if conn.execute(
                    "SELECT 1 FROM gate_ledger WHERE action_id=? AND event='result' LIMIT 1",
                    (action_id,),
                ).fetchone():
                    del open_calls[action_id]
            todo = [e for pos, e in parsed if e is not None and pos >= done]
            for e in open_calls.values():
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
                        AUTO,
                    )
                )
            if todo:
                ledger.append(conn, todo)
            conn.execute("DELETE FROM gate_spool WHERE instance=?", (instance,))
            interrupted += len(open_calls)
        path.unlink(missing_ok=True)
    return interrupted


def _lines(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break  # torn tail
        out.append((pos, data[pos:end]))
        pos = end + 1
    return out
