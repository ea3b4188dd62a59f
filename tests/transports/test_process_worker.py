"""The process transport's persistent worker: multiplexing, events, host requests, failures."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from skillyard import SyncRuntime
from skillyard.errors import (
    HostError,
    OutputTooLarge,
    PermissionDenied,
    ProtocolError,
    SkillCrashed,
    SkillError,
    SkillTimeout,
)
from skillyard.transports.process import ProcessTransport
from tests.transports.process_helpers import (
    is_zombie_or_gone,
    make_package,
    wait_for_file,
    wait_group_gone,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "skills"

HELPER_WORKER = """
import os, subprocess, sys, threading, time
from skillyard.worker import Error, HostError, Result, serve

barrier = threading.Barrier(4, timeout=20)

def echo(args, ctx):
    return {"args": args, "pid": os.getpid(), "pgid": os.getpgid(0), "call_id": ctx.call_id,
            "method": ctx.method, "tool": ctx.tool, "has_deadline": ctx.remaining > 0}

def events(args, ctx):
    print("this goes to stderr, not into the protocol")
    for i in range(3):
        ctx.emit("progress", step=i)
    return Result({"ok": True}, content="done", llm_context="ctx text", usage={"tokens": 3})

def host(args, ctx):
    try:
        return {"value": ctx.host(args["method"], **args.get("params", {}))}
    except HostError as exc:
        return {"error": exc.code, "rpc": exc.rpc_code, "message": exc.message}

def together(args, ctx):
    barrier.wait()
    return {"pid": os.getpid(), "thread": threading.get_ident()}

def sleep(args, ctx):
    child = subprocess.Popen(["sleep", "60"])
    with open(args["pidfile"], "w") as f:
        f.write(f"{os.getpid()} {os.getpgid(0)} {child.pid}")
    time.sleep(60)

def crash(args, ctx):
    sys.stderr.write("about to fall over\\n")
    sys.stderr.flush()
    os._exit(9)

def fail(args, ctx):
    raise Error("no such city", data={"city": args.get("city")})

def boom(args, ctx):
    raise ValueError("bad value")

def big(args, ctx):
    return "x" * args["n"]

serve({"echo": echo, "events": events, "host": host, "together": together, "sleep": sleep,
       "crash": crash, "fail": fail, "boom": boom, "big": big}, concurrency=CONCURRENCY)
"""
METHODS = ("echo", "events", "host", "together", "sleep", "crash", "fail", "boom", "big")

RAW_WORKER = r"""
import json, os, sys
out = sys.stdout.buffer
def send(b):
    out.write(b + b"\n"); out.flush()
for line in sys.stdin.buffer:
    msg = json.loads(line)
    if msg.get("method") != "call":
        continue
    rid = msg["id"]
    do = msg["params"]["args"].get("do")
    head = b'{"jsonrpc":"2.0","id":%d,' % rid
    if do == "nan":
        send(head + b'"result":{"output":NaN}}')
    elif do == "wrong-id":
        send(b'{"jsonrpc":"2.0","id":%d,"result":{"output":1}}' % (rid + 1000))
    elif do == "utf8":
        send(head + b'"result":{"output":"\xff\xfe"}}')
    elif do == "huge":
        out.write(b"x" * 300000); out.flush()
        sys.stdin.readline()
    elif do == "garbage":
        send(b"Traceback (most recent call last): oops")
    elif do == "array":
        send(b"[1, 2, 3]")
    elif do == "no-result":
        send(head[:-1] + b"}")
    elif do == "bad-result":
        send(head + b'"result":5}')
    elif do == "bad-content":
        send(head + b'"result":{"output":1,"content":7}}')
    elif do == "unknown-call":
        send(b'{"jsonrpc":"2.0","id":"h-1","method":"host.kv.get","params":{"call_id":"nope","key":"k"}}')
        reply = json.loads(sys.stdin.buffer.readline())
        send(head + b'"result":{"output":%s}}' % json.dumps(reply).encode())
    elif do == "bad-host-params":
        send(b'{"jsonrpc":"2.0","id":"h-2","method":"host.kv.get","params":[1]}')
        reply = json.loads(sys.stdin.buffer.readline())
        send(head + b'"result":{"output":%s}}' % json.dumps(reply).encode())
    else:
        send(head + b'"result":{"output":{"pid":%d}}}' % os.getpid())
