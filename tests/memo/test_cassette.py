from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from skillyard import CallResult, Decision, InvalidOutput, Policy, SyncRuntime
from skillyard.errors import CassetteMiss, SkillError
from skillyard.memo import use_cassette

from .conftest import CACHED, add_counter


def _call_all(rt: SyncRuntime, calls: list[dict[str, Any]], tool: str = "t-count") -> list[Any]:
    return [rt.call(tool, args) for args in calls]


def _file(d: Path, name: str = "c") -> dict[str, Any]:
    return json.loads((d / f"{name}.json").read_text())


def test_once_records_a_new_file_then_replays_and_refuses_new_calls(
    mrt: SyncRuntime, tmp_path: Path
) -> None:
    counter = add_counter(mrt, policy=Policy())
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="once") as cas:
        first = mrt.call("t-count", {"x": 1})
        assert cas.records and not cas.replays
    assert first.source == "live" and len(counter.calls) == 1
    assert _file(tmp_path)["interactions"][0]["args"] == {"x": 1}
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="once") as cas:
        again = mrt.call("t-count", {"x": 1})
        assert again.source == "cassette" and again.output == first.output
        with pytest.raises(CassetteMiss) as miss:
            mrt.call("t-count", {"x": 2})
    assert len(counter.calls) == 1
    text = str(miss.value)
    assert 't-count({"x":2})' in text and str(tmp_path / "c.json") in text and "once" in text
    assert miss.value.details["cassette"] == str(tmp_path / "c.json")


def test_new_episodes_replays_known_calls_and_records_new_ones(
    mrt: SyncRuntime, tmp_path: Path
) -> None:
    counter = add_counter(mrt, policy=Policy())
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="new_episodes"):
        mrt.call("t-count", {"x": 1})
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="new_episodes") as cas:
        sources = [r.source for r in _call_all(mrt, [{"x": 1}, {"x": 2}])]
        assert cas.play_count == 1 and cas.recorded == 1
    assert sources == ["cassette", "live"]
    assert len(counter.calls) == 2
    assert [i["args"] for i in _file(tmp_path)["interactions"]] == [{"x": 1}, {"x": 2}]


def test_none_replays_only_and_a_miss_names_the_call_and_the_file(
    mrt: SyncRuntime, tmp_path: Path
) -> None:
    counter = add_counter(mrt, policy=Policy())
    with pytest.raises(CassetteMiss, match="does not exist"):
        with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="none"):
            mrt.call("t-count", {"x": 1})
    assert not (tmp_path / "c.json").exists() and counter.calls == []
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="once"):
        mrt.call("t-count", {"x": 1})
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="none"):
        assert mrt.call("t-count", {"x": 1}).source == "cassette"
        with pytest.raises(CassetteMiss) as miss:
            mrt.call("t-count", {"x": 3, "y": "z"})
    message = str(miss.value)
    assert 't-count({"x":3,"y":"z"})' in message
    assert str(tmp_path / "c.json") in message and "mode 'none'" in message
    assert miss.value.tool == "t-count" and miss.value.call_id
    assert len(counter.calls) == 1


def test_all_never_replays_and_keeps_what_the_file_held(mrt: SyncRuntime, tmp_path: Path) -> None:
    counter = add_counter(mrt, policy=Policy())
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="once"):
        mrt.call("t-count", {"x": 1})
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="all"):
        assert [r.source for r in _call_all(mrt, [{"x": 1}, {"x": 1}])] == ["live", "live"]
    assert len(counter.calls) == 3
    assert [i["result"]["output"]["n"] for i in _file(tmp_path)["interactions"]] == [1, 2, 3]


def test_rewrite_replaces_the_file(mrt: SyncRuntime, tmp_path: Path) -> None:
    add_counter(mrt, policy=Policy())
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="once"):
        _call_all(mrt, [{"x": 1}, {"x": 2}])
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="rewrite"):
        mrt.call("t-count", {"x": 9})
    assert [i["args"] for i in _file(tmp_path)["interactions"]] == [{"x": 9}]


