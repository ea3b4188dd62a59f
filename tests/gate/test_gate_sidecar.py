"""`skillyard runtime gate` driven by the published lodestar-runtime-client."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
from lodestar_runtime_client import GateClient, GateError

from skillyard.gate.canon import parse_iso

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gate"
LAUNCHER = [sys.executable, "-m", "skillyard"]
pytestmark = pytest.mark.slow


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A private copy of examples/gate (its state lives next to the config)."""
    target = tmp_path / "gate"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".state"))
    return target


def client(example: Path) -> GateClient:
    return GateClient(str(example / "gate.config.json"), launcher=LAUNCHER, ready_timeout_s=60)


class Body:
    """A tool body that counts its runs (bodies run on the client's threads)."""

    def __init__(self, output=None) -> None:
        self.calls: list[dict] = []
        self.lock = threading.Lock()
        self.output = output

    def __call__(self, args: dict) -> dict:
        with self.lock:
            self.calls.append(args)
        return {
            "output": self.output if self.output is not None else {"got": args},
            "documents": [{"text": "note", "source": "test"}],
        }


def grant_from_cli(example: Path, action_id: str, kind: str = "grant") -> None:
    out = subprocess.run(
        [
            *LAUNCHER,
            "approvals",
            kind,
            "--config",
            str(example / "gate.config.json"),
            action_id,
            "--key",
            str(example / "alice.example-key.json"),
            "--reason",
            "test",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


def test_allow_deny_and_unregistered(example):
    echo, other = Body(), Body()
    with client(example) as gate:
        assert gate.session_id and gate.project_id == "skillyard-gate-example"
        assert gate.register_tool("echo", echo)["type"] == "registered"
        gate.register_tool("other", other)
        done = gate.govern("echo", {"text": "hi"})
        assert done["phase"] == "completed" and done["output"] == {"got": {"text": "hi"}}
        assert done["documents"] == [{"text": "note", "source": "test"}]
        denied = gate.govern("other", {})
        assert (denied["phase"], denied["kind"]) == ("rejected", "policy_denied")
        unknown = gate.govern("never-registered", {})
        assert (unknown["phase"], unknown["kind"]) == ("rejected", "unregistered_tool")
        with pytest.raises(GateError):
            gate.govern("echo", "not an object")  # type: ignore[arg-type]
    assert echo.calls == [{"text": "hi"}] and other.calls == []
    audit = subprocess.run(
        [*LAUNCHER, "--json", "audit", "tail", "--config", str(example / "gate.config.json")],
        capture_output=True,
        text=True,
        check=True,
    )
    entries = orjson.loads(audit.stdout)
    assert [(e["event"], e["tool"], e["actor"]) for e in entries] == [
        ("call", "echo", "example-agent"),
        ("decided", "other", "example-agent"),
    ]


def test_hold_then_signed_grant_from_another_process_completes_once(example):
    deploy = Body({"deployed": True})
    with client(example) as gate:
        gate.register_tool("deploy", deploy)
        held = gate.govern("deploy", {"env": "prod"})
        assert held["phase"] == "pending_approval" and held["action_id"] and held["request_id"]
        assert parse_iso(held["deadline"]) > 0
        assert gate.resume(held["action_id"], held["request_id"])["phase"] == "pending_approval"
        assert deploy.calls == []
        grant_from_cli(example, held["action_id"])
        done = gate.resume(held["action_id"], held["request_id"], wait_ms=5000)
        assert done["phase"] == "completed" and done["output"] == {"deployed": True}
        again = gate.resume(held["action_id"], held["request_id"])
        assert again["phase"] == "completed"  # the recorded outcome; nothing re-runs
        wrong = gate.resume(held["action_id"], "req_forged")
        assert (wrong["phase"], wrong["kind"]) == ("rejected", "precondition_failed")
    assert deploy.calls == [{"env": "prod"}]


def test_hold_denied_by_the_approver(example):
    deploy = Body()
    with client(example) as gate:
        gate.register_tool("deploy", deploy)
        held = gate.govern("deploy", {"env": "prod"})
        grant_from_cli(example, held["action_id"], "deny")
        out = gate.resume(held["action_id"], held["request_id"], wait_ms=2000)
        assert (out["phase"], out["kind"]) == ("rejected", "approval_denied")
    assert deploy.calls == []


def test_hold_times_out(example):
    policy = example / "policy.toml"
    policy.write_text(policy.read_text().replace("timeout_sec = 600", "timeout_sec = 0.3"))
    deploy = Body()
    with client(example) as gate:
        gate.register_tool("deploy", deploy)
        held = gate.govern("deploy", {})
        out = gate.resume(held["action_id"], held["request_id"], wait_ms=10_000)
        assert (out["phase"], out["kind"]) == ("rejected", "approval_timeout")
    assert deploy.calls == []


def test_concurrent_resumes_execute_once(example):
    deploy = Body({"ok": 1})
    with client(example) as gate, client(example) as second:
        gate.register_tool("deploy", deploy)
        second.register_tool("deploy", deploy)
        held = gate.govern("deploy", {"n": 1})
        grant_from_cli(example, held["action_id"])
        results: list[dict] = []

        def resume(g: GateClient) -> None:
            results.append(g.resume(held["action_id"], held["request_id"], wait_ms=5000))

        threads = [threading.Thread(target=resume, args=(g,)) for g in (gate, second) * 3]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert len(results) == 6 and all(r["phase"] == "completed" for r in results)
    assert deploy.calls == [{"n": 1}]


def test_gate_restarted_mid_hold_still_executes_once(example):
    deploy = Body({"v": 2})
    with client(example) as gate:
        gate.register_tool("deploy", deploy)
        held = gate.govern("deploy", {"env": "prod"})
    grant_from_cli(example, held["action_id"])  # decided while no gate is running
    with client(example) as gate:
        gate.register_tool("deploy", deploy)
        done = gate.resume(held["action_id"], held["request_id"], wait_ms=5000)
        assert done["phase"] == "completed" and done["output"] == {"v": 2}
    with client(example) as gate:
        gate.register_tool("deploy", deploy)
        assert gate.resume(held["action_id"], held["request_id"])["phase"] == "completed"
    assert deploy.calls == [{"env": "prod"}]


def test_tool_errors_and_skillyard_skills_through_govern(example, tmp_path):
    skills = tmp_path / "skills"
    pkg = skills / "echo"  # a skillyard package whose tool name `echo-say` no rule allows
    pkg.mkdir(parents=True)
    (pkg / "skill.toml").write_text(
        'runtime = "python"\nentry = "skill.py"\n[[methods]]\nname = "say"\n'
    )
    (pkg / "skill.py").write_text("def say(args):\n    return {'said': args}\n")
    cfg = orjson.loads((example / "gate.config.json").read_bytes())
    cfg["roots"] = {"project": [str(skills)]}
    (example / "gate.config.json").write_bytes(orjson.dumps(cfg))
    policy = example / "policy.toml"
    policy.write_text(
        policy.read_text()
        .replace('tool = "echo"', 'tool = ["echo", "echo-say"]')
        .replace("[contracts.echo]", '[contracts."echo*"]')
    )

    def broken(args: dict) -> dict:
        raise RuntimeError("disk full")

    with client(example) as gate:
        gate.register_tool("echo", broken)
        failed = gate.govern("echo", {})
        assert (failed["phase"], failed["kind"]) == ("failed", "execution_failed")
        assert "disk full" in failed["reason"]
        native = gate.govern("echo-say", {"x": 1})
        assert native["phase"] == "completed" and native["output"] == {"said": {"x": 1}}
        with pytest.raises(GateError, match="already a skillyard skill"):
            gate.register_tool("echo-say", broken)


def raw_session(example: Path, lines: list[bytes]) -> list[dict]:
    proc = subprocess.run(
        [*LAUNCHER, "runtime", "gate", "--config", str(example / "gate.config.json")],
        input=b"".join(lines) + b'{"type":"shutdown"}\n',
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return [orjson.loads(line) for line in proc.stdout.splitlines()]


def test_malformed_lines_get_an_error_and_never_hang(example):
    replies = raw_session(
        example,
        [
            b"this is not json\n",
            b'{"type":"govern","id":7,"tool":"echo","args":{"x":NaN}}\n',
            b'{"type":"govern","id":8,"tool":"echo","args":{"x":Infinity}}\n',
            b"[1,2,3]\n",
            b'{"type":"teleport","id":9}\n',
            b'{"type":"govern","tool":"echo","args":{}}\n',
            b'{"type":"govern","id":10,"tool":"echo","args":[1]}\n',
            b'{"type":"register_tool","id":11,"name":"bad name!"}\n',
            b'{"type":"resume","id":12,"action_id":"act_x","request_id":"r","wait_ms":-1}\n',
            b'{"type":"tool_result","id":"rt-404","output":1}\n',
            b"\n",
            b'{"type":"register_tool","id":13,"name":"echo"}\n',
        ],
    )
    assert replies[0]["type"] == "ready"
    by_id = {r.get("id"): r for r in replies[1:]}
    for rid in (7, 8, 9, 10, 11, 12):
        assert by_id[rid]["type"] == "error", by_id[rid]
    assert "NaN" in by_id[7]["message"] or "malformed" in by_id[7]["message"]
    assert by_id[13] == {"type": "registered", "id": 13, "name": "echo"}
    errors = [r for r in replies if r["type"] == "error"]
    assert len(errors) == 10  # every bad line answered, the blank one ignored


def test_bad_config_fails_before_ready(tmp_path):
    cfg = tmp_path / "gate.json"
    cfg.write_text('{"home": "state", "gate": {}}')
    with pytest.raises(GateError, match="exited before signalling ready"):
        GateClient(str(cfg), launcher=LAUNCHER, ready_timeout_s=60)
    cfg.write_text('{"home": "state", "gate": {"policy": "missing.toml"}}')
    with pytest.raises(GateError, match="exited before signalling ready"):
        GateClient(str(cfg), launcher=LAUNCHER, ready_timeout_s=60)


# The client's body thread answers into the pipe of the gate we killed: its own warning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_gate_killed_while_a_held_tool_runs_never_runs_it_again(example):
    import os
    import signal

    started, release = threading.Event(), threading.Event()
    calls: list[dict] = []

    def slow(args: dict) -> dict:
        calls.append(args)
        started.set()
        release.wait(30)
        return {"output": "too late"}

    gate = client(example)
    gate.register_tool("deploy", slow)
    held = gate.govern("deploy", {"env": "prod"})
    grant_from_cli(example, held["action_id"])
    outcome: list[object] = []

    def resume() -> None:
        try:
            outcome.append(gate.resume(held["action_id"], held["request_id"], wait_ms=5000))
        except GateError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=resume, daemon=True)
    waiter.start()
    assert started.wait(30), "the tool body never started"
    os.kill(gate._proc.pid, signal.SIGKILL)  # kill -9 between execute and record
    gate._proc.wait(timeout=30)
    waiter.join(timeout=30)
    assert isinstance(outcome[0], GateError)  # the client was told, not left hanging
    release.set()
    gate.close()
    with client(example) as restarted:
        restarted.register_tool("deploy", slow)
        after = restarted.resume(held["action_id"], held["request_id"], wait_ms=1000)
        assert (after["phase"], after["kind"]) == ("failed", "internal_error")
    assert calls == [{"env": "prod"}]
    shown = subprocess.run(
        [
            *LAUNCHER,
            "--json",
            "audit",
            "show",
            held["action_id"],
            "--config",
            str(example / "gate.config.json"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    events = [e["event"] for e in orjson.loads(shown.stdout)]
    assert events == ["decided", "approval", "claimed", "interrupted"]


@pytest.mark.parametrize(
    "config",
    [
        '{"home": 3, "gate": {"policy": "policy.toml"}}',
        '{"gate": {"policy": "policy.toml"}, "surprise": true}',
        '{"gate": {"policy": "policy.toml"}, "tool_exec_timeout_ms": -1}',
        "[1, 2]",
        "{not json",
    ],
    ids=["home-not-a-string", "unknown-key", "bad-timeout", "not-an-object", "not-json"],
)
def test_hostile_sidecar_configs_are_refused_with_a_reason(tmp_path, config):
    from skillyard.errors import ConfigError
    from skillyard.serve.gate_rpc import SidecarConfig

    path = tmp_path / "gate.json"
    path.write_text(config)
    with pytest.raises(ConfigError) as err:
        SidecarConfig(path)
    assert str(path) in err.value.message