"""


def helper_package(base: Path, name: str = "helper", *, concurrency: int = 1, **kw: Any) -> Path:
    script = HELPER_WORKER.replace("CONCURRENCY", str(concurrency))
    return make_package(base, name, script, mode="worker", methods=METHODS, **kw)


def transport(rt: SyncRuntime) -> ProcessTransport:
    t = rt.runtime.transport("process")
    assert isinstance(t, ProcessTransport)
    return t


def test_worker_round_trip_stays_in_one_process(rt, tmp_path):
    rt.runtime.add_package(helper_package(tmp_path))
    first = rt.call("helper-echo", {"x": [1, "two", {"three": None}]})
    second = rt.call("helper-echo", {"y": "é"})
    assert first.output["args"] == {"x": [1, "two", {"three": None}]}
    assert second.output["args"] == {"y": "é"}
    assert first.output["pid"] == second.output["pid"] == first.output["pgid"]
    assert first.output["call_id"] == first.call_id
    assert (first.output["method"], first.output["tool"]) == ("echo", "helper-echo")
    assert first.output["has_deadline"] is True


def test_example_text_stats_worker(rt):
    rt.runtime.add_package(EXAMPLES / "text-stats")
    result = rt.call(
        "text-stats-analyze", {"text": "The cat saw the other cat.\nThe end", "top": 2}
    )
    assert result.output["words"] == 8 and result.output["lines"] == 2
    assert result.output["top_words"] == [{"word": "the", "count": 3}, {"word": "cat", "count": 2}]
    assert result.content == "8 words, 2 lines, 34 characters"


def test_events_content_and_usage_and_print_do_not_break_the_protocol(rt, tmp_path):
    rt.runtime.add_package(helper_package(tmp_path))
    seen: list[dict[str, Any]] = []
    result = rt.call("helper-events", {}, sink=seen.append)
    assert seen == [{"kind": "progress", "step": i} for i in range(3)]
    assert result.output == {"ok": True}
    assert (result.content, result.llm_context, result.usage) == ("done", "ctx text", {"tokens": 3})
    assert [e["step"] for e in result.events] == [0, 1, 2]


def test_skill_errors_carry_the_workers_message(rt, tmp_path):
    rt.runtime.add_package(helper_package(tmp_path))
    with pytest.raises(SkillError, match="no such city") as info:
        rt.call("helper-fail", {"city": "Atlantis"})
    assert info.value.details["data"] == {"city": "Atlantis"}
    with pytest.raises(SkillError, match="ValueError: bad value"):
        rt.call("helper-boom", {})
    assert rt.call("helper-echo", {}).output["args"] == {}  # the worker is still fine


def test_crash_is_reported_and_the_worker_restarts(rt, tmp_path):
    rt.runtime.add_package(helper_package(tmp_path))
    before = rt.call("helper-echo", {}).output["pid"]
    with pytest.raises(SkillCrashed, match="status 9") as info:
        rt.call("helper-crash", {})
    assert "about to fall over" in str(info.value)
    assert wait_group_gone(before) == []
    assert is_zombie_or_gone(before) == "gone"
    after = rt.call("helper-echo", {}).output["pid"]
    assert after != before


def test_timeout_kills_the_worker_group_and_the_next_call_gets_a_new_one(rt, tmp_path):
    rt.runtime.add_package(helper_package(tmp_path, limits={"timeout_sec": 1}))
    pidfile = tmp_path / "pids"
    with pytest.raises(SkillTimeout, match="process group was killed"):
        rt.call("helper-sleep", {"pidfile": str(pidfile)})
    leader, pgid, grandchild = map(int, wait_for_file(pidfile).split())
    assert leader == pgid
    assert wait_group_gone(pgid) == []
    assert is_zombie_or_gone(leader) == "gone"
    assert is_zombie_or_gone(grandchild) in ("gone", "zombie")
    assert rt.call("helper-echo", {}).output["pid"] != leader


def test_concurrent_calls_run_at_once_in_a_threaded_worker(rt, tmp_path):
    rt.runtime.add_package(helper_package(tmp_path, concurrency=4))

    async def four() -> list[Any]:
        return await asyncio.gather(*(rt.runtime.call("helper-together", {}) for _ in range(4)))

    # Each call waits on a 4-party barrier inside the worker: this only finishes when all
    # four requests are in flight on the one worker at the same time.
    results = rt.run(four())
    assert len({r.output["pid"] for r in results}) == 1
    assert len({r.output["thread"] for r in results}) == 4


def test_multiplexed_answers_go_to_their_own_calls(rt, tmp_path):
    rt.runtime.add_package(helper_package(tmp_path))

    async def many() -> list[Any]:
        return await asyncio.gather(*(rt.runtime.call("helper-echo", {"i": i}) for i in range(25)))

    results = rt.run(many())
    assert [r.output["args"]["i"] for r in results] == list(range(25))
    assert all(r.output["call_id"] == r.call_id for r in results)
    assert len({r.output["pid"] for r in results}) == 1


class RecordingHost:
    """A host that records what it is asked and answers from a small table."""

    def __init__(self, log: list[tuple[str, str, dict[str, Any]]], tool: str) -> None:
        self.log = log
        self.tool = tool

    async def dispatch(self, method: str, params: dict[str, Any]) -> Any:
        self.log.append((self.tool, method, params))
        if method == "kv.get":
            return {"stored": params["key"]}
        if method == "fs.write_text":
            raise PermissionDenied("fs.write_text outside the allowed paths")
        if method == "kv.put":
            raise HostError("the store is full", code="quota_exceeded")
        raise RuntimeError("internal details that must not leak")


def test_reverse_host_requests_are_routed_to_the_calls_host(rt, tmp_path):
    log: list[tuple[str, str, dict[str, Any]]] = []
    rt.runtime.host_factory = lambda ctx: RecordingHost(log, ctx.tool)
    rt.runtime.add_package(helper_package(tmp_path))
    out = rt.call("helper-host", {"method": "kv.get", "params": {"key": "colour"}}).output
    assert out == {"value": {"stored": "colour"}}
    assert log == [("helper-host", "kv.get", {"key": "colour"})]  # call_id is not passed on

    denied = rt.call("helper-host", {"method": "fs.write_text", "params": {"path": "/x"}}).output
    assert denied["error"] == "permission_denied" and denied["rpc"] == -32001
    assert "outside the allowed paths" in denied["message"]

    failed = rt.call("helper-host", {"method": "kv.put", "params": {"key": "k"}}).output
    assert (failed["error"], failed["rpc"]) == ("quota_exceeded", -32000)

    broken = rt.call("helper-host", {"method": "models.llm", "params": {}}).output
    assert (broken["error"], broken["rpc"]) == ("internal", -32603)
    assert "must not leak" not in broken["message"]


def test_reverse_host_requests_are_denied_by_default(rt, tmp_path):
    rt.runtime.add_package(helper_package(tmp_path))
    out = rt.call("helper-host", {"method": "fs.read_text", "params": {"path": "/etc/passwd"}})
    assert out.output["error"] == "permission_denied"
    assert "fs.read_text" in out.output["message"]


def test_example_file_method_is_denied_without_a_host_api(rt):
    rt.runtime.add_package(EXAMPLES / "text-stats")
    with pytest.raises(SkillError, match="denied"):
        rt.call("text-stats-file", {"path": "/etc/hostname"})


@pytest.mark.parametrize(
    ("do", "error", "match"),
    [
        ("nan", ProtocolError, "not JSON"),
        ("wrong-id", ProtocolError, "answered id 1002"),
        ("utf8", ProtocolError, "not JSON"),
        ("garbage", ProtocolError, "not JSON"),
        ("array", ProtocolError, "JSON list"),
        ("no-result", ProtocolError, "neither result nor error"),
        ("bad-result", ProtocolError, "must be an object"),
        ("bad-content", ProtocolError, "must be strings"),
        ("huge", OutputTooLarge, "without ending it"),
    ],
)
def test_hostile_worker_lines(rt, tmp_path, do, error, match):
    rt.runtime.add_package(
        make_package(
            tmp_path, "raw", RAW_WORKER, mode="worker", limits={"max_output_bytes": 100000}
        )
    )
    first = rt.call("raw-run", {}).output["pid"]
    with pytest.raises(error, match=match):
        rt.call("raw-run", {"do": do})
    # the next call works, on a fresh worker when the old one broke the protocol
    again = rt.call("raw-run", {}).output["pid"]
    if error is ProtocolError and do not in ("no-result", "bad-result", "bad-content"):
        assert again != first
        assert wait_group_gone(first) == []


def test_host_request_for_an_unknown_call_is_refused(rt, tmp_path):
    rt.runtime.add_package(make_package(tmp_path, "raw", RAW_WORKER, mode="worker"))
    reply = rt.call("raw-run", {"do": "unknown-call"}).output
    assert reply["id"] == "h-1"
    assert reply["error"]["data"]["code"] == "unknown_call"
    bad = rt.call("raw-run", {"do": "bad-host-params"}).output
    assert bad["error"]["code"] == -32602


def test_an_answer_over_the_output_cap_is_refused(rt, tmp_path):
    rt.runtime.add_package(helper_package(tmp_path, limits={"max_output_bytes": 2000}))
    assert rt.call("helper-big", {"n": 100}).output == "x" * 100
    with pytest.raises(OutputTooLarge, match="limit is 2000"):
        rt.call("helper-big", {"n": 5000})


def test_a_new_package_version_gets_a_new_worker(rt, tmp_path):
    pkg = helper_package(tmp_path)
    rt.runtime.add_package(pkg)
    old = rt.call("helper-echo", {}).output["pid"]
    (pkg / "notes.txt").write_text("a change to the package changes its digest\n")
    rt.runtime.add_package(pkg)
    new = rt.call("helper-echo", {}).output["pid"]
    assert new != old
    assert wait_group_gone(old) == []


def test_close_shuts_workers_down_cleanly(tmp_path):
    rt = SyncRuntime.memory()
    rt.runtime.add_package(helper_package(tmp_path))
    pid = rt.call("helper-echo", {}).output["pid"]
    [worker] = transport(rt).workers()
    rt.close()
    assert worker.child.returncode == 0  # it left on the shutdown request, not by SIGKILL
    assert wait_group_gone(pid) == []
    assert is_zombie_or_gone(pid) == "gone"


def test_health_lists_workers(rt, tmp_path):
    rt.runtime.add_package(helper_package(tmp_path))
    rt.call("helper-echo", {})
    health = rt.run(rt.runtime.health())["process"]
    assert health["ok"] and health["workers"][0]["skill"] == "helper"
    assert health["workers"][0]["calls"] == 1
