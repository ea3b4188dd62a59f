"""Attacks on approvals: forged, replayed, wrong key, expired, edited payload."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from skillyard.errors import ApprovalError
from skillyard.gate import actions, approvals, find, keys, ledger


@pytest.fixture
def held(make_rt, keypair):
    rt = make_rt(approvers={"alice": keypair["alice"][1], "bob": keypair["bob"][1]})
    ran = []
    rt.tool("deploy")(lambda a: ran.append(a) or "deployed")
    rt.tool("safe-deploy")(lambda a: "x")
    result = asyncio.run(rt.call("deploy", {"env": "prod"}))
    action = actions.get(rt.store, result.decision.action_id)
    return rt, action, ran


def signed(action, who, keypair, *, as_=None, kind="granted", **changes):
    decision = approvals.make_decision(action, kind, as_ or who, "because")
    decision.update(changes)
    return approvals.sign_decision(decision, keypair[who][0])


def problem_of(rt, record) -> str:
    with pytest.raises(ApprovalError) as err:
        find(rt).submit(record)
    return err.value.details["problem"]


def test_a_valid_signed_grant_is_accepted_and_runs_once(held, keypair):
    rt, action, ran = held
    find(rt).submit(signed(action, "alice", keypair))
    result = asyncio.run(rt.resume(action.action_id))
    assert result.output == "deployed" and ran == [{"env": "prod"}]
    approval = next(e for e in ledger.tail(rt.store, 10) if e["event"] == "approval")
    assert approval["actor"] == "alice" and approval["payload"]["signed"] is True


@pytest.mark.parametrize(
    ("attack", "problem"),
    [
        ("unsigned", "unsigned"),
        ("unpinned-key", "unpinned_key"),
        ("forged-as-alice", "bad_signature"),
        ("bob-key-claims-alice", "wrong_signer"),
        ("bob-not-an-approver", "wrong_signer"),
        ("edited-reason", "bad_signature"),
        ("edited-kind", "bad_signature"),
        ("other-args", "payload_mismatch"),
        ("other-request", "payload_mismatch"),
        ("decided-after-deadline", "expired"),
        ("garbage-signature", "bad_signature"),
        ("extra-field", "malformed"),
        ("not-an-object", "malformed"),
        ("bad-time", "malformed"),
    ],
)
def test_attacks_are_rejected_recorded_and_change_nothing(held, keypair, attack, problem):
    rt, action, ran = held
    if attack == "unsigned":
        record = {"decision": approvals.make_decision(action, "granted", "alice")}
    elif attack == "unpinned-key":
        record = signed(action, "mallory", keypair)
    elif attack == "forged-as-alice":
        record = signed(action, "mallory", keypair, as_="alice")
    elif attack == "bob-key-claims-alice":
        record = signed(action, "bob", keypair, as_="alice")
    elif attack == "bob-not-an-approver":
        record = signed(action, "bob", keypair)  # bob is pinned, but the rule wants alice
    elif attack == "edited-reason":
        record = signed(action, "alice", keypair)
        record["decision"]["reason"] = "edited after signing"
    elif attack == "edited-kind":
        record = signed(action, "alice", keypair, kind="denied")
        record["decision"]["kind"] = "granted"
    elif attack == "other-args":
        record = signed(action, "alice", keypair, args_hash="sha256:" + "0" * 64)
    elif attack == "other-request":
        record = signed(action, "alice", keypair, request_id="req_other")
    elif attack == "decided-after-deadline":
        from skillyard.gate.canon import iso

        record = signed(action, "alice", keypair, at=iso(action.deadline + 60))
    elif attack == "garbage-signature":
        record = signed(action, "alice", keypair)
        record["signature"] = "!!not base64!!"
    elif attack == "extra-field":
        record = signed(action, "alice", keypair, scope="everything")
    elif attack == "not-an-object":
        record = {"decision": ["granted"], "action_id": action.action_id}
        with pytest.raises(ApprovalError) as err:
            approvals.submit(
                rt.store, record, find(rt).config.approvers, source="t", action_id=action.action_id
            )
        assert err.value.details["problem"] == problem
        return _unchanged(rt, action, ran)
    else:
        record = signed(action, "alice", keypair, at="yesterday")
    assert problem_of(rt, record) == problem
    _unchanged(rt, action, ran)


def _unchanged(rt, action, ran):
    assert actions.get(rt.store, action.action_id).status == "pending"
    assert asyncio.run(rt.resume(action.action_id)).pending
    assert ran == []
    rejected = [e for e in ledger.tail(rt.store, 10) if e["event"] == "approval_rejected"]
    assert rejected and rejected[-1]["action_id"] == action.action_id


def test_replays_onto_another_action_or_twice_are_rejected(held, keypair):
    rt, action, ran = held
    other = asyncio.run(rt.call("deploy", {"env": "prod"}))  # same arguments, new action
    record = signed(action, "alice", keypair)
    with pytest.raises(ApprovalError) as err:
        approvals.submit(
            rt.store,
            record,
            find(rt).config.approvers,
            source="t",
            action_id=other.decision.action_id,
        )
    assert err.value.details["problem"] == "replay"
    find(rt).submit(record)
    assert problem_of(rt, record) == "replay"  # the same grant again
    asyncio.run(rt.resume(action.action_id))
    assert problem_of(rt, record) == "replay"  # and after it ran
    assert actions.get(rt.store, other.decision.action_id).status == "pending"
    assert ran == [{"env": "prod"}]


def test_decisions_arriving_after_the_deadline_are_expired(held, keypair, monkeypatch):
    rt, action, _ran = held
    record = signed(action, "alice", keypair)
    real = approvals.time.time
    monkeypatch.setattr(approvals.time, "time", lambda: real() + 10_000)
    assert problem_of(rt, record) == "expired"


def test_inbox_files_from_other_processes_are_applied_or_rejected(make_rt, keypair, tmp_path):
    inbox = tmp_path / "inbox"
    rt = make_rt(approvers={"alice": keypair["alice"][1]}, inbox=str(inbox))
    rt.tool("deploy")(lambda a: "ok")
    a = asyncio.run(rt.call("deploy", {"n": 1})).decision
    b = asyncio.run(rt.call("deploy", {"n": 2})).decision
    good = signed(actions.get(rt.store, a.action_id), "alice", keypair)
    bad = signed(actions.get(rt.store, b.action_id), "mallory", keypair, as_="alice")
    approvals.write_inbox_file(inbox, good)
    approvals.write_inbox_file(inbox, bad)
    (inbox / "junk.json").write_bytes(b"{not json")
    assert asyncio.run(rt.resume(a.action_id)).output == "ok"
    assert asyncio.run(rt.resume(b.action_id)).pending
    assert len(list((inbox / "done").glob("*.json"))) == 1
    why = sorted(p.read_text() for p in (inbox / "rejected").glob("*.why"))
    assert len(why) == 2 and any("bad_signature" in w for w in why)
    assert not list(inbox.glob("*.json"))


def test_a_grant_applied_without_the_keys_is_rechecked_by_the_gate(make_rt, keypair, tmp_path):
    rt = make_rt(approvers={"alice": keypair["alice"][1]})
    ran = []
    rt.tool("deploy")(lambda a: ran.append(1))
    held = asyncio.run(rt.call("deploy", {})).decision
    action = actions.get(rt.store, held.action_id)
    # a process without the pinned keys applies an unsigned grant straight to the store
    approvals.submit(
        rt.store,
        {"decision": approvals.make_decision(action, "granted", "alice")},
        {},
        source="misconfigured",
    )
    assert asyncio.run(rt.resume(held.action_id)).pending
    assert ran == [] and actions.get(rt.store, held.action_id).status == "pending"


def test_key_files_are_private_and_errors_never_echo_them(tmp_path: Path):
    from skillyard.errors import ConfigError

    key = keys.generate("carol")
    path = tmp_path / "carol.key.json"
    keys.write_key_file(path, key)
    assert path.stat().st_mode & 0o777 == 0o600
    assert keys.load_key_file(path)[0] == "carol"
    with pytest.raises(FileExistsError):
        keys.write_key_file(path, key)
    broken = dict(key, private_key=key["private_key"][:-4])
    path2 = tmp_path / "broken.json"
    path2.write_bytes(orjson.dumps(broken))
    with pytest.raises(ConfigError) as err:
        keys.load_key_file(path2)
    assert key["private_key"][:20] not in err.value.message
    with pytest.raises(ConfigError):
        keys.generate("bad id with spaces")
