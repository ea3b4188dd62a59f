"""The ledger: an append-only, hash-chained event log in the runtime's SQLite store.

Every entry records ``seq``, time, event, actor (the caller's principal), tool,
action id, card digest, policy version, causal parent (the previous entry of the
same action), the privacy mode applied, the stored payload and its hash, the
previous entry's hash and its own hash. Changing, deleting or reordering any
entry breaks the chain at that entry, which :func:`verify` reports by ``seq``.

Appends happen inside the caller's ``BEGIN IMMEDIATE`` transaction, so several
processes can write one ledger and a gate state change and its ledger entries
commit together or not at all.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from skillyard.gate.canon import canonical, digest, iso
from skillyard.store import Store

GENESIS = "sha256:" + "0" * 64
EVENTS = (
    "call",
    "decided",
    "approval",
    "approval_rejected",
    "claimed",
    "result",
    "expired",
    "interrupted",
)
_COLUMNS = (
    "seq, at, event, actor, tool, action_id, card_digest, policy_version, parent, privacy, "
    "payload, payload_hash, prev_hash, hash"
)
MIGRATIONS = [
    [
        "CREATE TABLE gate_ledger (seq INTEGER PRIMARY KEY, at TEXT NOT NULL, event TEXT NOT NULL,"
        " actor TEXT, tool TEXT, action_id TEXT, card_digest TEXT, policy_version TEXT,"
        " parent INTEGER, privacy TEXT NOT NULL, payload TEXT NOT NULL,"
        " payload_hash TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
        "CREATE INDEX gate_ledger_action ON gate_ledger(action_id, seq)",
        "CREATE TABLE gate_ledger_head (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " seq INTEGER NOT NULL, hash TEXT NOT NULL)",
    ]
]
RAW_FIELDS = ("args", "output", "content", "message")


def migrate(store: Store) -> None:
    store.migrate("gate_ledger", MIGRATIONS)


def filter_payload(privacy: str, payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """What the privacy mode lets the ledger keep of ``payload``.

    ``metadata-only``: no arguments, outputs or messages at all; ``no-raw``: their
    hashes only; ``local-only`` and ``allow-raw``: the raw values (``local-only``
    entries are reduced to hashes by ``audit export`` unless asked otherwise).
    """
    if privacy in ("allow-raw", "local-only"):
        return payload
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if key in RAW_FIELDS:
            if privacy == "no-raw":
                out[key + "_hash"] = digest(value)
        else:
            out[key] = value
    return out


def _entry_hash(row: tuple[Any, ...]) -> str:
    """sha256 over the fields joined by U+001F (None as empty): seq, at, event, actor, tool,
    action_id, card_digest, policy_version, parent, privacy, payload_hash, prev_hash."""
    text = "\x1f".join([str(v) if v is not None else "" for v in row])
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


AUTO = -2  # parent: the latest entry of the same action


def _s(v: Any) -> str:
    return "" if v is None else str(v)


@dataclass(slots=True)
class Entry:
    """One event to append.

    ``parent`` is a seq, ``-1`` for "the entry before in this batch", or :data:`AUTO` for
    "the latest entry of the same action". ``at`` is unix seconds (default: when appended).
    """

    event: str
    actor: str | None
    tool: str | None
    action_id: str | None
    card_digest: str | None
    policy_version: str | None
    privacy: str
    payload: Mapping[str, Any]
    parent: int | None = None
    at: float | None = None
    body: bytes | None = None  # the filtered, canonical payload when already computed

    def encode(self) -> bytes:
        """The stored payload: privacy-filtered canonical JSON (computed once)."""
        if self.body is None:
            self.body = canonical(filter_payload(self.privacy, self.payload), lenient=True)
        return self.body


def append(conn: sqlite3.Connection, entries: list[Entry]) -> list[int]:
    """Append entries inside the caller's write transaction; returns their seqs."""
    head = conn.execute("SELECT seq, hash FROM gate_ledger_head WHERE id=1").fetchone()
    seq, prev = (head[0], head[1]) if head else (0, GENESIS)
    now = time.time()
    seqs: list[int] = []
    latest: dict[str, int] = {}
    rows = []
    sec, prefix = -1, ""
    sha = hashlib.sha256
    for e in entries:
        seq += 1
        parent = e.parent
        action_id = e.action_id
        if parent == -1:
            parent = seqs[-1] if seqs else None
        elif parent == AUTO:
            parent = latest.get(action_id) if action_id else None
            if parent is None and action_id:
                parent = last_seq_of(conn, action_id)
        if action_id:
            latest[action_id] = seq
        t = e.at if e.at is not None else now
        whole = int(t)
        if whole != sec:
            sec, prefix = whole, iso(whole)[:-4]
        at = f"{prefix}{int((t - whole) * 1000):03d}Z"
        body = e.body if e.body is not None else e.encode()
        payload_hash = "sha256:" + sha(body).hexdigest()
        # Same bytes as _entry_hash(), written out because this loop is the ledger's hot path.
        h = (
            "sha256:"
            + sha(
                f"{seq}\x1f{at}\x1f{e.event}\x1f{_s(e.actor)}\x1f{_s(e.tool)}\x1f{_s(action_id)}"
                f"\x1f{_s(e.card_digest)}\x1f{_s(e.policy_version)}\x1f{_s(parent)}\x1f{e.privacy}"
                f"\x1f{payload_hash}\x1f{prev}".encode()
            ).hexdigest()
        )
        rows.append(
            (
                seq,
                at,
                e.event,
                e.actor,
                e.tool,
                action_id,
                e.card_digest,
                e.policy_version,
                parent,
                e.privacy,
                body.decode(),
                payload_hash,
                prev,
                h,
            )
        )
        prev = h
        seqs.append(seq)
    conn.executemany(f"INSERT INTO gate_ledger ({_COLUMNS}) VALUES ({','.join('?' * 14)})", rows)
    conn.execute(
        "INSERT INTO gate_ledger_head(id, seq, hash) VALUES(1, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET seq=excluded.seq, hash=excluded.hash",
        (seq, prev),
    )
    return seqs


