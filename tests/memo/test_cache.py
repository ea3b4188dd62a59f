from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from skillyard import Caller, InvalidOutput, Policy, Runtime, SyncRuntime
from skillyard.errors import ConfigError, SkillError
from skillyard.memo import memo_of

from .conftest import CACHED, FakeClock, add_counter, memo, write_python_skill


def _repolicy(rt: SyncRuntime, name: str, **policy: object) -> None:
    card = rt.card(name)
    rt.runtime.add_card(
        dataclasses.replace(card, policy=dataclasses.replace(card.policy, **policy))
    )


def test_read_through_serves_a_repeat_from_the_cache(mrt: SyncRuntime) -> None:
    counter = add_counter(mrt)
    first = mrt.call("t-count", {"x": 1})
    second = mrt.call("t-count", {"x": 1})
    other = mrt.call("t-count", {"x": 2})
    assert len(counter.calls) == 2
    assert (first.source, second.source, other.source) == ("live", "cache", "live")
    assert second.output == first.output == {"n": 1, "echo": {"x": 1}}
    assert second.call_id != first.call_id
    assert "original_duration_us" in second.timing


def test_key_ignores_argument_order_but_not_values(mrt: SyncRuntime) -> None:
    counter = add_counter(mrt)
    mrt.call("t-count", {"a": 1, "b": [1, 2]})
    assert mrt.call("t-count", {"b": [1, 2], "a": 1}).source == "cache"
    assert mrt.call("t-count", {"a": 1, "b": [2, 1]}).source == "live"
    assert len(counter.calls) == 2


def test_a_served_result_is_a_fresh_copy(mrt: SyncRuntime) -> None:
    add_counter(mrt)
    mrt.call("t-count", {"x": 1})
    hit = mrt.call("t-count", {"x": 1})
    hit.output["echo"]["x"] = "mutated"
    assert mrt.call("t-count", {"x": 1}).output["echo"] == {"x": 1}


def test_read_only_reads_but_never_stores(mrt: SyncRuntime) -> None:
    counter = add_counter(mrt, policy=Policy(cache="read-only", idempotent=True))
    mrt.call("t-count", {"x": 1})
    assert mrt.call("t-count", {"x": 1}).source == "live"
    assert len(counter.calls) == 2
    # an entry written by a write-only card of the same code is read
    _repolicy(mrt, "t-count", cache="write-only")
    mrt.call("t-count", {"x": 1})
    _repolicy(mrt, "t-count", cache="read-only")
    hit = mrt.call("t-count", {"x": 1})
    assert hit.source == "cache" and hit.output["n"] == 3
    assert len(counter.calls) == 3


def test_write_only_always_calls_and_stores(mrt: SyncRuntime) -> None:
    counter = add_counter(mrt, policy=Policy(cache="write-only", idempotent=True))
    a = mrt.call("t-count", {"x": 1})
    b = mrt.call("t-count", {"x": 1})
    assert (a.source, b.source) == ("live", "live")
    assert len(counter.calls) == 2
    _repolicy(mrt, "t-count", cache="read-through")
    assert mrt.call("t-count", {"x": 1}).output["n"] == 2  # the latest store wins


def test_refresh_replaces_and_a_failed_refresh_leaves_no_stale_entry(mrt: SyncRuntime) -> None:
    counter = add_counter(mrt)
    mrt.call("t-count", {"x": 1})
    _repolicy(mrt, "t-count", cache="refresh")
    assert mrt.call("t-count", {"x": 1}).output["n"] == 2
    _repolicy(mrt, "t-count", cache="read-through")
    assert mrt.call("t-count", {"x": 1}).output["n"] == 2
    _repolicy(mrt, "t-count", cache="refresh")
    counter.fail_next = True
    with pytest.raises(SkillError):
        mrt.call("t-count", {"x": 1})
    _repolicy(mrt, "t-count", cache="read-through")
    assert mrt.call("t-count", {"x": 1}).source == "live"