def test_repeated_identical_calls_replay_in_recorded_order(
    mrt: SyncRuntime, tmp_path: Path
) -> None:
    counter = add_counter(mrt, policy=Policy())
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="once"):
        recorded = [r.output["n"] for r in _call_all(mrt, [{"q": 1}] * 3)]
    assert recorded == [1, 2, 3]
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="none") as cas:
        assert [r.output["n"] for r in _call_all(mrt, [{"q": 1}] * 3)] == [1, 2, 3]
        assert cas.all_played
        with pytest.raises(CassetteMiss, match="already"):
            mrt.call("t-count", {"q": 1})
    with use_cassette(
        mrt.runtime, "c", directory=tmp_path, mode="none", allow_playback_repeats=True
    ):
        assert [r.output["n"] for r in _call_all(mrt, [{"q": 1}] * 4)] == [1, 2, 3, 1]
    assert len(counter.calls) == 3


def test_errors_are_recorded_and_replayed_as_the_same_error(
    mrt: SyncRuntime, tmp_path: Path
) -> None:
    counter = add_counter(mrt, policy=Policy())
    counter.fail_next = True
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="once"):
        with pytest.raises(SkillError) as live:
            mrt.call("t-count", {"x": 1})
        counter.bad_output_next = True
        with pytest.raises(InvalidOutput) as live_invalid:
            mrt.call("t-count", {"x": 2})
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="none"):
        with pytest.raises(SkillError) as replayed:
            mrt.call("t-count", {"x": 1})
        with pytest.raises(InvalidOutput) as replayed_invalid:
            mrt.call("t-count", {"x": 2})
    assert replayed.value.message == live.value.message
    assert replayed.value.code == live.value.code
    assert replayed.value.details["replayed_from"] == str(tmp_path / "c.json")
    assert replayed_invalid.value.pointer == live_invalid.value.pointer
    assert len(counter.calls) == 2


def test_digest_matching_is_configurable(mrt: SyncRuntime, tmp_path: Path) -> None:
    import dataclasses

    add_counter(mrt, policy=Policy())
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="once"):
        mrt.call("t-count", {"x": 1})
    card = mrt.card("t-count")
    mrt.runtime.add_card(dataclasses.replace(card, digest="sha256:" + "1" * 64))
    with pytest.raises(CassetteMiss, match="another version of the skill"):
        with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="none"):
            mrt.call("t-count", {"x": 1})
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="none", match_on=["tool", "args"]):
        assert mrt.call("t-count", {"x": 1}).source == "cassette"


def test_a_custom_matcher(mrt: SyncRuntime, tmp_path: Path) -> None:
    add_counter(mrt, policy=Policy())

    def same_query(request: dict[str, Any], recorded: dict[str, Any]) -> bool:
        return request["args"].get("q") == recorded["args"].get("q")

    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="once"):
        mrt.call("t-count", {"q": "rain", "now": 1})
    with use_cassette(
        mrt.runtime, "c", directory=tmp_path, mode="none", match_on=["tool", same_query]
    ):
        assert mrt.call("t-count", {"q": "rain", "now": 99}).source == "cassette"
        with pytest.raises(CassetteMiss):
            mrt.call("t-count", {"q": "snow", "now": 1})
    with pytest.raises(ValueError, match="unknown matcher"):
        with use_cassette(mrt.runtime, "c", directory=tmp_path, match_on=["colour"]):
            pass


SECRET = "hunter2-very-secret"


