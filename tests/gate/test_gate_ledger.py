"""The ledger's hash chain: tampering is detected and located; several writers are safe."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from skillyard import Runtime
from skillyard.gate import find, ledger

SKILLYARD = [sys.executable, "-m", "skillyard.cli.main"]


@pytest.fixture
def home(tmp_path: Path, policy_file: Path) -> Path:
    """A runtime home whose ledger holds 6 calls (one entry each)."""
    h = tmp_path / "home"
    h.mkdir()
    (h / "config.toml").write_text(f'[gate]\npolicy = "{policy_file}"\n')
    rt = Runtime.open(h, roots={})
    rt.tool("echo")(lambda a: a)
    for i in range(6):
        asyncio.run(rt.call("echo", {"i": i}))
    asyncio.run(rt.aclose())
    return h


def verify(home: Path) -> tuple[int, list[ledger.Problem]]:
    from skillyard.store import Store

    store = Store(home / "state.db")
    try:
        return ledger.verify(store)
    finally:
        store.close()


def tamper(home: Path, sql: str) -> None:
    import sqlite3

    conn = sqlite3.connect(home / "state.db")
    conn.execute(sql)
    conn.commit()
    conn.close()


def test_an_untouched_ledger_verifies(home):
    count, problems = verify(home)
    assert count == 6 and problems == []
    out = subprocess.run(
        [*SKILLYARD, "--home", str(home), "audit", "verify"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "6 entries" in out.stdout


@pytest.mark.parametrize(
    ("sql", "seq", "words"),
    [
        (
            "UPDATE gate_ledger SET payload = replace(payload, '\"i\":2', '\"i\":9') WHERE seq = 3",
            3,
            "payload was edited",
        ),
        ("UPDATE gate_ledger SET tool = 'other' WHERE seq = 4", 4, "hash mismatch"),
        ("UPDATE gate_ledger SET actor = 'root' WHERE seq = 2", 2, "hash mismatch"),
        ("DELETE FROM gate_ledger WHERE seq = 3", 3, "missing"),
        ("DELETE FROM gate_ledger WHERE seq = 6", 6, "head"),
    ],
    ids=["edit-payload", "edit-field", "edit-actor", "delete-middle", "delete-last"],
)
def test_tampering_is_detected_at_the_entry(home, sql, seq, words):
    tamper(home, sql)
    _, problems = verify(home)
    assert problems, "tampering went unnoticed"
    assert problems[0].seq == seq and words in problems[0].message
    out = subprocess.run(
        [*SKILLYARD, "--home", str(home), "audit", "verify"], capture_output=True, text=True
    )
    assert out.returncode == 1 and f"seq {seq}" in out.stderr


def test_reordered_entries_are_detected(home):
    import sqlite3

    conn = sqlite3.connect(home / "state.db")
    cols = (
        "at, event, actor, tool, action_id, card_digest, policy_version, parent, privacy, "
        "payload, payload_hash, prev_hash, hash"
    )
    r3 = conn.execute(f"SELECT {cols} FROM gate_ledger WHERE seq=3").fetchone()
    r4 = conn.execute(f"SELECT {cols} FROM gate_ledger WHERE seq=4").fetchone()
    sets = ", ".join(f"{c.strip()}=?" for c in cols.split(","))
    conn.execute(f"UPDATE gate_ledger SET {sets} WHERE seq=3", r4)
    conn.execute(f"UPDATE gate_ledger SET {sets} WHERE seq=4", r3)
    conn.commit()
    conn.close()
    _, problems = verify(home)
    assert problems and problems[0].seq == 3


def test_expected_head_catches_a_consistent_rewrite(home):
    _, head_hash = _head(home)
    _count, problems = verify(home)
    assert not problems
    from skillyard.store import Store

    store = Store(home / "state.db")
    _, problems = ledger.verify(store, expect_head=head_hash)
    assert problems == []
    _, problems = ledger.verify(store, expect_head="sha256:" + "1" * 64)
    store.close()
    assert problems and "expected head" in problems[0].message


def _head(home: Path) -> tuple[int, str]:
    from skillyard.store import Store

    store = Store(home / "state.db")
    try:
        return ledger.head(store)
    finally:
        store.close()


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from skillyard import Runtime
    rt = Runtime.open(sys.argv[1], roots={})
    rt.tool("echo")(lambda a: a)
    async def main():
        for i in range(int(sys.argv[2])):
            await rt.call("echo", {"i": i, "who": sys.argv[3]})
        await rt.aclose()
    asyncio.run(main())
    """
)


