"""Memo inside the gate: the ledger records hits and replays as such, and policy still decides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skillyard import Policy, SyncRuntime
from skillyard.errors import PolicyDenied, SkillError
from skillyard.gate import find, ledger
from skillyard.memo import use_cassette

from .conftest import CACHED, add_counter

POLICY = """
version = "memo-test"

[contracts."t-*"]
level = "L1"
reversible = true
blast_radius = "none"

[[rules]]
name = "no-bob"
principal = "bob"
effect = "deny"

[[rules]]
name = "the-rest"
tool = "t-*"
effect = "allow"
"""


def _results(rt: SyncRuntime) -> list[dict[str, Any]]:
    gate = find(rt.runtime)
    assert gate is not None
    gate.flush()
    entries = ledger.tail(rt.runtime.store, 100)
    return [e["payload"] for e in entries if e["event"] == "call"]


def test_the_ledger_records_cache_hits_and_cassette_replays(tmp_path: Path) -> None:
    with SyncRuntime.memory(config={"gate": {"mode": "ledger-only"}}) as rt:
        counter = add_counter(rt, policy=CACHED)
        with use_cassette(rt.runtime, "c", directory=tmp_path, mode="once"):
            rt.call("t-count", {"x": 1})
        rt.call("t-count", {"x": 1})
        with use_cassette(rt.runtime, "c", directory=tmp_path, mode="none"):
            rt.call("t-count", {"x": 1})
        sources = [p.get("source") for p in _results(rt)]
    assert sources == ["live", "cache", "cassette"]
    assert len(counter.calls) == 1


def test_a_replayed_error_is_recorded_as_a_failure(tmp_path: Path) -> None:
    with SyncRuntime.memory(config={"gate": {"mode": "ledger-only"}}) as rt:
        counter = add_counter(rt, policy=Policy())
        counter.fail_next = True
        with use_cassette(rt.runtime, "c", directory=tmp_path, mode="once"):
            with pytest.raises(SkillError):
                rt.call("t-count", {"x": 1})
        with use_cassette(rt.runtime, "c", directory=tmp_path, mode="none"):
            with pytest.raises(SkillError):
                rt.call("t-count", {"x": 1})
        outcomes = [p["result"] for p in _results(rt)]
    assert outcomes == ["failed", "failed"]
    assert len(counter.calls) == 1


def test_policy_decides_before_the_cache_answers(tmp_path: Path) -> None:
    from skillyard import Caller

    (tmp_path / "policy.toml").write_text(POLICY)
    config = {"gate": {"policy": str(tmp_path / "policy.toml")}, "memo": {}}
    with SyncRuntime.memory(config=config) as rt:
        add_counter(rt, policy=Policy(cache="read-through", idempotent=True, cache_shared=True))
        assert rt.call("t-count", {"x": 1}, caller=Caller(principal="ann")).source == "live"
        assert rt.call("t-count", {"x": 1}, caller=Caller(principal="cy")).source == "cache"
        with pytest.raises(PolicyDenied):  # a shared entry exists, and bob is still refused
            rt.call("t-count", {"x": 1}, caller=Caller(principal="bob"))


def test_cassettes_record_the_gate_decision(tmp_path: Path) -> None:
    import json

    (tmp_path / "policy.toml").write_text(POLICY)
    with SyncRuntime.memory(config={"gate": {"policy": str(tmp_path / "policy.toml")}}) as rt:
        add_counter(rt, policy=Policy())
        with use_cassette(rt.runtime, "c", directory=tmp_path, mode="once"):
            rt.call("t-count", {"x": 1})
    recorded = json.loads((tmp_path / "c.json").read_text())["interactions"][0]["decision"]
    assert recorded["outcome"] == "allow" and recorded["rule"] == "the-rest"
