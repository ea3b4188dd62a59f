from __future__ import annotations

import asyncio
import threading

import pytest

from skillyard import Runtime
from skillyard.errors import InvalidArguments, PermissionDenied, SessionError, SkillTimeout
from skillyard.sessions import SessionManager, clamp_ttl
from skillyard.store import Store
from skillyard.transports.base import Caller


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def mgr(clock):
    rt = Runtime.memory()
    yield SessionManager(rt, clock=clock, max_leases=3)
    asyncio.run(rt.aclose())


def run(coro):
    return asyncio.run(coro)


def code_of(excinfo) -> str:
    return excinfo.value.code


def test_globals_persist_between_evals(mgr):
    lease = mgr.create("nb", ttl_sec=60)
    assert set(lease) == {"sid", "lease_id", "generation", "ttl_sec", "expires_at"}
    lid = lease["lease_id"]
    assert run(mgr.eval(lid, "counter = (counter or 0) + 1 return counter"))["value"] == 1
    assert run(mgr.eval(lid, "counter = counter + 1 return counter"))["value"] == 2
    out = run(mgr.eval(lid, "local a = ... return {sum = a.x + counter}", {"x": 40}))
    assert out["value"] == {"sum": 42}


def test_a_failed_eval_keeps_the_globals(mgr):
    lid = mgr.create("nb")["lease_id"]
    run(mgr.eval(lid, "keep = 'me'"))
    with pytest.raises(SkillTimeout):
        run(mgr.eval(lid, "while true do end", timeout_ms=100))
    assert run(mgr.eval(lid, "return keep"))["value"] == "me"


def test_print_output_is_returned_as_logs(mgr):
    lid = mgr.create("nb")["lease_id"]
    out = run(mgr.eval(lid, "print('a', 1) return true"))
    assert out["logs"] == [{"level": "info", "message": "a 1"}]


def test_ttl_is_clamped():
    assert clamp_ttl(0) == 1 and clamp_ttl(-5) == 1 and clamp_ttl(10_000) == 3600
    assert clamp_ttl(30.7) == 30
    with pytest.raises(InvalidArguments):
        clamp_ttl("60")


def test_create_clamps_ttl(mgr, clock):
    assert mgr.create("a", ttl_sec=99_999)["ttl_sec"] == 3600
    lease = mgr.create("b", ttl_sec=0)
    assert lease["ttl_sec"] == 1 and lease["expires_at"] == clock.now + 1


def test_lease_exists_and_replace(mgr):
    first = mgr.create("nb")
    with pytest.raises(SessionError) as info:
        mgr.create("nb")
    assert code_of(info) == "lease_exists"
    second = mgr.create("nb", replace=True)
    assert second["generation"] == first["generation"] + 1
    for _ in range(2):  # the tombstone gives the same answer every time
        with pytest.raises(SessionError) as info:
            run(mgr.eval(first["lease_id"], "return 1"))
        assert code_of(info) == "lease_replaced"
    assert run(mgr.eval(second["lease_id"], "return 2"))["value"] == 2


def test_lease_limit_exceeded(mgr):
    for i in range(3):
        mgr.create(f"s{i}")
    with pytest.raises(SessionError) as info:
        mgr.create("s3")
    assert code_of(info) == "lease_limit_exceeded"
    assert mgr.create("s0", replace=True)["generation"] == 2  # replacing does not add one


def test_lease_not_found(mgr):
    with pytest.raises(SessionError) as info:
        run(mgr.eval("lease_nope", "return 1"))
    assert code_of(info) == "lease_not_found"
    with pytest.raises(SessionError) as info:
        mgr.status("")
    assert code_of(info) == "lease_not_found"


def test_lease_closed_is_stable(mgr):
    lid = mgr.create("nb")["lease_id"]
    assert mgr.close(lid)["state"] == "closed"
    for op in (lambda: mgr.status(lid), lambda: mgr.close(lid), lambda: run(mgr.eval(lid, "x"))):
        with pytest.raises(SessionError) as info:
            op()
        assert code_of(info) == "lease_closed"
    assert mgr.list() == []
    assert [x["state"] for x in mgr.list(include_ended=True)] == ["closed"]


def test_lease_expires_with_an_injected_clock(mgr, clock):
    lid = mgr.create("nb", ttl_sec=10)["lease_id"]
    clock.now += 9
    run(mgr.eval(lid, "x = 1"))  # refreshes the ttl
    clock.now += 9
    assert run(mgr.eval(lid, "return x"))["value"] == 1
    clock.now += 10
    for _ in range(2):
        with pytest.raises(SessionError) as info:
            run(mgr.eval(lid, "return x"))
        assert code_of(info) == "lease_expired"


