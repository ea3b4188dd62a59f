from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from skillyard import CallResult, Policy, Runtime
from skillyard.errors import CallFailed, ConfigError, GateError, PolicyDenied
from skillyard.gate import actions, approvals, find, ledger, status


def run(coro):
    return asyncio.run(coro)


def events(rt: Runtime) -> list[tuple[str, str | None]]:
    gate = find(rt)
    assert gate is not None
    gate.flush()
    return [(e["event"], e["tool"]) for e in ledger.tail(rt.store, 1000)]


def grant(rt: Runtime, action_id: str, kind: str = "granted", approver: str = "alice"):
    gate = find(rt)
    action = actions.get(rt.store, action_id)
    return gate.submit({"decision": approvals.make_decision(action, kind, approver, "ok")})


def test_allow_runs_and_records_decision_and_result(make_rt):
    rt = make_rt()
    rt.tool("echo")(lambda a: {"echo": a})
    r = run(rt.call("echo", {"x": 1}))
    assert r.output == {"echo": {"x": 1}}
    assert (r.decision.outcome, r.decision.phase, r.decision.rule) == ("allow", "completed", "echo")
    assert events(rt) == [("call", "echo")]  # proposal, decision, execution, result: one entry
    (call,) = ledger.tail(rt.store, 1)
    assert call["policy_version"].startswith("test@") and call["actor"] == "local"
    payload = call["payload"]
    assert payload["args"] == {"x": 1} and (payload["outcome"], payload["rule"]) == (
        "allow",
        "echo",
    )
    assert payload["result"] == "ok" and payload["output"] == {"echo": {"x": 1}}


def test_deny_raises_policy_denied_without_running(make_rt):
    rt = make_rt()
    ran = []
    rt.tool("rm")(lambda a: ran.append(a))
    with pytest.raises(PolicyDenied) as err:
        run(rt.call("rm", {"path": "/"}))
    assert err.value.code == "policy_denied" and err.value.details["rule"] == "default:deny"
    assert ran == []
    assert events(rt) == [("decided", "rm")]


def test_hold_then_grant_executes_exactly_once_across_concurrent_resumes(make_rt):
    rt = make_rt()
    ran = []
    rt.tool("deploy")(lambda a: ran.append(a) or {"deployed": a["env"]})

    async def scenario():
        held = await rt.call("deploy", {"env": "prod"})
        assert held.pending and ran == []
        d = held.decision
        assert d.outcome == "hold" and d.action_id and d.request_id and d.deadline
        again = await rt.resume(d.action_id, wait_ms=0)
        assert again.pending
        grant(rt, d.action_id)
        results = await asyncio.gather(*[rt.resume(d.action_id, wait_ms=2000) for _ in range(8)])
        return d, results

    d, results = run(scenario())
    assert ran == [{"env": "prod"}]
    assert {r.output["deployed"] for r in results} == {"prod"}
    assert all(
        r.decision.phase == "completed" and r.decision.action_id == d.action_id for r in results
    )
    assert actions.get(rt.store, d.action_id).args is None  # arguments dropped once finished
    assert [e for e, _ in events(rt)] == ["decided", "approval", "claimed", "result"]


def test_resume_waits_for_a_decision_that_arrives_later(make_rt):
    rt = make_rt()
    rt.tool("deploy")(lambda a: "done")

    async def scenario():
        held = await rt.call("deploy", {})
        waiter = asyncio.create_task(rt.resume(held.decision.action_id, wait_ms=5000))
        await asyncio.sleep(0)  # let the waiter start polling before the grant exists
        grant(rt, held.decision.action_id)
        return await waiter

    assert run(scenario()).output == "done"