def last_seq_of(conn: sqlite3.Connection, action_id: str) -> int | None:
    """The latest entry of an action (its causal parent for the next event)."""
    row = conn.execute(
        "SELECT max(seq) FROM gate_ledger WHERE action_id=?", (action_id,)
    ).fetchone()
    return row[0] if row else None


def _row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = [c.strip() for c in _COLUMNS.split(",")]
    out = dict(zip(keys, row, strict=True))
    try:
        out["payload"] = orjson.loads(out["payload"])
    except orjson.JSONDecodeError:
        pass  # verify reports it; show it as stored
    return out


def tail(store: Store, n: int = 20) -> list[dict[str, Any]]:
    """The last ``n`` entries, oldest first."""
    rows = store.query(f"SELECT {_COLUMNS} FROM gate_ledger ORDER BY seq DESC LIMIT ?", (n,))
    return [_row_dict(r) for r in reversed(rows)]


def show(store: Store, key: str) -> list[dict[str, Any]]:
    """One entry by seq, or every entry of an action id."""
    if key.isdigit():
        rows = store.query(f"SELECT {_COLUMNS} FROM gate_ledger WHERE seq=?", (int(key),))
    else:
        rows = store.query(
            f"SELECT {_COLUMNS} FROM gate_ledger WHERE action_id=? ORDER BY seq", (key,)
        )
    return [_row_dict(r) for r in rows]


def entries(store: Store) -> Iterator[dict[str, Any]]:
    """Every entry in seq order (read in pages so a big ledger is not loaded at once)."""
    last = 0
    while True:
        rows = store.query(
            f"SELECT {_COLUMNS} FROM gate_ledger WHERE seq > ? ORDER BY seq LIMIT 1000", (last,)
        )
        if not rows:
            return
        for r in rows:
            yield _row_dict(r)
        last = rows[-1][0]


@dataclass
class Problem:
    seq: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "message": self.message}


def verify(store: Store, *, expect_head: str | None = None) -> tuple[int, list[Problem]]:
    """Check the whole chain: ``(entries checked, problems)`` (no problems means intact)."""
    problems: list[Problem] = []
    prev = GENESIS
    expected_seq = 1
    count = 0
    last_seq, last_hash = 0, GENESIS
    for rows in _pages(store):
        for r in rows:
            count += 1
            seq = r[0]
            if seq != expected_seq:
                problems.append(
                    Problem(
                        expected_seq,
                        f"entry seq {expected_seq} is missing (next present is {seq}): deleted",
                    )
                )
            expected_seq = seq + 1
            payload_hash = "sha256:" + hashlib.sha256(str(r[10]).encode()).hexdigest()
            if payload_hash != r[11]:
                problems.append(Problem(seq, f"entry seq {seq}: payload was edited"))
            if r[12] != prev:
                problems.append(
                    Problem(
                        seq,
                        f"entry seq {seq}: does not follow the entry before it "
                        "(an entry was deleted, inserted or reordered here)",
                    )
                )
            if _entry_hash((*r[:10], r[11], r[12])) != r[13]:
                problems.append(
                    Problem(seq, f"entry seq {seq}: fields were edited (hash mismatch)")
                )
            prev = r[13]
            last_seq, last_hash = seq, r[13]
    head = store.query("SELECT seq, hash FROM gate_ledger_head WHERE id=1")
    if head and (head[0][0] != last_seq or head[0][1] != last_hash):
        problems.append(
            Problem(
                last_seq + 1 if head[0][0] > last_seq else head[0][0],
                f"the ledger head records seq {head[0][0]} but the chain ends at seq {last_seq}: "
                "entries at the end were deleted or replaced",
            )
        )
    if expect_head is not None and expect_head not in (last_hash, f"{last_seq}:{last_hash}"):
        problems.append(
            Problem(last_seq, f"the chain ends at {last_seq}:{last_hash}, not the expected head")
        )
    return count, problems


def _pages(store: Store) -> Iterator[list[tuple[Any, ...]]]:
    last = -1
    while True:
        rows = store.query(
            f"SELECT {_COLUMNS} FROM gate_ledger WHERE seq > ? ORDER BY seq LIMIT 1000", (last,)
        )
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def head(store: Store) -> tuple[int, str]:
    """``(seq, hash)`` of the last entry (``(0, GENESIS)`` when empty)."""
    rows = store.query("SELECT seq, hash FROM gate_ledger_head WHERE id=1")
    return (rows[0][0], rows[0][1]) if rows else (0, GENESIS)


def export_line(entry: dict[str, Any], *, include_local: bool = False) -> bytes:
    """One NDJSON line; ``local-only`` raw values become hashes unless ``include_local``."""
    if entry.get("privacy") == "local-only" and not include_local:
        entry = dict(entry)
        payload = entry.get("payload")
        if isinstance(payload, dict):
            entry["payload"] = filter_payload("no-raw", payload)
            entry["payload_redacted"] = True
    return orjson.dumps(entry) + b"\n"