def test_expired_leases_are_reaped_and_free_their_slot(mgr, clock):
    for i in range(3):
        mgr.create(f"s{i}", ttl_sec=5)
    clock.now += 6
    assert mgr.reap() == 3
    assert mgr.list() == []
    mgr.create("fresh")
    states = sorted(x["state"] for x in mgr.list(include_ended=True))
    assert states == ["active", "expired", "expired", "expired"]


def test_sid_and_generation_mismatch(mgr):
    lease = mgr.create("nb")
    lid = lease["lease_id"]
    with pytest.raises(SessionError) as info:
        run(mgr.eval(lid, "return 1", sid="other"))
    assert code_of(info) == "lease_sid_mismatch"
    with pytest.raises(SessionError) as info:
        run(mgr.eval(lid, "return 1", generation=lease["generation"] + 1))
    assert code_of(info) == "lease_generation_mismatch"
    assert run(mgr.eval(lid, "return 1", sid="nb", generation=lease["generation"]))["value"] == 1


def test_lease_busy_while_an_eval_runs(mgr):
    lid = mgr.create("nb")["lease_id"]
    vm = mgr._vms[lid]
    started = threading.Event()

    async def scenario():
        first = asyncio.create_task(mgr.eval(lid, "while true do end", timeout_ms=500))
        # the first eval holds the VM from the moment it starts until it ends
        while not vm.lock.locked():
            await asyncio.sleep(0)
        started.set()
        assert mgr.status(lid)["busy"] is True
        with pytest.raises(SessionError) as info:
            await mgr.eval(lid, "return 1")
        with pytest.raises(SessionError) as info2:
            mgr.close(lid)
        with pytest.raises(SkillTimeout):
            await first
        return code_of(info), code_of(info2)

    assert run(scenario()) == ("lease_busy", "lease_busy")
    assert started.is_set()
    assert run(mgr.eval(lid, "return 'free'"))["value"] == "free"


def test_only_system_authority(mgr):
    agent = Caller(authority="delegated_tool", principal="agent")
    with pytest.raises(PermissionDenied):
        mgr.create("nb", caller=agent)
    lid = mgr.create("nb")["lease_id"]
    for op in (
        lambda: mgr.status(lid, caller=agent),
        lambda: mgr.list(caller=agent),
        lambda: mgr.close(lid, caller=agent),
        lambda: run(mgr.eval(lid, "return 1", caller=agent)),
    ):
        with pytest.raises(PermissionDenied):
            op()


def test_bad_inputs(mgr):
    with pytest.raises(InvalidArguments):
        mgr.create("bad sid!")
    lid = mgr.create("nb")["lease_id"]
    with pytest.raises(InvalidArguments):
        run(mgr.eval(lid, 42))  # type: ignore[arg-type]
    with pytest.raises(InvalidArguments):
        run(mgr.eval(lid, "return 1", timeout_ms=0))


def test_host_calls_are_denied_in_sessions(mgr):
    lid = mgr.create("nb")["lease_id"]
    with pytest.raises(PermissionDenied):
        run(mgr.eval(lid, "return vulcan.fs.read('/etc/passwd')"))
    assert run(mgr.eval(lid, "return vulcan.json.encode({1})"))["value"] == "[1]"


def test_handle_api_through_the_runtime():
    async def main():
        rt = Runtime.memory()
        try:
            handle = rt.sessions().create_handle("notebook", ttl_sec=30)
            assert rt.sessions() is rt.sessions()
            await handle.eval("x = 20")
            assert await handle.eval("return x * 2 + (...)", 2) == 42
            assert handle.status()["state"] == "active"
            handle.close()
            with pytest.raises(SessionError) as info:
                await handle.eval("return x")
            assert info.value.code == "lease_closed"
        finally:
            await rt.aclose()

    run(main())


def test_lease_records_survive_a_restart_but_vm_state_does_not(tmp_path, clock):
    db = tmp_path / "state.db"
    rt1 = Runtime(store=Store(db))
    m1 = SessionManager(rt1, clock=clock)
    lease = m1.create("nb")
    old = m1.create("gone")
    m1.close(old["lease_id"])
    asyncio.run(rt1.aclose())

    rt2 = Runtime(store=Store(db))
    m2 = SessionManager(rt2, clock=clock)
    try:
        with pytest.raises(SessionError) as info:
            run(m2.eval(lease["lease_id"], "return 1"))
        assert info.value.code == "lease_expired" and "another process" in info.value.message
        with pytest.raises(SessionError) as info:
            m2.status(old["lease_id"])
        assert info.value.code == "lease_closed"
        assert m2.create("nb", replace=True)["generation"] == 2  # generations keep counting
    finally:
        asyncio.run(rt2.aclose())
