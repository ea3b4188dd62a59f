"""The process transport, one process per call: json and lines modes, limits, scrubbing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skillyard import SyncRuntime
from skillyard.errors import (
    LimitExceeded,
    ManifestError,
    OutputTooLarge,
    ProtocolError,
    SkillCrashed,
    SkillError,
    SkillTimeout,
)
from tests.transports.process_helpers import (
    is_zombie_or_gone,
    make_package,
    wait_for_file,
    wait_group_gone,
)

ECHO = """
import json, sys
args = json.load(sys.stdin)
print(json.dumps({"got": args, "sum": args["a"] + args["b"]}))
"""


def add(rt: SyncRuntime, pkg: Path) -> None:
    rt.runtime.add_package(pkg)


def test_json_mode_round_trip(rt, tmp_path):
    add(rt, make_package(tmp_path, "adder", ECHO))
    result = rt.call("adder-run", {"a": 2, "b": 40, "note": "héllo ✓"})
    assert result.output == {"got": {"a": 2, "b": 40, "note": "héllo ✓"}, "sum": 42}


def test_json_mode_error_object_is_a_skill_error(rt, tmp_path):
    script = """
    import json, sys
    json.load(sys.stdin)
    print(json.dumps({"error": {"message": "cannot divide by zero", "code": "bad_input"}}))
    """
    add(rt, make_package(tmp_path, "div", script))
    with pytest.raises(SkillError, match="cannot divide by zero") as info:
        rt.call("div-run", {})
    assert info.value.details["code"] == "bad_input"


@pytest.mark.parametrize(
    ("stdout", "match"),
    [
        ("print('hello, not json')", "not one JSON object"),
        ("print('[1, 2]')", "must be a JSON object"),
        ("pass", "wrote nothing on stdout"),
        ("print('{\"x\": NaN}')", "not one JSON object"),
        ('import sys; sys.stdout.buffer.write(b\'{"x": "\\xff"}\')', "not one JSON object"),
        ("print('{\"a\": 1}'); print('{\"b\": 2}')", "not one JSON object"),
    ],
    ids=["text", "array", "empty", "nan", "invalid-utf8", "two-objects"],
)
def test_json_mode_garbage_is_a_protocol_error(rt, tmp_path, stdout, match):
    add(rt, make_package(tmp_path, "garbage", f"import sys\nsys.stdin.read()\n{stdout}\n"))
    with pytest.raises(ProtocolError, match=match):
        rt.call("garbage-run", {})


def test_crash_reports_status_and_stderr_tail(rt, tmp_path):
    script = """
    import sys
    sys.stderr.write("x" * 5000 + "\\nboom: the disk is on fire\\n")
    sys.exit(3)
    """
    add(rt, make_package(tmp_path, "crasher", script))
    with pytest.raises(SkillCrashed) as info:
        rt.call("crasher-run", {})
    msg = str(info.value)
    assert "exited with status 3" in msg
    assert "boom: the disk is on fire" in msg
    assert len(msg) < 1500  # the tail is capped


def test_killed_by_signal_is_a_crash(rt, tmp_path):
    add(
        rt,
        make_package(tmp_path, "sig", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n"),
    )
    with pytest.raises(SkillCrashed, match="killed by SIGSEGV"):
        rt.call("sig-run", {})


def test_timeout_kills_the_whole_group_and_leaves_no_orphan(rt, tmp_path):
    script = """
    import json, os, subprocess, sys, time
    args = json.load(sys.stdin)
    child = subprocess.Popen(["sleep", "60"])
    with open(args["pids"], "w") as f:
        f.write(f"{os.getpid()} {os.getpgid(0)} {child.pid}")
    time.sleep(60)
    """
    add(rt, make_package(tmp_path, "sleeper", script, limits={"timeout_sec": 1}))
    pids = tmp_path / "pids.txt"
    with pytest.raises(SkillTimeout, match="process group"):
        rt.call("sleeper-run", {"pids": str(pids)})
    leader, pgid, grandchild = map(int, wait_for_file(pids).split())
    assert pgid == leader  # the child leads its own group
    assert is_zombie_or_gone(leader) == "gone"  # reaped by the runtime
    assert wait_group_gone(pgid) == []
    assert is_zombie_or_gone(grandchild) in ("gone", "zombie")


def test_leftover_background_processes_are_killed_when_the_call_ends(rt, tmp_path):
    script = """
    import json, subprocess, sys
    args = json.load(sys.stdin)
    child = subprocess.Popen(["sleep", "60"], stdout=subprocess.DEVNULL)
    print(json.dumps({"grandchild": child.pid, "pgid": __import__("os").getpgid(0)}))
    """
    add(rt, make_package(tmp_path, "forker", script))
    out = rt.call("forker-run", {}).output
    assert wait_group_gone(out["pgid"]) == []


def test_output_cap_kills_the_process(rt, tmp_path):
    script = """
    import json, os, sys
    args = json.load(sys.stdin)
    open(args["pid"], "w").write(str(os.getpid()))
    while True:
        sys.stdout.write("x" * 65536)
    """
    add(rt, make_package(tmp_path, "flood", script, limits={"max_output_bytes": 4096}))
    with pytest.raises(OutputTooLarge, match="4096 bytes"):
        rt.call("flood-run", {"pid": str(tmp_path / "pid")})
    pid = int(wait_for_file(tmp_path / "pid"))
    assert wait_group_gone(pid) == []


def test_env_is_scrubbed_and_declared_names_pass(rt, tmp_path, monkeypatch):
    monkeypatch.setenv("SKILLYARD_TEST_SECRET", "hunter2-undeclared")
    monkeypatch.setenv("SKILLYARD_TEST_DECLARED", "visible-value")
    script = """
    import json, os, sys
    sys.stdin.read()
    print(json.dumps({"env": dict(os.environ), "home_exists": os.path.isdir(os.environ["HOME"])}))
    """
    pkg = make_package(
        tmp_path, "envy", script, options={"env": ["SKILLYARD_TEST_DECLARED", "NOT_SET_ANYWHERE"]}
    )
    add(rt, pkg)
    out = rt.call("envy-run", {}).output
    env = out["env"]
    assert "SKILLYARD_TEST_SECRET" not in env
    assert "hunter2-undeclared" not in str(env)
    assert env["SKILLYARD_TEST_DECLARED"] == "visible-value"
    assert "NOT_SET_ANYWHERE" not in env
    assert set(env) <= {
        "SKILLYARD_TOOL",
        "SKILLYARD_METHOD",
        "SKILLYARD_CALL_ID",
        "PATH",
        "LANG",
        "HOME",
        "TMPDIR",
        "PYTHONUNBUFFERED",
        "SKILLYARD_TEST_DECLARED",
        "LC_CTYPE",
    }
    assert env["HOME"] != os.environ.get("HOME") and out["home_exists"]
    assert (env["SKILLYARD_TOOL"], env["SKILLYARD_METHOD"]) == ("envy-run", "run")
    assert not Path(env["HOME"]).exists()  # the private home is removed after the call


def test_declared_secret_is_not_echoed_in_errors(rt, tmp_path, monkeypatch):
    monkeypatch.setenv("SKILLYARD_TEST_TOKEN", "tok-5ecret-value")
    script = """
    import os, sys
    print("token is", os.environ["SKILLYARD_TEST_TOKEN"])
    sys.stderr.write("auth failed with " + os.environ["SKILLYARD_TEST_TOKEN"] + "\\n")
    sys.exit(1)
    """
    add(rt, make_package(tmp_path, "leaky", script, options={"env": ["SKILLYARD_TEST_TOKEN"]}))
    with pytest.raises(SkillCrashed) as info:
        rt.call("leaky-run", {})
    assert "tok-5ecret-value" not in str(info.value)
    assert "auth failed with ***" in str(info.value)


def test_cwd_is_the_package_or_the_declared_subdirectory(rt, tmp_path):
    script = "import json, os, sys\nsys.stdin.read()\nprint(json.dumps({'cwd': os.getcwd()}))\n"
    plain = make_package(tmp_path, "where", script)
    add(rt, plain)
    assert rt.call("where-run", {}).output["cwd"] == str(plain.resolve())
    pkg = tmp_path / "where-sub"
    (pkg / "data").mkdir(parents=True)
    make_package(tmp_path, "where-sub", script, options={"cwd": "data"})
    add(rt, pkg)
    assert rt.call("where-sub-run", {}).output["cwd"] == str((pkg / "data").resolve())


@pytest.mark.parametrize(
    "cwd", ["..", "/tmp", "missing", "../where"], ids=["up", "abs", "missing", "sibling"]
)
def test_cwd_outside_the_package_is_refused_at_load(rt, tmp_path, cwd):
    (tmp_path / "where").mkdir()
    pkg = make_package(tmp_path, "escape", "print('{}')\n", options={"cwd": cwd})
    with pytest.raises(ManifestError, match=r"options\.cwd"):
        add(rt, pkg)


def test_rlimits_are_set_in_the_child(rt, tmp_path):
    script = """
    import json, resource, sys
    sys.stdin.read()
    print(json.dumps({name: resource.getrlimit(getattr(resource, name))
                      for name in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NOFILE")}))
    """
    limits = {"cpu_sec": 7, "memory_mb": 900, "open_files": 40}
    add(rt, make_package(tmp_path, "limited", script, limits=limits))
    out = rt.call("limited-run", {}).output
    assert out["RLIMIT_CPU"] == [7, 8]  # SIGXCPU at 7 s, SIGKILL at 8 s
    assert out["RLIMIT_AS"] == [900 * 1024 * 1024] * 2
    assert out["RLIMIT_NOFILE"] == [40, 40]


def test_open_files_limit_bites(rt, tmp_path):
    script = """
    import json, sys
    sys.stdin.read()
    files = []
    try:
        for _ in range(100):
            files.append(open("/dev/null"))
    except OSError as exc:
        print(json.dumps({"opened": len(files), "errno": exc.errno}))
    """
    add(rt, make_package(tmp_path, "fds", script, limits={"open_files": 16}))
    out = rt.call("fds-run", {}).output
    assert out["opened"] < 16 and out["errno"] == 24  # EMFILE


def test_cpu_limit_is_limit_exceeded(rt, tmp_path):
    script = "import sys\nsys.stdin.read()\nwhile True:\n    pass\n"
    add(rt, make_package(tmp_path, "spin", script, limits={"cpu_sec": 1, "timeout_sec": 20}))
    with pytest.raises(LimitExceeded, match="cpu_sec"):
        rt.call("spin-run", {})


def test_lines_mode_streams_deltas_and_usage(rt, tmp_path):
    script = """
    import json, sys
    args = json.load(sys.stdin)
    for i in range(args["n"]):
        print(f"line {i}", flush=True)
    sys.stdout.buffer.write(b"bad \\xff byte\\r\\nlast without newline")
    """
    add(rt, make_package(tmp_path, "counter", script, mode="lines"))
    seen: list[dict] = []
    result = rt.call("counter-run", {"n": 3}, sink=seen.append)
    kinds = [e["kind"] for e in seen]
    assert kinds == ["start", "delta", "delta", "delta", "delta", "delta", "usage"]
    texts = [e["text"] for e in seen if e["kind"] == "delta"]
    assert texts == ["line 0", "line 1", "line 2", "bad \ufffd byte", "last without newline"]
    assert result.output == {"text": "\n".join(texts), "lines": 5}
    assert seen[-1]["lines"] == 5
    assert [e["kind"] for e in result.events] == kinds


def test_lines_mode_example_package(rt):
    examples = Path(__file__).resolve().parents[2] / "examples" / "skills"
    rt.runtime.add_package(examples / "line-grep")
    result = rt.call(
        "line-grep-search",
        {"text": "alpha\nBeta\ngamma\nbetamax", "pattern": "beta", "ignore_case": True},
    )
    assert result.output == {"text": "2: Beta\n4: betamax", "lines": 2}
    with pytest.raises(SkillCrashed, match="invalid pattern"):
        rt.call("line-grep-search", {"text": "x", "pattern": "("})


def test_missing_program_is_a_clear_error(rt, tmp_path):
    pkg = make_package(tmp_path, "nope", "")
    text = (
        (pkg / "skill.toml")
        .read_text()
        .replace('["{python}", "main.py"]', '["no-such-program-xyz"]')
    )
    (pkg / "skill.toml").write_text(text)
    add(rt, pkg)
    with pytest.raises(Exception, match="cannot start no-such-program-xyz"):
        rt.call("nope-run", {})


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"mode": "socket"}, "options.mode"),
        ({"concurrency": 0}, "options.concurrency"),
        ({"concurrency": "many"}, "options.concurrency"),
        ({"spin_us": -1}, "options.spin_us"),
        ({"env": ["OK", "BAD NAME"]}, "options.env[1]"),
        ({"env": "HOME"}, "options.env"),
        ({"shell": True}, "options.shell"),
    ],
    ids=["mode", "concurrency-zero", "concurrency-type", "spin", "env-name", "env-type", "unknown"],
)
def test_bad_process_options_name_the_field(rt, tmp_path, options, field):
    pkg = make_package(tmp_path, "badopts", "", options=options)
    with pytest.raises(ManifestError) as info:
        add(rt, pkg)
    assert info.value.field == field
    assert str(pkg / "skill.toml") in str(info.value)