def test_denied_and_timed_out_holds_never_run(make_rt, policy_file):
    policy_file.write_text(
        policy_file.read_text().replace("timeout_sec = 300", "timeout_sec = 0.2")
    )
    rt = make_rt()
    ran = []
    rt.tool("deploy")(lambda a: ran.append(1))

    async def scenario():
        a = await rt.call("deploy", {"n": 1})
        grant(rt, a.decision.action_id, "denied")
        with pytest.raises(PolicyDenied) as denied:
            await rt.resume(a.decision.action_id)
        b = await rt.call("deploy", {"n": 2})
        with pytest.raises(PolicyDenied) as late:
            await rt.resume(b.decision.action_id, wait_ms=3000)  # the deadline passes while waiting
        with pytest.raises(Exception) as after:
            grant(rt, b.decision.action_id)
        return denied.value, late.value, after.value

    denied, late, after = run(scenario())
    assert denied.code == "approval_denied"
    assert late.code == "approval_timeout"
    assert after.details["problem"] in ("expired", "replay")
    assert ran == []


def test_nested_call_needing_approval_is_rejected_as_approval_required(make_rt):
    rt = make_rt()
    rt.tool("deploy")(lambda a: "deployed")

    async def outer(args, ctx):
        return await rt.call("deploy", {}, parent=ctx)

    rt.tool("safe-outer")(outer)
    with pytest.raises(PolicyDenied) as err:
        run(rt.call("safe-outer", {}))
    assert err.value.code == "approval_required"


def test_failures_are_recorded_with_their_kind(make_rt):
    rt = make_rt()

    def boom(args):
        raise ValueError("kaput")

    rt.tool("echo")(boom)
    with pytest.raises(CallFailed):
        run(rt.call("echo", {}))
    find(rt).flush()
    result = ledger.tail(rt.store, 1)[0]
    assert result["event"] == "call"
    assert result["payload"]["result"] == "failed"
    assert result["payload"]["kind"] == "execution_failed"


def test_code_changed_after_approval_is_a_failed_precondition(make_rt):
    from skillyard import Card

    rt = make_rt()
    rt.tool("deploy")(lambda a: "v1")
    held = run(rt.call("deploy", {}))
    grant(rt, held.decision.action_id)
    old = rt.card("deploy")
    rt.add_card(Card(**{**old.__dict__, "digest": "sha256:changed"}))
    with pytest.raises(PolicyDenied) as err:
        run(rt.resume(held.decision.action_id))
    assert err.value.code == "precondition_failed"


def test_unknown_action_and_bad_wait(make_rt):
    rt = make_rt()
    with pytest.raises(GateError) as err:
        run(rt.resume("act_nope"))
    assert err.value.code == "action_not_found"
    with pytest.raises(GateError):
        run(rt.resume("act_nope", wait_ms=-5))


@pytest.mark.parametrize(
    ("privacy", "present", "absent"),
    [
        ("metadata-only", [], ["args", "args_hash", "output", "output_hash"]),
        ("no-raw", ["args_hash", "output_hash"], ["args", "output"]),
        ("allow-raw", ["args", "output"], ["args_hash"]),
    ],
)
def test_privacy_modes_govern_what_the_ledger_stores(make_rt, privacy, present, absent):
    rt = make_rt()
    rt.tool("echo", policy=Policy(privacy=privacy))(lambda a: {"secret": "s3cr3t"})
    run(rt.call("echo", {"password": "hunter2"}))
    find(rt).flush()
    stored = {}
    for e in ledger.tail(rt.store, 1):
        stored.update(e["payload"])
        assert e["privacy"] == privacy
    for key in present:
        assert key in stored
    for key in absent:
        assert key not in stored
    if privacy != "allow-raw":
        raw = rt.store.query("SELECT group_concat(payload) FROM gate_ledger")[0][0]
        assert "hunter2" not in raw and "s3cr3t" not in raw


def test_local_only_entries_are_redacted_on_export(make_rt):
    rt = make_rt()
    rt.tool("echo", policy=Policy(privacy="local-only"))(lambda a: "out")
    run(rt.call("echo", {"k": "local-secret"}))
    find(rt).flush()
    lines = b"".join(ledger.export_line(e) for e in ledger.entries(rt.store))
    assert b"local-secret" not in lines and b"args_hash" in lines
    full = b"".join(ledger.export_line(e, include_local=True) for e in ledger.entries(rt.store))
    assert b"local-secret" in full


