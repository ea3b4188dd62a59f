"""The persistent worker's fast paths behave exactly like the general ones.

The runtime builds request lines from pre-encoded pieces and may busy-wait for
an answer; the Python helper reads stdin with ``os.read``, builds answers from
pieces and may busy-wait for the next request. Each shortcut is checked here
against what the general path produces, errors included.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from skillyard import SyncRuntime
from skillyard.errors import OutputTooLarge, ProtocolError, SkillCrashed, SkillError, SkillTimeout
from skillyard.transports.process import persistent
from skillyard.worker import MAX_SPIN_US, WaitChoice, _Lines, _spin_seconds
from tests.transports.process_helpers import make_package, wait_group_gone
from tests.transports.test_process_worker import helper_package, transport

SRC = Path(__file__).resolve().parents[2] / "src"

ECHO_LINE = r"""
import sys
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    import json
    msg = json.loads(line)
    if msg.get("method") != "call":
        continue
    answer = {"jsonrpc": "2.0", "id": msg["id"], "result": {"output": line.decode()}}
    out.write(json.dumps(answer).encode() + b"\n")
    out.flush()
"""

ENV_WORKER = """
import os
from skillyard.worker import serve

def env(args, ctx):
    return {"spin": os.environ.get("SKILLYARD_SPIN_US")}