def test_secrets_never_land_in_the_file(mrt: SyncRuntime, tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"pin": {"type": "string", "writeOnly": True}},
    }

    @mrt.tool("t-login", input_schema=schema)
    def login(args: dict[str, Any]) -> dict[str, Any]:
        return {"user": args["user"], "session_token": SECRET, "max_tokens": 5}

    def drop_user_agent(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        args.pop("user_agent", None)
        args["nested"].pop("otp")
        return args

    def scrub(interaction: dict[str, Any]) -> dict[str, Any]:
        interaction["result"]["output"]["user"] = "someone"
        return interaction

    args = {
        "user": "ann",
        "pin": SECRET,
        "api_key": SECRET,
        "nested": {"client_secret": SECRET, "otp": SECRET, "keep": 1},
        "user_agent": SECRET,
    }
    with use_cassette(
        mrt.runtime,
        "c",
        directory=tmp_path,
        mode="once",
        filter_args=["otp", "/user_agent"],
        before_record=scrub,
    ):
        live = mrt.call("t-login", args)
    assert live.output["session_token"] == SECRET  # the caller still gets the real answer
    with use_cassette(
        mrt.runtime, "c2", directory=tmp_path, mode="once", filter_args=drop_user_agent
    ):
        mrt.call("t-login", args)
    for name in ("c", "c2"):
        text = (tmp_path / f"{name}.json").read_text()
        assert SECRET not in text, name
    recorded = _file(tmp_path)["interactions"][0]
    assert recorded["args"]["pin"] == "[REDACTED]"
    assert recorded["args"]["nested"] == {
        "client_secret": "[REDACTED]",
        "otp": "[REDACTED]",
        "keep": 1,
    }
    assert recorded["result"]["output"] == {
        "user": "someone",
        "session_token": "[REDACTED]",
        "max_tokens": 5,
    }
    # redacted arguments still match: a test does not need the real secret to replay
    with use_cassette(
        mrt.runtime, "c", directory=tmp_path, mode="none", filter_args=["otp", "/user_agent"]
    ):
        other = dict(args, api_key="another", pin="0000", user_agent="x")
        assert mrt.call("t-login", other).source == "cassette"


def test_before_record_can_drop_an_interaction(mrt: SyncRuntime, tmp_path: Path) -> None:
    add_counter(mrt, policy=Policy())
    with use_cassette(
        mrt.runtime,
        "c",
        directory=tmp_path,
        mode="once",
        before_record=lambda i: None if i["args"].get("skip") else i,
    ):
        _call_all(mrt, [{"skip": True}, {"skip": False}])
    assert [i["args"] for i in _file(tmp_path)["interactions"]] == [{"skip": False}]


@pytest.mark.parametrize("privacy", ["no-raw", "metadata-only"])
def test_private_cards_are_not_recorded_unless_opted_in(
    mrt: SyncRuntime, tmp_path: Path, privacy: str
) -> None:
    calls: list[dict[str, Any]] = []

    @mrt.tool("t-count", policy=Policy(privacy=privacy))  # type: ignore[arg-type]
    def check(args: dict[str, Any]) -> dict[str, Any]:
        calls.append(args)
        return {"valid": True}

    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="new_episodes"):
        mrt.call("t-count", {"ssn": SECRET})
    assert not (tmp_path / "c.json").exists()
    with pytest.raises(CassetteMiss, match="record_private"):
        with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="none"):
            mrt.call("t-count", {"ssn": SECRET})
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="once", record_private=[privacy]):
        mrt.call("t-count", {"ssn": SECRET})
    text = (tmp_path / "c.json").read_text()
    assert SECRET not in text and '"args_sha256"' in text and '"args"' not in text
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="none", record_private=[privacy]):
        assert mrt.call("t-count", {"ssn": SECRET}).source == "cassette"
    assert len(calls) == 2


def test_yaml_cassettes_round_trip(mrt: SyncRuntime, tmp_path: Path) -> None:
    add_counter(mrt, policy=Policy())
    with use_cassette(mrt.runtime, "c.yaml", directory=tmp_path, mode="once"):
        first = mrt.call("t-count", {"when": "2026-01-01", "text": "line1\nline2"})
    data = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert data["interactions"][0]["args"]["when"] == "2026-01-01"
    with use_cassette(mrt.runtime, "c.yaml", directory=tmp_path, mode="none"):
        again = mrt.call("t-count", {"when": "2026-01-01", "text": "line1\nline2"})
    assert again.source == "cassette" and again.output == first.output


def test_a_cassette_answers_before_the_cache(mrt: SyncRuntime, tmp_path: Path) -> None:
    counter = add_counter(mrt, policy=CACHED)
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="once"):
        mrt.call("t-count", {"x": 1})
    assert mrt.call("t-count", {"x": 1}).source == "cache"
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="none"):
        assert mrt.call("t-count", {"x": 1}).source == "cassette"
    assert len(counter.calls) == 1


class _Ledger:
    """Stands in for the gate: outside memo, leaves a decision, records each result's source."""

    def __init__(self) -> None:
        self.sources: list[str] = []

    async def on_call(self, ctx: Any, call_next: Any) -> CallResult:
        ctx.notes["gate.decision"] = Decision(outcome="allow", reason="rule r1", rule="r1")
        result: CallResult = await call_next(ctx)
        self.sources.append(result.source)
        return result