def test_write_only_failure_keeps_the_previous_entry(mrt: SyncRuntime) -> None:
    counter = add_counter(mrt, policy=Policy(cache="write-only", idempotent=True))
    mrt.call("t-count", {"x": 1})
    counter.fail_next = True
    with pytest.raises(SkillError):
        mrt.call("t-count", {"x": 1})
    _repolicy(mrt, "t-count", cache="read-through")
    assert mrt.call("t-count", {"x": 1}).source == "cache"


@pytest.mark.parametrize(
    "policy",
    [
        Policy(cache="disabled", idempotent=True),
        Policy(cache="read-through", idempotent=False),
        Policy(cache="read-through", idempotent=True, privacy="no-raw"),
        Policy(cache="read-through", idempotent=True, privacy="metadata-only"),
    ],
    ids=["disabled", "not-idempotent", "no-raw", "metadata-only"],
)
def test_cards_that_may_not_be_cached_always_run(mrt: SyncRuntime, policy: Policy) -> None:
    counter = add_counter(mrt, policy=policy)
    mrt.call("t-count", {"x": 1})
    assert mrt.call("t-count", {"x": 1}).source == "live"
    assert len(counter.calls) == 2
    assert memo(mrt).cache.stats()["entries"] == 0


def test_private_cards_are_cached_when_the_operator_opts_in() -> None:
    with SyncRuntime.memory(config={"memo": {"cache_private": ["no-raw"]}}) as rt:
        add_counter(rt, "t-raw", Policy(cache="read-through", idempotent=True, privacy="no-raw"))
        add_counter(
            rt, "t-meta", Policy(cache="read-through", idempotent=True, privacy="metadata-only")
        )
        for tool in ("t-raw", "t-meta"):
            rt.call(tool, {"x": 1})
        assert rt.call("t-raw", {"x": 1}).source == "cache"
        assert rt.call("t-meta", {"x": 1}).source == "live"


def test_errors_are_not_cached(mrt: SyncRuntime) -> None:
    counter = add_counter(mrt)
    counter.fail_next = True
    with pytest.raises(SkillError):
        mrt.call("t-count", {"x": 1})
    ok = mrt.call("t-count", {"x": 1})
    assert ok.source == "live" and len(counter.calls) == 2
    assert mrt.call("t-count", {"x": 1}).source == "cache"


def test_output_that_fails_validation_is_not_cached(mrt: SyncRuntime) -> None:
    counter = add_counter(mrt)
    counter.bad_output_next = True
    with pytest.raises(InvalidOutput):
        mrt.call("t-count", {"x": 1})
    assert memo(mrt).cache.stats()["entries"] == 0
    assert mrt.call("t-count", {"x": 1}).source == "live"
    assert len(counter.calls) == 2


def test_principals_are_isolated_unless_the_card_says_shared(mrt: SyncRuntime) -> None:
    alice, bob = Caller(principal="alice"), Caller(principal="bob")
    counter = add_counter(mrt)
    mrt.call("t-count", {"q": 1}, caller=alice)
    assert mrt.call("t-count", {"q": 1}, caller=bob).source == "live"
    assert mrt.call("t-count", {"q": 1}, caller=alice).source == "cache"
    assert len(counter.calls) == 2
    shared = add_counter(
        mrt, "t-shared", Policy(cache="read-through", idempotent=True, cache_shared=True)
    )
    mrt.call("t-shared", {"q": 1}, caller=alice)
    assert mrt.call("t-shared", {"q": 1}, caller=bob).source == "cache"
    assert len(shared.calls) == 1