serve({"env": env})
"""


def test_request_line_is_the_dumped_message(rt, tmp_path):
    handler = 'odd "name" é\\'
    pkg = make_package(tmp_path, "lines", ECHO_LINE, mode="worker", options={"handler": handler})
    rt.runtime.add_package(pkg)
    args = {"text": 'quote " backslash \\ newline \n tab \t é 😀', "n": [1, 2.5, None, True]}
    for _ in range(2):  # the second call uses the cached head
        result = rt.call("lines-run", args)
        line = result.output.encode()
        sent = orjson.loads(line)
        expected = {
            "jsonrpc": "2.0",
            "id": sent["id"],
            "method": "call",
            "params": {
                "tool": "lines-run",
                "method": handler,
                "args": args,
                "call_id": result.call_id,
                "deadline_ms": sent["params"]["deadline_ms"],
            },
        }
        assert line == orjson.dumps(expected) + b"\n"
        assert 0 < sent["params"]["deadline_ms"] <= 30_000


def test_arguments_that_are_not_json_fail_before_anything_is_sent(rt, tmp_path):
    rt.runtime.add_package(helper_package(tmp_path))
    pid = rt.call("helper-echo", {}).output["pid"]
    with pytest.raises(TypeError):
        rt.call("helper-echo", {"when": object()})
    [worker] = transport(rt).workers()
    assert not worker.pending and not worker.by_call
    assert rt.call("helper-echo", {"ok": 1}).output["pid"] == pid


# -- the helper's line reader -----------------------------------------------------------


def _reader(chunks: list[bytes], spin: float = 0.0) -> _Lines:
    """A reader on a pipe a thread writes ``chunks`` into (one write each), then closes."""
    r, w = os.pipe()

    def feed() -> None:
        for chunk in chunks:
            os.write(w, chunk)
        os.close(w)

    threading.Thread(target=feed, daemon=True).start()
    return _Lines(r, spin)


def _all(lines: _Lines, read: Any) -> list[bytes]:
    out = []
    try:
        while line := read():
            out.append(line)
    finally:
        os.close(lines.fd)
    return out


@pytest.mark.parametrize("spin", [0.0, 0.0005])
def test_line_reader_splits_joins_and_keeps_a_last_partial_line(spin):
    big = b"y" * 200_000
    chunks = [b"one\ntwo\n", b"thr", b"ee\n", b"\n", big + b"\n", b"four\nlast-without-newline"]
    lines = _reader(chunks, spin)
    read = lines.next_request if spin else lines.readline
    assert _all(lines, read) == [
        b"one\n",
        b"two\n",
        b"three\n",
        b"\n",
        big + b"\n",
        b"four\n",
        b"last-without-newline",
    ]


def test_line_reader_spins_only_while_requests_come_back_to_back():
    r, w = os.pipe()
    lines = _Lines(r, 0.05)
    try:
        os.write(w, b"a\n")
        assert lines.next_request() == b"a\n"
        assert lines.warm  # it came at once
        os.write(w, b"b\nc\n")
        assert lines.next_request() == b"b\n"
        assert lines.next_request() == b"c\n"  # buffered: no wait at all
        os.close(w)
        w = -1
        assert lines.next_request() == b""
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, 0.0), ("", 0.0), ("0", 0.0), ("-5", 0.0), ("abc", 0.0), ("100", 100e-6)],
)
def test_spin_window_comes_from_the_environment(monkeypatch, value, seconds):
    if value is None:
        monkeypatch.delenv("SKILLYARD_SPIN_US", raising=False)
    else:
        monkeypatch.setenv("SKILLYARD_SPIN_US", value)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert _spin_seconds() == pytest.approx(seconds)


def test_spin_window_is_capped_and_off_on_one_cpu(monkeypatch):
    monkeypatch.setenv("SKILLYARD_SPIN_US", str(10 * MAX_SPIN_US))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert _spin_seconds() == pytest.approx(MAX_SPIN_US / 1e6)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert _spin_seconds() == 0.0


def test_wait_choice_tries_both_then_keeps_the_faster_and_keeps_checking():
    choice = WaitChoice()
    first, second = choice.busy(), choice.busy()
    assert (first, second) == (True, True)  # nothing learnt yet: busy is tried first
    choice.learn(True, 30e-6)
    assert choice.busy() is False  # sleeping has no figure yet: try it
    choice.learn(False, 20e-6)
    picks = []
    for _ in range(32):
        busy = choice.busy()
        picks.append(busy)
        choice.learn(busy, 30e-6 if busy else 20e-6)
    assert picks.count(True) == 2  # sleeping is faster; busy is re-tried every 16th wait
    # the machine changes: sleeping gets slow, busy-waiting takes over
    for _ in range(40):
        busy = choice.busy()
        choice.learn(busy, 30e-6 if busy else 200e-6)
    assert choice.busy_s < choice.sleep_s
    assert sum(choice.busy() for _ in range(15)) >= 14


def test_wait_choice_is_not_swayed_by_one_outlier():
    choice = WaitChoice()
    choice.learn(True, 20e-6)
    choice.learn(True, 0.05)  # one preemption
    assert choice.busy_s < 40e-6


# -- the helper on the wire ----------------------------------------------------------------

WIRE_WORKER = """
from skillyard.worker import Error, Result, serve

def echo(args, ctx):
    return {"args": args, "call_id": ctx.call_id}

def rich(args, ctx):
    return Result(args, content="c", usage={"t": 1})

def fail(args, ctx):
    raise Error("nope", code=-32010, data={"a": 1})

def bad(args, ctx):
    return {"not json": object()}

