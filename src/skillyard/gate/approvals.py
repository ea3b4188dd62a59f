"""Signed approval decisions: build, sign, verify against a held action, and apply.

A decision is the canonical JSON of::

    {"request_id", "action_id", "args_hash", "kind": "granted" | "denied",
     "approver_id", "reason", "at"}

signed with the approver's Ed25519 key. It travels as a *record*
``{"decision": {...}, "signature": "<base64>"}`` through the CLI
(``skillyard approvals grant|deny``) or as a ``*.json`` file dropped into the
approvals inbox directory by any other process. Once any approver key is pinned,
a decision must be signed by a pinned key that the rule accepts; it must match
the held action exactly and arrive before the deadline. Rejected decisions are
recorded in the ledger and change nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from skillyard.errors import ApprovalError, GateError
from skillyard.gate import actions
from skillyard.gate.actions import Action
from skillyard.gate.canon import canonical, iso, parse_iso
from skillyard.store import Store

FIELDS = ("request_id", "action_id", "args_hash", "kind", "approver_id", "reason", "at")
KINDS = ("granted", "denied")
MAX_RECORD_BYTES = 64 * 1024
PROBLEMS = (
    "malformed",
    "unsigned",
    "unpinned_key",
    "wrong_signer",
    "bad_signature",
    "payload_mismatch",
    "expired",
    "replay",
    "unknown_action",
)


def make_decision(
    action: Action, kind: str, approver_id: str, reason: str = "", *, at: float | None = None
) -> dict[str, Any]:
    """The decision payload for ``action``."""
    if kind not in KINDS:
        raise GateError(f"decision kind {kind!r} is not one of {', '.join(KINDS)}")
    return {
        "request_id": action.request_id,
        "action_id": action.action_id,
        "args_hash": action.args_hash,
        "kind": kind,
        "approver_id": approver_id,
        "reason": reason,
        "at": iso(at),
    }


def sign_decision(decision: Mapping[str, Any], private_raw: bytes) -> dict[str, Any]:
    """A signed record ``{decision, signature}``."""
    from skillyard.gate import keys

    return {"decision": dict(decision), "signature": keys.sign(private_raw, canonical(decision))}


def _reject(problem: str, message: str, action_id: str | None = None) -> ApprovalError:
    return ApprovalError(
        f"approval rejected ({problem}): {message}",
        details={"problem": problem, "action_id": action_id},
    )


def check(
    record: Any,
    action: Action,
    pinned: Mapping[str, bytes],
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """The verified decision of ``record`` for ``action``; raises ApprovalError saying why not."""
    aid = action.action_id
    if not isinstance(record, Mapping) or not isinstance(record.get("decision"), Mapping):
        raise _reject("malformed", "expected {decision: {...}, signature: ...}", aid)
    decision = dict(record["decision"])
    if set(decision) != set(FIELDS):
        missing = sorted(set(FIELDS) - set(decision))
        extra = sorted(set(decision) - set(FIELDS))
        raise _reject(
            "malformed",
            f"decision fields must be exactly {', '.join(FIELDS)} "
            f"(missing {missing}, unexpected {extra})",
            aid,
        )
    for key in FIELDS:
        if not isinstance(decision[key], str):
            raise _reject("malformed", f"decision.{key} must be a string", aid)
    if decision["kind"] not in KINDS:
        raise _reject("malformed", "decision.kind must be granted or denied", aid)
    if decision["action_id"] != aid:
        raise _reject(
            "replay", f"the decision is for action {decision['action_id']!r}, not {aid!r}", aid
        )
    if decision["request_id"] != action.request_id or decision["args_hash"] != action.args_hash:
        raise _reject(
            "payload_mismatch",
            "the decision's request_id or args_hash does not match the held action",
            aid,
        )
    approver = decision["approver_id"]
    signature = record.get("signature")
    if pinned:
        if signature is None:
            raise _reject("unsigned", "approver keys are pinned, so decisions must be signed", aid)
        from skillyard.gate import keys

        message = canonical(decision)
        pub = pinned.get(approver)
        if pub is None:
            raise _reject("unpinned_key", f"approver {approver!r} has no pinned key", aid)
        if not keys.verify(pub, signature, message):
            others = [
                k for k, v in pinned.items() if k != approver and keys.verify(v, signature, message)
            ]
            if others:
                raise _reject(
                    "wrong_signer",
                    f"signed by {others[0]!r}'s key but claims approver {approver!r}",
                    aid,
                )
            raise _reject(
                "bad_signature",
                f"the signature does not verify under {approver!r}'s pinned key",
                aid,
            )
    if action.approvers and approver not in action.approvers:
        raise _reject(
            "wrong_signer",
            f"approver {approver!r} may not decide this action; allowed: "
            f"{', '.join(action.approvers)}",
            aid,
        )
    try:
        at = parse_iso(decision["at"])
    except ValueError as exc:
        raise _reject("malformed", f"decision.at: {exc}", aid) from None
    t = time.time() if now is None else now
    if at > action.deadline or t > action.deadline:
        raise _reject("expired", f"the deadline {iso(action.deadline)} has passed", aid)
    return decision


def recheck(action: Action, pinned: Mapping[str, bytes]) -> str | None:
    """Re-verify the grant stored on an approved action; the problem, or None when valid."""
    record = action.decision
    try:
        decision = record.get("decision") if isinstance(record, Mapping) else None
        at = parse_iso(decision.get("at")) if isinstance(decision, Mapping) else action.deadline
        check(record, action, pinned, now=min(at, action.deadline))
    except ApprovalError as exc:
        return str(exc.details.get("problem"))
    except ValueError:
        return "malformed"
    return None


def submit(
    store: Store,
    record: Any,
    pinned: Mapping[str, bytes],
    *,
    source: str,
    ledger_on: bool = True,
    action_id: str | None = None,
) -> Action:
    """Verify ``record`` and apply it to its action (pending -> approved | denied).

    A rejection is recorded (approvals table and ledger) and raised as ApprovalError.
    """
    if action_id is None:
        decision = record.get("decision") if isinstance(record, Mapping) else None
        action_id = decision.get("action_id") if isinstance(decision, Mapping) else None
    if not isinstance(action_id, str):
        raise _reject("malformed", "the record names no action_id")
    now = time.time()
    failure: ApprovalError | None = None
    with store.transaction() as conn:
        action = actions.get_in(conn, action_id)
        if action is None:
            raise _reject("unknown_action", f"no held action {action_id!r}", action_id)
        try:
            decision = check(record, action, pinned, now=now)
            if action.status != "pending":
                raise _reject(
                    "replay",
                    f"the action is already {action.status}; decisions apply once",
                    action_id,
                )
        except ApprovalError as exc:
            failure = exc
            conn.execute(
                "INSERT INTO gate_approvals(action_id, received_at, source, verdict, problem)"
                " VALUES(?,?,?,?,?)",
                (action_id, now, source, "rejected", exc.details.get("problem")),
            )
            if ledger_on:
                parent = actions.ledger.last_seq_of(conn, action_id)
                actions.ledger.append(
                    conn,
                    [
                        actions.entry(
                            action,
                            "approval_rejected",
                            {
                                "problem": exc.details.get("problem"),
                                "source": source,
                                "message": exc.message,
                            },
                            actor="gate",
                            parent=parent,
                        )
                    ],
                )
        else:
            status = "approved" if decision["kind"] == "granted" else "denied"
            changes: dict[str, Any] = {
                "status": status,
                "decision": orjson.dumps(dict(record)).decode(),
            }
            if status == "denied":
                changes["finished_at"] = now
                changes["args"] = None  # never runs: do not keep the arguments
            sets = ", ".join(f"{k}=?" for k in changes)
            conn.execute(
                f"UPDATE gate_actions SET {sets} WHERE action_id=?", [*changes.values(), action_id]
            )
            conn.execute(
                "INSERT INTO gate_approvals(action_id, received_at, source, verdict, approver_id,"
                " kind) VALUES(?,?,?,?,?,?)",
                (action_id, now, source, "accepted", decision["approver_id"], decision["kind"]),
            )
            if ledger_on:
                parent = actions.ledger.last_seq_of(conn, action_id)
                actions.ledger.append(
                    conn,
                    [
                        actions.entry(
                            action,
                            "approval",
                            {
                                "kind": decision["kind"],
                                "approver_id": decision["approver_id"],
                                "reason": decision["reason"],
                                "at": decision["at"],
                                "signed": record.get("signature") is not None,
                                "source": source,
                            },
                            actor=decision["approver_id"],
                            parent=parent,
                        )
                    ],
                )
    if failure is not None:
        raise failure
    result = actions.get(store, action_id)
    assert result is not None
    return result


def import_inbox(
    store: Store, inbox: Path, pinned: Mapping[str, bytes], *, ledger_on: bool = True
) -> list[tuple[str, str]]:
    """Apply every ``*.json`` decision file in ``inbox``; returns ``(file, outcome)`` pairs.

    A file is claimed by an atomic rename, so several processes can share one inbox; it
    ends in ``inbox/done/`` or ``inbox/rejected/`` (with a ``.why`` note).
    """
    try:
        names = sorted(n for n in os.listdir(inbox) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    out: list[tuple[str, str]] = []
    for name in names:
        src = inbox / name
        claimed = inbox / f".{name}.{actions.INSTANCE.replace(':', '-')}.claim"
        try:
            os.rename(src, claimed)
        except FileNotFoundError:
            continue  # another process took it
        outcome = "accepted"
        why = ""
        try:
            data = claimed.read_bytes()
            if len(data) > MAX_RECORD_BYTES:
                raise _reject("malformed", f"file is larger than {MAX_RECORD_BYTES} bytes")
            try:
                record = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise _reject("malformed", f"not JSON: {exc.msg}") from None
            submit(store, record, pinned, source=f"inbox:{name}", ledger_on=ledger_on)
        except ApprovalError as exc:
            outcome, why = "rejected", exc.message
        dest = inbox / ("done" if outcome == "accepted" else "rejected")
        dest.mkdir(exist_ok=True)
        os.replace(claimed, dest / name)
        if why:
            (dest / (name + ".why")).write_text(why + "\n", encoding="utf-8")
        out.append((name, outcome if not why else f"rejected: {why}"))
    return out


def write_inbox_file(inbox: Path, record: Mapping[str, Any]) -> Path:
    """Drop a decision record into ``inbox`` atomically (write to a temp name, then rename)."""
    inbox.mkdir(parents=True, exist_ok=True)
    decision = record.get("decision", {})
    base = f"{decision.get('action_id', 'decision')}-{os.urandom(4).hex()}"
    tmp = inbox / f".{base}.tmp"
    tmp.write_bytes(orjson.dumps(dict(record)))
    final = inbox / f"{base}.json"
    os.replace(tmp, final)
    return final