def test_semantic_key_and_schemas_are_part_of_the_key(mrt: SyncRuntime) -> None:
    counter = add_counter(mrt)
    mrt.call("t-count", {"x": 1})
    _repolicy(mrt, "t-count", semantic_key="model-v2")
    assert mrt.call("t-count", {"x": 1}).source == "live"
    card = mrt.card("t-count")
    mrt.runtime.add_card(
        dataclasses.replace(card, output_schema={"type": "object", "required": ["n", "echo"]})
    )
    assert mrt.call("t-count", {"x": 1}).source == "live"
    assert len(counter.calls) == 3


def test_a_new_skill_digest_never_sees_old_results(tmp_path: Path) -> None:
    body = "def run(args):\n    return {'version': %d, 'x': args.get('x')}\n"
    policy = '[policy]\ncache = "read-through"\nidempotent = true\n'
    pkg = write_python_skill(tmp_path, "calc", body % 1, policy)
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(pkg)
        old_digest = rt.card("calc-run").digest
        assert rt.call("calc-run", {"x": 1}).output["version"] == 1
        assert rt.call("calc-run", {"x": 1}).source == "cache"
        (pkg / "skill.py").write_text(body % 2)
        rt.runtime.add_package(pkg)
        assert rt.card("calc-run").digest != old_digest
        fresh = rt.call("calc-run", {"x": 1})
        assert (fresh.source, fresh.output["version"]) == ("live", 2)


def test_ttl_expiry_with_an_injected_clock(mrt: SyncRuntime) -> None:
    clock = FakeClock()
    memo(mrt).cache.clock = clock
    counter = add_counter(
        mrt, policy=Policy(cache="read-through", idempotent=True, cache_ttl_sec=10)
    )
    mrt.call("t-count", {"x": 1})
    clock.now += 9.9
    assert mrt.call("t-count", {"x": 1}).source == "cache"
    clock.now += 0.2
    assert mrt.call("t-count", {"x": 1}).source == "live"
    assert len(counter.calls) == 2
    stats = memo(mrt).cache.stats("t-count")["tools"][0]
    assert stats["expired"] == 1 and stats["hits"] == 1


def test_default_ttl_comes_from_the_operator_config() -> None:
    clock = FakeClock()
    with SyncRuntime.memory(config={"memo": {"default_ttl_sec": 5}}) as rt:
        memo(rt).cache.clock = clock
        add_counter(rt)
        rt.call("t-count", {})
        clock.now += 4
        assert rt.call("t-count", {}).source == "cache"
        clock.now += 2
        assert rt.call("t-count", {}).source == "live"


def test_lru_cap_evicts_the_least_recently_used() -> None:
    with SyncRuntime.memory(config={"memo": {"max_entries": 3}}) as rt:
        counter = add_counter(rt)
        for x in ("a", "b", "c"):
            rt.call("t-count", {"x": x})
        assert rt.call("t-count", {"x": "a"}).source == "cache"  # a is now the most recent
        rt.call("t-count", {"x": "d"})  # evicts b, the least recently used
        stats = memo(rt).cache.stats()
        assert stats["entries"] == 3 and stats["tools"][0]["evictions"] == 1
        assert rt.call("t-count", {"x": "a"}).source == "cache"
        assert rt.call("t-count", {"x": "c"}).source == "cache"
        assert rt.call("t-count", {"x": "d"}).source == "cache"
        assert rt.call("t-count", {"x": "b"}).source == "live"
        assert len(counter.calls) == 5


def test_byte_cap_evicts_and_oversized_results_are_not_stored() -> None:
    config = {"memo": {"max_bytes": 600, "max_entry_bytes": 400}}
    with SyncRuntime.memory(config=config) as rt:
        add_counter(rt)
        for i in range(6):
            rt.call("t-count", {"pad": "x" * 100, "i": i})
        stats = memo(rt).cache.stats()
        assert stats["bytes"] <= 600 and stats["entries"] < 6
        assert rt.call("t-count", {"pad": "x" * 100, "i": 5}).source == "cache"
        rt.call("t-count", {"pad": "y" * 500})
        assert rt.call("t-count", {"pad": "y" * 500}).source == "live"
        assert memo(rt).cache.stats()["tools"][0]["rejected"] == 2