serve({"echo": echo, "rich": rich, "fail": fail, "bad": bad})
"""


@pytest.mark.parametrize("spin", ["0", "200"])
def test_helper_answers_pipelined_split_and_unterminated_requests(tmp_path, spin):
    script = tmp_path / "w.py"
    script.write_text(WIRE_WORKER)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(SRC), "SKILLYARD_SPIN_US": spin}
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    assert proc.stdin is not None and proc.stdout is not None

    def req(rid: Any, method: str, args: Any) -> bytes:
        params = {"tool": "t", "method": method, "args": args, "call_id": f"c{rid}"}
        return orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": "call", "params": params})

    try:
        # two requests in one write, then one split in three writes, then a bad line
        proc.stdin.write(req(1, "echo", {"é": '"'}) + b"\n" + req("s-2", "rich", {"x": 1}) + b"\n")
        proc.stdin.flush()
        whole = req(3, "fail", {}) + b"\n"
        for part in (whole[:5], whole[5:40], whole[40:]):
            proc.stdin.write(part)
            proc.stdin.flush()
        proc.stdin.write(b"not json\n" + req(4, "bad", {}) + b"\n" + req(5, "nope", {}) + b"\n")
        proc.stdin.write(req(6, "echo", {"last": True}))  # no newline: answered at EOF
        proc.stdin.close()
        answers = [orjson.loads(line) for line in proc.stdout]
        raw = [orjson.dumps(a) for a in answers]
    finally:
        proc.wait(timeout=10)
    assert answers[0] == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"output": {"args": {"é": '"'}, "call_id": "c1"}},
    }
    assert answers[1] == {
        "jsonrpc": "2.0",
        "id": "s-2",
        "result": {"output": {"x": 1}, "content": "c", "usage": {"t": 1}},
    }
    assert answers[2]["id"] == 3
    assert answers[2]["error"] == {"code": -32010, "message": "nope", "data": {"a": 1}}
    assert answers[3]["id"] == 4 and "output is not JSON" in answers[3]["error"]["message"]
    assert answers[4]["id"] == 5 and answers[4]["error"]["code"] == -32601
    assert answers[5]["result"]["output"]["args"] == {"last": True}
    assert len(answers) == 6
    # the answers built from pieces are the bytes the general path dumps
    assert all(line == orjson.dumps(orjson.loads(line)) for line in raw)


# -- the latency fast path against the event-loop path -----------------------------------


def _scenario(rt: SyncRuntime) -> list[Any]:
    """The same calls, errors included, recorded as comparable values."""
    out: list[Any] = []
    seen: list[dict[str, Any]] = []
    res = rt.call("helper-events", {}, sink=seen.append)
    out.append((res.output, res.content, res.llm_context, res.usage, seen))
    out.append(rt.call("helper-echo", {"x": "é"}).output["args"])
    for tool, args in (
        ("helper-fail", {"city": "x"}),
        ("helper-boom", {}),
        ("helper-big", {"n": 5000}),
        ("helper-crash", {}),
    ):
        try:
            rt.call(tool, args)
            out.append("no error")
        except (SkillError, OutputTooLarge, SkillCrashed, ProtocolError) as exc:
            out.append((type(exc).__name__, str(exc).split(";")[0]))
    out.append(rt.call("helper-echo", {"after": "crash"}).output["args"])
    return out


def test_fast_path_and_loop_path_give_the_same_results_and_errors(tmp_path):
    results = []
    for spin in (0, 1000):
        with SyncRuntime.memory() as rt:
            base = tmp_path / f"spin{spin}"
            rt.runtime.add_package(
                helper_package(base, options={"spin_us": spin}, limits={"max_output_bytes": 2000})
            )
            rt.call("helper-echo", {})
            worker = transport(rt).workers()[0]
            assert worker.spin_ms == spin / 1000
            results.append(_scenario(rt))
    assert results[0] == results[1]
    assert results[0][2][0] == "SkillError" and results[0][4][0] == "OutputTooLarge"
    assert results[0][5][0] == "SkillCrashed"


def test_the_worker_learns_the_busy_window_and_one_cpu_turns_it_off(tmp_path, monkeypatch):
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(
            make_package(tmp_path / "a", "env", ENV_WORKER, mode="worker", methods=("env",))
        )
        monkeypatch.setattr(persistent, "_cpus", lambda: 2)
        assert rt.call("env-env", {}).output == {"spin": str(persistent.BUSY_SPIN_US)}
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(
            make_package(
                tmp_path / "b",
                "env",
                ENV_WORKER,
                mode="worker",
                methods=("env",),
                options={"spin_us": 0},
            )
        )
        assert rt.call("env-env", {}).output == {"spin": "0"}
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(
            make_package(tmp_path / "c", "env", ENV_WORKER, mode="worker", methods=("env",))
        )
        monkeypatch.setattr(persistent, "_cpus", lambda: 1)
        assert rt.call("env-env", {}).output == {"spin": "0"}
        assert transport(rt).workers()[0].busy_us == 0.0


def test_a_long_call_does_not_hold_the_event_loop(rt, tmp_path):
    rt.runtime.add_package(helper_package(tmp_path))
    rt.call("helper-echo", {})  # warm: the fast path is on for this worker
    order: list[str] = []

    async def go() -> None:
        async def tick() -> None:
            await asyncio.sleep(0)
            order.append("tick")

        ticker = asyncio.ensure_future(tick())
        await rt.runtime.call("helper-nap", {"sec": 0.2})
        order.append("call done")
        await ticker

    rt.run(go())
    assert order == ["tick", "call done"]


def test_a_full_pool_spreads_waiting_calls_evenly(rt, tmp_path):
    # spin_us = 0: every call is dispatched in the same loop turn, before any answer is read
    options = {"workers": 2, "concurrency": 4, "spin_us": 0}
    rt.runtime.add_package(helper_package(tmp_path, options=options))

    async def many() -> list[Any]:
        return await asyncio.gather(*(rt.runtime.call("helper-echo", {"i": i}) for i in range(20)))

    results = rt.run(many())
    assert [r.output["args"]["i"] for r in results] == list(range(20))
    per_worker = sorted(w["calls"] for w in rt.run(rt.runtime.health())["process"]["workers"])
    # calls past the 4 slots of each worker wait for the less loaded one, not the first
    assert per_worker == [10, 10]
    assert all(w.queued == 0 and not w.pending for w in transport(rt).workers())


def test_a_call_cancelled_while_waiting_for_a_slot_does_not_strand_the_next(rt, tmp_path):
    rt.runtime.add_package(helper_package(tmp_path, options={"concurrency": 1, "spin_us": 0}))
    rt.call("helper-echo", {})
    [worker] = transport(rt).workers()

    async def go() -> Any:
        first = asyncio.ensure_future(rt.runtime.call("helper-nap", {"sec": 0.3}))
        second = asyncio.ensure_future(rt.runtime.call("helper-echo", {"n": 2}))
        third = asyncio.ensure_future(rt.runtime.call("helper-echo", {"n": 3}))
        for _ in range(1000):
            if worker.queued == 2:
                break
            await asyncio.sleep(0)
        assert worker.queued == 2  # the second and third wait for the one slot
        second.cancel()
        await first
        return await asyncio.wait_for(third, 10)

    assert rt.run(go()).output["args"] == {"n": 3}
    assert worker.queued == 0


def test_each_call_keeps_its_own_deadline_on_one_worker(rt, tmp_path):
    # One deadline timer per worker: a later call with a sooner deadline must move it,
    # and after it fires it must be set again for the calls still waiting.
    rt.runtime.add_package(helper_package(tmp_path, concurrency=4))
    pid = rt.call("helper-echo", {}).output["pid"]
    order: list[tuple[str, str]] = []

    async def one(name: str, sec: float, timeout: float) -> None:
        try:
            out = await rt.runtime.call("helper-nap", {"sec": sec}, timeout=timeout)
            order.append((name, "ok" if out.output["pid"] == pid else "other worker"))
        except SkillTimeout:
            order.append((name, "timeout"))

    async def go() -> None:
        calls = [one("long", 0.8, 20), one("short", 30, 0.2), one("later", 30, 0.4)]
        await asyncio.wait_for(asyncio.gather(*calls), 15)

    rt.run(go())
    assert order == [("short", "timeout"), ("later", "timeout"), ("long", "ok")]
    assert wait_group_gone(pid) == []  # retired after the timeouts, stopped once idle
    assert rt.call("helper-echo", {}).output["pid"] != pid
