"""Durable actions: holds waiting for approval, and calls in flight, in SQLite.

An action held for approval moves through::

    pending -> approved -> executing -> completed | failed
            -> denied | expired                      (never executed)
    executing -> interrupted                          (the process died; never re-run)

Every transition is one ``BEGIN IMMEDIATE`` transaction guarded by the expected
current status, so exactly one process (or coroutine) wins a claim: execution
happens at most once across concurrent resumes, processes and restarts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from skillyard.gate import ledger
from skillyard.gate.ledger import Entry
from skillyard.store import Store

MIGRATIONS = [
    [
        "CREATE TABLE gate_actions (action_id TEXT PRIMARY KEY, request_id TEXT NOT NULL UNIQUE,"
        " tool TEXT NOT NULL, card_digest TEXT, args_hash TEXT NOT NULL, args TEXT,"
        " caller TEXT NOT NULL, policy_version TEXT, rule TEXT, reason TEXT,"
        " approvers TEXT NOT NULL, privacy TEXT NOT NULL, created_at REAL NOT NULL,"
        " deadline REAL NOT NULL, status TEXT NOT NULL, decision TEXT, owner TEXT,"
        " claimed_at REAL, finished_at REAL, result TEXT, error TEXT)",
        "CREATE INDEX gate_actions_status ON gate_actions(status, deadline)",
        "CREATE TABLE gate_approvals (id INTEGER PRIMARY KEY, action_id TEXT, received_at REAL,"
        " source TEXT, verdict TEXT NOT NULL, problem TEXT, approver_id TEXT, kind TEXT)",
    ]
]
TERMINAL = ("completed", "failed", "interrupted", "denied", "expired")
_FIELDS = (
    "action_id, request_id, tool, card_digest, args_hash, args, caller, policy_version, rule,"
    " reason, approvers, privacy, created_at, deadline, status, decision, owner, claimed_at,"
    " finished_at, result, error"
)
INSTANCE = f"{os.getpid()}:{os.urandom(4).hex()}"


def migrate(store: Store) -> None:
    ledger.migrate(store)
    store.migrate("gate_actions", MIGRATIONS)


@dataclass(frozen=True, slots=True)
class Action:
    """One row of ``gate_actions``."""

    action_id: str
    request_id: str
    tool: str
    card_digest: str | None
    args_hash: str
    args: Any
    caller: dict[str, Any]
    policy_version: str | None
    rule: str | None
    reason: str | None
    approvers: tuple[str, ...]
    privacy: str
    created_at: float
    deadline: float
    status: str
    decision: Any
    owner: str | None
    claimed_at: float | None
    finished_at: float | None
    result: Any
    error: Any

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Action:
        d = dict(zip([f.strip() for f in _FIELDS.split(",")], row, strict=True))
        for key in ("args", "caller", "decision", "result", "error"):
            if d[key] is not None:
                d[key] = orjson.loads(d[key])
        d["approvers"] = tuple(orjson.loads(d["approvers"]))
        return cls(**d)

    def summary(self) -> dict[str, Any]:
        """JSON-shaped view for the CLI (arguments only as their hash)."""
        from skillyard.gate.canon import iso

        return {
            "action_id": self.action_id,
            "request_id": self.request_id,
            "tool": self.tool,
            "status": self.status,
            "args_hash": self.args_hash,
            "card_digest": self.card_digest,
            "policy_version": self.policy_version,
            "rule": self.rule,
            "reason": self.reason,
            "approvers": list(self.approvers),
            "principal": self.caller.get("principal"),
            "created_at": iso(self.created_at),
            "deadline": iso(self.deadline),
            "decision": self.decision,
            "error": self.error,
        }


def get(store: Store, action_id: str) -> Action | None:
    rows = store.query(f"SELECT {_FIELDS} FROM gate_actions WHERE action_id=?", (action_id,))
    return Action.from_row(rows[0]) if rows else None


def get_in(conn: Any, action_id: str) -> Action | None:
    row = conn.execute(
        f"SELECT {_FIELDS} FROM gate_actions WHERE action_id=?", (action_id,)
    ).fetchone()
    return Action.from_row(row) if row else None


def listing(store: Store, *, status: str | None = None, limit: int = 100) -> list[Action]:
    if status:
        rows = store.query(
            f"SELECT {_FIELDS} FROM gate_actions WHERE status=? ORDER BY created_at DESC LIMIT ?",
            (status, limit),
        )
    else:
        rows = store.query(
            f"SELECT {_FIELDS} FROM gate_actions ORDER BY created_at DESC LIMIT ?", (limit,)
        )
    return [Action.from_row(r) for r in rows]


def insert(conn: Any, values: Mapping[str, Any]) -> None:
    cols = list(values)
    conn.execute(
        f"INSERT INTO gate_actions ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})",
        [values[c] for c in cols],
    )


def entry(
    action: Action,
    event: str,
    payload: Mapping[str, Any],
    *,
    actor: str | None = None,
    parent: int | None = None,
) -> Entry:
    """A ledger entry about ``action``."""
    return Entry(
        event,
        actor if actor is not None else action.caller.get("principal"),
        action.tool,
        action.action_id,
        action.card_digest,
        action.policy_version,
        action.privacy,
        payload,
        parent,
    )


def transition(
    store: Store,
    action_id: str,
    expect: tuple[str, ...],
    changes: Mapping[str, Any],
    event: str | None,
    payload: Mapping[str, Any],
    *,
    ledger_on: bool,
    actor: str | None = None,
) -> Action | None:
    """Apply ``changes`` when the action's status is in ``expect``; returns the new row or None."""
    with store.transaction() as conn:
        current = get_in(conn, action_id)
        if current is None or current.status not in expect:
            return None
        sets = ", ".join(f"{k}=?" for k in changes)
        conn.execute(
            f"UPDATE gate_actions SET {sets} WHERE action_id=?", [*changes.values(), action_id]
        )
        if ledger_on and event is not None:
            parent = ledger.last_seq_of(conn, action_id)
            ledger.append(conn, [entry(current, event, payload, actor=actor, parent=parent)])
        return get_in(conn, action_id)