def test_concurrent_identical_calls_run_once() -> None:
    async def main() -> None:
        rt = Runtime.memory()
        gate = asyncio.Event()
        runs = []

        @rt.tool("t-slow", policy=CACHED)
        async def slow(args: dict) -> dict:
            runs.append(args)
            await gate.wait()
            return {"ok": True}

        tasks = [asyncio.create_task(rt.call("t-slow", {"k": 1})) for _ in range(5)]
        while not runs:
            await asyncio.sleep(0)
        for _ in range(20):
            await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(*tasks)
        assert len(runs) == 1
        assert sorted(r.source for r in results) == ["cache"] * 4 + ["live"]
        await rt.aclose()

    asyncio.run(main())


def test_an_unreadable_entry_is_dropped_and_the_call_runs(mrt: SyncRuntime) -> None:
    counter = add_counter(mrt)
    mrt.call("t-count", {"x": 1})
    mrt.runtime.store.execute("UPDATE memo_cache SET payload = ?", (b"\x00not json",))
    memo(mrt).cache.forget_local()
    assert mrt.call("t-count", {"x": 1}).source == "live"
    assert mrt.call("t-count", {"x": 1}).source == "cache"
    assert len(counter.calls) == 2


def test_the_cache_survives_a_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with SyncRuntime.open(home) as rt:
        counter = add_counter(rt)
        rt.call("t-count", {"x": 1})
    with SyncRuntime.open(home) as rt:
        add_counter(rt)
        hit = rt.call("t-count", {"x": 1})
        assert hit.source == "cache" and hit.output["n"] == 1
        assert memo(rt).cache.stats()["tools"][0]["stores"] == 1
    assert len(counter.calls) == 1


def test_clear_by_tool_and_stats(mrt: SyncRuntime) -> None:
    add_counter(mrt, "t-a")
    add_counter(mrt, "t-b")
    for tool in ("t-a", "t-b"):
        mrt.call(tool, {})
        mrt.call(tool, {})
    cache = memo(mrt).cache
    by_tool = {t["tool"]: t for t in cache.stats()["tools"]}
    assert by_tool["t-a"]["hits"] == 1 and by_tool["t-a"]["misses"] == 1
    assert cache.clear("t-a") == 1
    assert mrt.call("t-a", {}).source == "live"
    assert mrt.call("t-b", {}).source == "cache"
    assert cache.clear() == 2
    assert cache.stats()["entries"] == 0


@pytest.mark.parametrize(
    "section",
    [
        {"max_entries": 0},
        {"max_bytes": "big"},
        {"default_ttl_sec": -1},
        {"cache_private": ["everything"]},
        {"cassette_mode": "sometimes"},
        {"colour": "blue"},
        "not a table",
    ],
    ids=[
        "zero-cap",
        "bytes-type",
        "negative-ttl",
        "private-mode",
        "cassette-mode",
        "unknown",
        "type",
    ],
)
def test_bad_operator_config_is_refused_with_the_key(section: object) -> None:
    with pytest.raises(ConfigError, match=r"\[memo\]"):
        Runtime.memory(config={"memo": section})


def test_memo_is_installed_once_and_last(mrt: SyncRuntime) -> None:
    from skillyard.memo import install

    assert install(mrt.runtime) is memo_of(mrt.runtime)
    assert sum(type(m).__name__ == "Memo" for m in mrt.runtime.middleware) == 1