def test_cache_and_cassette_hits_are_recorded_as_such(make_rt):
    rt = make_rt()
    rt.tool("echo")(lambda a: "live")

    class FakeMemo:
        async def on_call(self, ctx, call_next):
            return CallResult(tool=ctx.tool, call_id=ctx.call_id, output="cached", source="cache")

    rt.use(FakeMemo())  # inside the gate, as the memo middleware is
    r = run(rt.call("echo", {}))
    assert r.source == "cache" and r.decision.outcome == "allow"
    find(rt).flush()
    assert ledger.tail(rt.store, 1)[0]["payload"]["source"] == "cache"


def test_no_gate_section_means_ungoverned_and_says_so():
    rt = Runtime.memory()
    assert find(rt) is None
    assert status(rt)["mode"] == "ungoverned" and status(rt)["governed"] is False
    run(rt.aclose())


def test_gate_section_needs_a_policy_or_ledger_only(tmp_path):
    with pytest.raises(ConfigError, match="no policy"):
        Runtime.memory(config={"gate": {}})
    with pytest.raises(ConfigError, match="cannot be read"):
        Runtime.memory(config={"gate": {"policy": str(tmp_path / "missing.toml")}})
    with pytest.raises(ConfigError, match="unknown key"):
        Runtime.memory(config={"gate": {"mode": "ledger-only", "polcy": "x"}})


def test_ledger_only_mode_records_without_deciding():
    rt = Runtime.memory(config={"gate": {"mode": "ledger-only"}})
    rt.tool("anything")(lambda a: 1)
    r = run(rt.call("anything", {}))
    assert r.decision.outcome == "none"
    find(rt).flush()
    (call,) = ledger.tail(rt.store, 1)
    assert (call["payload"]["outcome"], call["payload"]["result"]) == ("none", "ok")
    assert status(rt)["governed"] is False and status(rt)["mode"] == "ledger-only"
    run(rt.aclose())


def test_importing_skillyard_stays_light():
    code = (
        "import sys, skillyard; "
        "bad = [m for m in sys.modules if m.startswith(('cryptography', 'skillyard.gate'))]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_real_memo_sits_inside_the_gate_and_its_hits_are_recorded(make_rt):
    rt = make_rt()
    assert [type(m).__name__ for m in rt.middleware][:2] == ["Gate", "Memo"]
    ran = []
    rt.tool("echo", policy=Policy(cache="read-through", idempotent=True))(
        lambda a: ran.append(a) or {"v": a}
    )
    first = run(rt.call("echo", {"x": 1}))
    second = run(rt.call("echo", {"x": 1}))
    assert (first.source, second.source) == ("live", "cache") and len(ran) == 1
    assert second.decision.outcome == "allow"  # a cache hit is still decided by the policy
    find(rt).flush()
    results = [e["payload"]["source"] for e in ledger.tail(rt.store, 10) if e["event"] == "call"]
    assert results == ["live", "cache"]


def test_resume_of_an_action_whose_executor_died_reports_it_interrupted(make_rt):
    rt = make_rt()
    ran = []
    rt.tool("deploy")(lambda a: ran.append(1))
    held = run(rt.call("deploy", {})).decision
    grant(rt, held.action_id)
    # another process claimed it and died (no pid can be 2**22 + 1: above Linux's pid_max)
    rt.store.execute(
        "UPDATE gate_actions SET status='executing', owner='4194305:dead', claimed_at=0"
        " WHERE action_id=?",
        (held.action_id,),
    )
    with pytest.raises(CallFailed) as err:
        run(rt.resume(held.action_id, wait_ms=5000))
    assert err.value.details["kind"] == "internal_error" and ran == []
    assert actions.get(rt.store, held.action_id).status == "interrupted"
