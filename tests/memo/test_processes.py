"""Two real processes sharing one runtime home: one cache, no lost or stale answers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from skillyard import SyncRuntime
from skillyard.memo import cassette_file as files
from skillyard.memo import use_cassette
from skillyard.store import Store

from .conftest import write_python_skill

WORKER = Path(__file__).with_name("_worker.py")
SKILL = """\
import os

def run(args):
    with open(os.environ["MEMO_COUNTER"], "a") as fh:
        fh.write("x\\n")
    with open(os.environ["MEMO_COUNTER"]) as fh:
        return {"run": len(fh.readlines()), "args": args}
"""
POLICY = '[policy]\ncache = "read-through"\nidempotent = true\n'


class Worker:
    def __init__(self, home: Path, skills: Path, counter: Path, memo: dict[str, Any]) -> None:
        env = dict(os.environ, MEMO_COUNTER=str(counter))
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(home), str(skills), orjson.dumps(memo).decode()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.read() == {"ready": True}

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(cmd) + b"\n")
        self.proc.stdin.flush()

    def read(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"worker exited with {self.proc.wait()}"
        return orjson.loads(line)

    def ask(self, **cmd: Any) -> Any:
        self.send(**cmd)
        return self.read()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Worker, Worker, Path]]:
    skills = tmp_path / "skills"
    write_python_skill(skills, "slow", SKILL, POLICY)
    counter = tmp_path / "runs.txt"
    counter.write_text("")
    memo = {"max_entries": 50}
    a = Worker(tmp_path / "home", skills, counter, memo)
    b = Worker(tmp_path / "home", skills, counter, memo)
    try:
        yield a, b, counter
    finally:
        for w in (a, b):
            if w.proc.poll() is None:
                w.close()


def test_two_processes_share_one_cache(pair: tuple[Worker, Worker, Path]) -> None:
    a, b, counter = pair
    first = a.ask(op="call", tool="slow-run", args={"q": 1})
    assert first["source"] == "live"
    second = b.ask(op="call", tool="slow-run", args={"q": 1})
    assert second == {"source": "cache", "output": first["output"]}
    assert b.ask(op="call", tool="slow-run", args={"q": 2})["source"] == "live"
    assert a.ask(op="call", tool="slow-run", args={"q": 2})["source"] == "cache"
    assert len(counter.read_text().splitlines()) == 2


def test_a_change_in_one_process_is_seen_by_the_other(
    pair: tuple[Worker, Worker, Path],
) -> None:
    a, b, _ = pair
    a.ask(op="call", tool="slow-run", args={"q": 1})
    assert a.ask(op="call", tool="slow-run", args={"q": 1})["source"] == "cache"  # held in memory
    assert b.ask(op="clear")["removed"] == 1
    fresh = b.ask(op="call", tool="slow-run", args={"q": 1})
    assert fresh["source"] == "live" and fresh["output"]["run"] == 2
    seen = a.ask(op="call", tool="slow-run", args={"q": 1})
    assert seen == {"source": "cache", "output": fresh["output"]}


def test_concurrent_writers_with_eviction_keep_the_cache_consistent(
    pair: tuple[Worker, Worker, Path], tmp_path: Path
) -> None:
    a, b, _ = pair
    a.send(op="fill", tool="slow-run", n=120, who="a")
    b.send(op="fill", tool="slow-run", n=120, who="b")
    assert a.read() == {"live": 120}
    assert b.read() == {"live": 120}
    a.close()
    b.close()
    store = Store(tmp_path / "home" / "state.db")
    try:
        (entries, size) = store.query("SELECT entries, bytes FROM memo_totals")[0]
        (count, total) = store.query("SELECT COUNT(*), SUM(size) FROM memo_cache")[0]
        stats = store.query("SELECT stores, evictions FROM memo_stats WHERE tool = 'slow-run'")
    finally:
        store.close()
    assert (entries, size) == (count, total)
    assert count == 50
    assert stats == [(240, 190)]


RECORDER = """
import sys
from skillyard import SyncRuntime
from skillyard.memo import use_cassette

directory, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with SyncRuntime.memory() as rt:
    rt.tool("t-who")(lambda args: {"who": args["who"], "i": args["i"]})
    with use_cassette(rt.runtime, "shared", directory=directory, mode="new_episodes"):
        for i in range(n):
            rt.call("t-who", {"who": who, "i": i})
"""


def test_two_processes_recording_one_cassette_lose_nothing(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", RECORDER, str(tmp_path), who, "25"])
        for who in ("a", "b")
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    data = orjson.loads((tmp_path / "shared.json").read_bytes())
    seen = sorted((i["args"]["who"], i["args"]["i"]) for i in data["interactions"])
    assert seen == sorted((who, i) for who in ("a", "b") for i in range(25))


def _record_one(directory: Path, who: str, i: int) -> None:
    with SyncRuntime.memory() as rt:
        rt.tool("t-who")(lambda args: {"who": args["who"], "i": args["i"]})
        with use_cassette(rt.runtime, "shared", directory=directory, mode="new_episodes"):
            rt.call("t-who", {"who": who, "i": i})


@pytest.mark.parametrize(
    ("step", "existed"), [("signature", True), ("read_versioned", True), ("signature", False)]
)
def test_a_recording_saved_while_another_run_opens_the_cassette_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, existed: bool
) -> None:
    # The interleaving the two-process test hits only under load, made certain: another
    # run saves right after this run's open() looked at the file (stat, or read).
    if existed:
        _record_one(tmp_path, "b", 0)
    real = getattr(files, step)
    fired: list[bool] = []

    def then_another_run_saves(*args: Any, **kw: Any) -> Any:
        out = real(*args, **kw)
        if not fired:
            fired.append(True)
            _record_one(tmp_path, "b", 1)
        return out

    monkeypatch.setattr(files, step, then_another_run_saves)
    _record_one(tmp_path, "a", 0)
    assert fired
    data = orjson.loads((tmp_path / "shared.json").read_bytes())
    seen = sorted((i["args"]["who"], i["args"]["i"]) for i in data["interactions"])
    assert seen == ([("a", 0), ("b", 0), ("b", 1)] if existed else [("a", 0), ("b", 1)])