def test_outer_middleware_sees_replays_and_hits_and_decisions_are_recorded(
    tmp_path: Path,
) -> None:
    ledger = _Ledger()
    with SyncRuntime.memory(middleware=[ledger]) as rt:
        add_counter(rt)
        with use_cassette(rt.runtime, "c", directory=tmp_path, mode="once"):
            rt.call("t-count", {"x": 1})
        rt.call("t-count", {"x": 1})
        with use_cassette(rt.runtime, "c", directory=tmp_path, mode="none"):
            rt.call("t-count", {"x": 1})
    assert ledger.sources == ["live", "cache", "cassette"]
    decision = _file(tmp_path)["interactions"][0]["decision"]
    assert decision["outcome"] == "allow" and decision["rule"] == "r1"


def test_card_policy_modes_use_a_per_tool_cassette(tmp_path: Path) -> None:
    config = {"memo": {"cassette_dir": str(tmp_path)}}
    with SyncRuntime.memory(config=config) as rt:
        counter = add_counter(rt, policy=Policy(cassette="record-replay"))
        rt.call("t-count", {"x": 1})
        assert rt.call("t-count", {"x": 1}).source == "live"  # recorded this run: not replayed
    assert (tmp_path / "t-count.json").exists()
    with SyncRuntime.memory(config=config) as rt:
        add_counter(rt, policy=Policy(cassette="replay-only"))
        assert rt.call("t-count", {"x": 1}).source == "cassette"
        with pytest.raises(CassetteMiss, match=r"t-count\.json"):
            rt.call("t-count", {"x": 2})
    with SyncRuntime.memory(config=config) as rt:
        add_counter(rt, policy=Policy(cassette="record-only"))
        assert rt.call("t-count", {"x": 1}).source == "live"
    assert len(counter.calls) == 2
    assert len(_file(tmp_path, "t-count")["interactions"]) == 3


def test_operator_config_can_put_every_call_through_one_cassette(tmp_path: Path) -> None:
    config = {"memo": {"cassette_dir": str(tmp_path), "cassette": "offline"}}
    with SyncRuntime.memory(config=dict(config)) as rt:
        add_counter(rt, policy=Policy())
        rt.call("t-count", {"x": 1})
    config["memo"] = dict(config["memo"], cassette_mode="none")
    with SyncRuntime.memory(config=config) as rt:  # no skill at all: the cassette brings the card
        assert rt.call("t-count", {"x": 1}).source == "cassette"


def test_replayed_events_reach_the_sink(mrt: SyncRuntime, tmp_path: Path) -> None:
    from skillyard import RawResult

    @mrt.tool("t-stream")
    def stream(args: dict[str, Any], ctx: Any) -> RawResult:
        ctx.emit("delta", text="hel")
        ctx.emit("delta", text="lo")
        return RawResult(output={"text": "hello"}, content="hello")

    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="once"):
        mrt.call("t-stream", {})
    seen: list[dict[str, Any]] = []
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="none"):
        replay = mrt.call("t-stream", {}, sink=seen.append)
    assert [e["text"] for e in seen] == ["hel", "lo"]
    assert replay.content == "hello" and len(replay.events) == 2


def test_replay_with_the_skill_removed(tmp_path: Path) -> None:
    from .conftest import write_python_skill

    pkg = write_python_skill(
        tmp_path / "skills", "geo", "def run(args):\n    return {'city': args['city'].upper()}\n"
    )
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(pkg)
        with use_cassette(rt.runtime, "geo", directory=tmp_path, mode="once"):
            live = rt.call("geo-run", {"city": "oslo"})
    with SyncRuntime.memory() as rt:
        with use_cassette(rt.runtime, "geo", directory=tmp_path, mode="none"):
            replay = rt.call("geo-run", {"city": "oslo"})
            assert rt.card("geo-run").digest == live_digest(tmp_path)
        assert [c.name for c in rt.list()] == []  # the borrowed card leaves with the cassette
    assert replay.output == live.output == {"city": "OSLO"}


def live_digest(directory: Path) -> str:
    return str(json.loads((directory / "geo.json").read_text())["cards"]["geo-run"]["digest"])