def owner_alive(owner: str | None) -> bool:
    """Whether the process that claimed something is still running (same machine)."""
    if not owner:
        return False
    if owner == INSTANCE:
        return True
    pid_text, _, _ = owner.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return False  # our pid, another instance: the old process is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ", 1)[1][:1] != b"Z"
    except (OSError, IndexError):
        return True


def recover(store: Store, *, ledger_on: bool) -> dict[str, int]:
    """Rebuild state at start: expire due holds, mark work of dead processes interrupted."""
    now = time.time()
    counts = {"expired": 0, "interrupted": 0}
    for row in store.query(
        "SELECT action_id FROM gate_actions WHERE status='pending' AND deadline < ?", (now,)
    ):
        if expire(store, row[0], ledger_on=ledger_on):
            counts["expired"] += 1
    for action_id, owner in store.query(
        "SELECT action_id, owner FROM gate_actions WHERE status='executing'"
    ):
        if not owner_alive(owner):
            done = transition(
                store,
                action_id,
                ("executing",),
                {
                    "status": "interrupted",
                    "finished_at": now,
                    "error": orjson.dumps(
                        {"code": "interrupted", "kind": "internal_error", "message": INTERRUPTED}
                    ).decode(),
                },
                "interrupted",
                {"message": INTERRUPTED, "owner": owner},
                ledger_on=ledger_on,
                actor="gate",
            )
            counts["interrupted"] += done is not None
    return counts


INTERRUPTED = (
    "the runtime stopped after this action was claimed for execution and before its result "
    "was recorded; it may have run, and it will not run again"
)
INTERRUPTED_CALL = (
    "the runtime stopped after this call was allowed and before its result was recorded; "
    "whether it ran is unknown, and it will not run again"
)


def expire(store: Store, action_id: str, *, ledger_on: bool) -> bool:
    """Mark a pending hold past its deadline as expired (``approval_timeout``)."""
    done = transition(
        store,
        action_id,
        ("pending",),
        {"status": "expired", "finished_at": time.time()},
        "expired",
        {"kind": "approval_timeout", "message": "no decision before the deadline"},
        ledger_on=ledger_on,
        actor="gate",
    )
    return done is not None