def test_several_processes_write_one_chain(home):
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(home), "150", f"w{i}"])
        for i in range(3)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    count, problems = verify(home)
    assert problems == [] and count == 6 + 3 * 150


def test_tail_show_and_export(home, tmp_path):
    out = subprocess.run(
        [*SKILLYARD, "--home", str(home), "--json", "audit", "tail", "-n", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    tail = orjson.loads(out.stdout)
    assert [e["seq"] for e in tail] == [5, 6]
    action = tail[0]["action_id"]
    shown = subprocess.run(
        [*SKILLYARD, "--home", str(home), "--json", "audit", "show", action],
        capture_output=True,
        text=True,
        check=True,
    )
    assert [e["event"] for e in orjson.loads(shown.stdout)] == ["call"]
    target = tmp_path / "ledger.ndjson"
    subprocess.run(
        [*SKILLYARD, "--home", str(home), "audit", "export", "--out", str(target)],
        check=True,
        capture_output=True,
    )
    lines = target.read_bytes().splitlines()
    assert len(lines) == 6 and orjson.loads(lines[0])["seq"] == 1
    missing = subprocess.run(
        [*SKILLYARD, "--home", str(home), "audit", "show", "999"], capture_output=True, text=True
    )
    assert missing.returncode != 0 and "999" in missing.stderr


def test_entries_of_a_live_runtime_reach_the_store_without_closing(policy_file):
    rt = Runtime.memory(config={"gate": {"policy": str(policy_file)}})
    rt.tool("echo")(lambda a: a)
    asyncio.run(rt.call("echo", {}))
    gate = find(rt)
    deadline = asyncio.run(_wait_for_entries(rt, 1))
    assert deadline, "the background flusher never committed the entries"
    asyncio.run(rt.aclose())
    assert gate is not None


async def _wait_for_entries(rt, n: int) -> bool:
    import time

    end = time.monotonic() + 5
    while time.monotonic() < end:
        if rt.store.query("SELECT count(*) FROM gate_ledger")[0][0] >= n:
            return True
        await asyncio.sleep(0.005)
    return False


def test_the_spool_grows_past_its_size_and_rotates_once_everything_is_committed(tmp_path):
    from skillyard.gate import journal
    from skillyard.gate.ledger import Entry
    from skillyard.store import Store

    spool = journal._Spool(tmp_path / "s.spool", size=64)
    spool.write(b"x" * 100 + b"\n")  # more than the mapping: it grows
    assert spool.pos == 101 and (tmp_path / "s.spool").read_bytes()[:101] == b"x" * 100 + b"\n"
    spool.reset()
    assert spool.pos == 0 and set((tmp_path / "s.spool").read_bytes()) == {0}
    spool.close()

    store = Store(tmp_path / "state.db")
    from skillyard.gate import actions

    actions.migrate(store)
    j = journal.Journal(store, spool_dir=tmp_path / "spool", interval=3600)
    big = "y" * 4096
    for i in range(600):  # ~2.5 MB of intents, each closed by its call entry
        e = Entry("decided", "p", "t", f"a{i}", None, "v", "allow-raw", {"args": big})
        j.intent(e)
        j.add(Entry("call", "p", "t", f"a{i}", None, "v", "allow-raw", {"n": i}), closes=True)
    assert j.flush() == 600
    assert j._spool is not None and j._spool.pos == 0  # rotated: all of it is in the ledger
    j.close()
    count, problems = ledger.verify(store)
    assert count == 600 and problems == []
    store.close()