def test_a_broken_database_never_fails_a_call(
    mrt: SyncRuntime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3

    counter = add_counter(mrt)
    mrt.call("t-count", {"x": 0})  # the cache tables exist

    def disk_full(*args: object, **kw: object) -> object:
        raise sqlite3.OperationalError("database or disk is full")

    store = mrt.runtime.store
    monkeypatch.setattr(store, "transaction", disk_full)
    monkeypatch.setattr(store, "query", disk_full)
    memo(mrt).cache.forget_local()
    results = [mrt.call("t-count", {"x": 1}) for _ in range(2)]
    assert [r.source for r in results] == ["live", "live"]
    assert len(counter.calls) == 3
    assert "cache unavailable" in caplog.text


def test_a_hit_streams_the_recorded_events_to_the_sink(mrt: SyncRuntime) -> None:
    from skillyard import RawResult

    @mrt.tool("t-stream", policy=CACHED)
    def stream(args: dict, ctx: object) -> RawResult:
        ctx.emit("delta", text="a")  # type: ignore[attr-defined]
        return RawResult(output={"text": "a"}, content="a", usage={"tokens": 1})

    mrt.call("t-stream", {})
    seen: list[dict] = []
    hit = mrt.call("t-stream", {}, sink=seen.append)
    assert hit.source == "cache" and seen == [{"kind": "delta", "text": "a"}]
    assert (hit.content, hit.usage, len(hit.events)) == ("a", {"tokens": 1}, 1)


def test_the_in_process_copy_is_bounded_in_bytes(
    mrt: SyncRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skillyard.memo import cache as cache_module

    monkeypatch.setattr(cache_module, "_LOCAL_MAX_BYTES", 1000)
    counter = add_counter(mrt)
    for i in range(20):
        mrt.call("t-count", {"pad": "x" * 100, "i": i})
        mrt.call("t-count", {"pad": "x" * 100, "i": i})  # a hit: copied into memory
    cache = memo(mrt).cache
    assert 0 < cache._local_bytes <= 1000
    assert cache._local_bytes == sum(len(v[0]) for v in cache._local.values())
    assert all(mrt.call("t-count", {"pad": "x" * 100, "i": i}).source == "cache" for i in range(20))
    assert len(counter.calls) == 20


def test_a_hit_from_the_in_process_copy_needs_no_call_context(
    mrt: SyncRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = add_counter(mrt)
    mrt.call("t-count", {"x": 1})  # a miss: runs and stores
    assert mrt.call("t-count", {"x": 1}).source == "cache"  # fills the in-process copy
    m = memo(mrt)

    async def refuse(*a: object, **k: object) -> None:
        raise AssertionError("the chain was entered for a hit")

    monkeypatch.setattr(m, "on_call", refuse)
    hit = mrt.call("t-count", {"x": 1})
    async_hit = mrt.run(mrt.runtime.call("t-count", {"x": 1}))
    assert hit.source == async_hit.source == "cache"
    assert hit.output == {"n": 1, "echo": {"x": 1}} and hit.call_id != async_hit.call_id
    assert len(counter.calls) == 1
    monkeypatch.undo()
    stats = m.cache.stats("t-count")["tools"][0]
    assert (stats["hits"], stats["misses"]) == (3, 1), "a peek that finds nothing counts nothing"


def test_a_middleware_outside_the_memo_sees_every_call_hits_included(mrt: SyncRuntime) -> None:
    add_counter(mrt)
    seen: list[str] = []

    class Outer:
        async def on_call(self, ctx, call_next):  # type: ignore[no-untyped-def]
            result = await call_next(ctx)
            seen.append(result.source)
            return result

    mrt.runtime.use(Outer(), first=True)
    for _ in range(3):
        mrt.call("t-count", {"x": 1})
    assert seen == ["live", "cache", "cache"]


def test_a_stale_in_process_copy_is_not_served_by_the_early_answer(mrt: SyncRuntime) -> None:
    counter = add_counter(mrt, policy=Policy(cache="read-through", idempotent=True))
    mrt.call("t-count", {"x": 1})
    mrt.call("t-count", {"x": 1})
    memo(mrt).cache.clear("t-count")  # another writer's change bumps the generation
    assert mrt.call("t-count", {"x": 1}).source == "live"
    assert len(counter.calls) == 2
