"""kill -9 between decide and execute, and between execute and record.

After a restart nothing runs twice, and the ledger says what happened.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from skillyard import Runtime
from skillyard.errors import CallFailed
from skillyard.gate import actions, find, ledger

SCRIPT = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from skillyard import Runtime
    from skillyard.gate import actions, approvals, find
    home, marker, step = sys.argv[1], sys.argv[2], sys.argv[3]
    rt = Runtime.open(home, roots={})

    def body(args):
        with open(marker, "a") as f:
            f.write("ran\\n")
        return "done"

    rt.tool("echo")(body)
    rt.tool("deploy")(body)

    async def main():
        if step == "allowed":
            await rt.call("echo", {"n": 1})
        elif step == "hold":
            held = await rt.call("deploy", {"n": 1})
            action = actions.get(rt.store, held.decision.action_id)
            find(rt).submit({"decision": approvals.make_decision(action, "granted", "alice")})
            print(held.decision.action_id, flush=True)
            if os.environ.get("CRASH_AFTER_GRANT"):
                os.kill(os.getpid(), signal.SIGKILL)
            await rt.resume(held.decision.action_id)
        await rt.aclose()

    asyncio.run(main())
    """
)


@pytest.fixture
def home(tmp_path: Path, policy_file: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    (h / "config.toml").write_text(f'[gate]\npolicy = "{policy_file}"\n')
    return h


def crash(home: Path, step: str, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    marker = home / "marker"
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(home), str(marker), step],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert out.returncode == -signal.SIGKILL, out.stderr
    return out, marker


def runs(marker: Path) -> int:
    return marker.read_text().count("ran") if marker.exists() else 0


def restart(home: Path) -> Runtime:
    rt = Runtime.open(home, roots={})

    def body(args):
        with open(home / "marker", "a") as f:
            f.write("ran\n")
        return "again"

    rt.tool("echo")(body)
    rt.tool("deploy")(body)
    return rt


def story(rt: Runtime) -> list[str]:
    find(rt).flush()
    return [e["event"] for e in ledger.tail(rt.store, 100)]


@pytest.mark.parametrize(
    ("fault", "ran"),
    [("after_allow", 0), ("after_execute", 1)],
    ids=["between-decide-and-execute", "between-execute-and-record"],
)
def test_allowed_call_killed_mid_flight(home, fault, ran):
    _, marker = crash(home, "allowed", SKILLYARD_GATE_FAULT=fault)
    assert runs(marker) == ran
    rt = restart(home)
    events = story(rt)
    assert events == ["decided", "interrupted"]
    interrupted = ledger.tail(rt.store, 1)[0]
    assert (
        interrupted["tool"] == "echo" and "will not run again" in interrupted["payload"]["message"]
    )
    assert interrupted["parent"] == 1
    assert ledger.verify(rt.store)[1] == []
    asyncio.run(rt.aclose())
    assert runs(marker) == ran  # nothing re-ran on restart


def test_held_action_killed_after_grant_runs_once_after_restart(home):
    out, marker = crash(home, "hold", CRASH_AFTER_GRANT="1")
    action_id = out.stdout.strip()
    assert runs(marker) == 0
    rt = restart(home)
    assert actions.get(rt.store, action_id).status == "approved"  # the grant survived

    async def two_resumes():
        return await asyncio.gather(rt.resume(action_id), rt.resume(action_id))

    results = asyncio.run(two_resumes())
    assert [r.output for r in results] == ["again", "again"]
    assert runs(marker) == 1
    assert story(rt) == ["decided", "approval", "claimed", "result"]
    asyncio.run(rt.aclose())


@pytest.mark.parametrize(
    ("fault", "ran"),
    [("after_claim", 0), ("after_execute", 1)],
    ids=["between-claim-and-execute", "between-execute-and-record"],
)
def test_held_action_killed_while_executing_never_runs_again(home, fault, ran):
    out, marker = crash(home, "hold", SKILLYARD_GATE_FAULT=fault)
    action_id = out.stdout.strip()
    assert runs(marker) == ran
    rt = restart(home)
    assert actions.get(rt.store, action_id).status == "interrupted"
    with pytest.raises(CallFailed) as err:
        asyncio.run(rt.resume(action_id, wait_ms=100))
    assert err.value.details["kind"] == "internal_error"
    assert story(rt) == ["decided", "approval", "claimed", "interrupted"]
    asyncio.run(rt.aclose())
    assert runs(marker) == ran
