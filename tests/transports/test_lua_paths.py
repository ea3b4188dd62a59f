"""A Lua call takes one of four paths into the VM, and all of them behave alike.

A warm isolate runs an entry through a runner bound once per isolate, either from the
runtime's flattened path (``LuaTransport.direct``: no call context, deferring to the
full path when the skill reaches out) or from ``LuaTransport.call``; fresh isolates
load and run the entry in one crossing; ``options.thread`` (and runtime sessions)
drive the general ``H.call``. Each case below runs through all four and must give the
same output, or the same error with the same message.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from skillyard import SyncRuntime
from skillyard.errors import SkillyardError
from skillyard.transports.base import SYSTEM, CallContext
from tests.transports.luakit import run_lua, write_lua_package

MODES = {
    "warm": {"isolation": "warm"},  # SyncRuntime.call with no options: the direct run
    "runner": {"isolation": "warm"},  # LuaTransport.call with a call context
    "fresh": {"isolation": "fresh"},  # the direct run of a fresh isolate
    "fresh-runner": {"isolation": "fresh"},  # ... and through LuaTransport.call
    "general": {"isolation": "warm", "thread": True},
}
VIA_TRANSPORT = ("runner", "fresh-runner")
LIMITS = {"instructions": 200_000, "max_output_bytes": 300}
ARGS = {"text": "hello", "n": 41, "flag": True, "ratio": 0.5}

CASES = {
    "flat-table": "return {ok = true, text = args.text, n = args.n + 1, r = args.ratio}",
    "empty-table": "return {}",
    "array": "return {1, 'two', {three = 3}}",
    "json-null-inside": "return {a = vulcan.json.null, b = {vulcan.json.null, 1}}",
    "json-null-alone": "return vulcan.json.null",
    "nil": "return nil",
    "boolean": "return true",
    "number": "return 42.5",
    "text": "return 'plain text'",
    "luaskills-tuple": "return 'text', 'truncate', 'a hint', {kept = true}",
    "bad-overflow-mode": "return 'text', 'explode'",
    "infinity": "return {x = 1/0}",
    "nan-alone": "return 0/0",
    "function-value": "return {f = function() end}",
    "bad-utf8-value": "return {s = string.char(255)}",
    "bad-utf8-key": "return {[string.char(255)] = 1}",
    "mixed-keys": "return {1, 2, x = 3}",
    "float-key": "return {[1.5] = 'x'}",
    "error-string": "error('boom')",
    "error-table": "error({message = 'table error'})",
    "error-other": "error(true)",
    "pcall-results": "return pcall(error, 'caught')",
    "instruction-limit": "local n = 0 while true do n = n + 1 end",
    "swallowed-limit": "local ok = pcall(function() while true do end end) return {ok = ok}",
    "output-too-large": "return {s = string.rep('x', 1000)}",
    "text-too-large": "return string.rep('y', 1000)",
    "text-truncated": "return string.rep('y', 1000), 'truncate'",
    "coroutine": "return {v = coroutine.wrap(function() coroutine.yield(7) end)()}",
    "require-missing": "return require('nope')",
    "string-methods": "return {r = ('ab'):rep(3), f = ('hello'):find('l+'), g = ('a-b'):gsub('-', '+')}",
    "echo-args": "return args",
    "many-keys": "local t = {} for i = 1, 40 do t['k' .. i] = i end return t",
}


def _via_transport(tmp_path: Path, body: str, args: dict[str, Any], mode: str) -> Any:
    """The call made straight through ``LuaTransport.call``, as the full pipeline does."""
    write_lua_package(tmp_path, body, limits=LIMITS, options=MODES[mode])
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(tmp_path / "probe", root="memory")
        card = rt.runtime.card("probe-run")
        ctx = CallContext(
            runtime=rt.runtime,
            card=card,
            args=args,
            caller=SYSTEM,
            call_id="t-1",
            deadline=time.monotonic() + card.limits.timeout_sec,
        )
        return rt.run(rt.runtime.transport("lua").call(card, args, ctx)).output


def _outcome(tmp_path: Path, mode: str, body: str, args: dict[str, Any]) -> Any:
    try:
        if mode in VIA_TRANSPORT:
            return ("ok", _via_transport(tmp_path / mode, body, args, mode))
        return ("ok", run_lua(tmp_path / mode, body, args, limits=LIMITS, options=MODES[mode]))
    except SkillyardError as exc:
        return ("error", type(exc).__name__, exc.message, exc.details)


@pytest.mark.parametrize("case", list(CASES))
def test_warm_fresh_and_general_paths_agree(tmp_path, case):
    args = {"nested": {"list": [1, None, {"x": None}]}} if case == "echo-args" else ARGS
    outcomes = {mode: _outcome(tmp_path, mode, CASES[case], args) for mode in MODES}
    for mode in MODES:
        assert outcomes[mode] == outcomes["general"], outcomes


def test_a_warm_isolate_reuses_its_runner_and_resets_state(tmp_path):
    body = "count = (count or 0) + 1\nreturn {count = count, n = args.n}"
    write_lua_package(tmp_path, body, options={"isolation": "warm"})
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(tmp_path / "probe", root="memory")
        outs = [rt.call("probe-run", {"n": i}).output for i in range(3)]
        transport = rt.runtime.transport("lua")
        (pool,) = transport._pools.values()
        (iso,) = pool
        assert len(iso.runners) == 1  # bound once, used by all three calls
    assert outs == [{"count": 1, "n": 0}, {"count": 1, "n": 1}, {"count": 1, "n": 2}]


def test_extras_load_only_when_a_skill_needs_them(tmp_path, monkeypatch):
    from skillyard.transports.lua.vulcan import LocalApi

    fetched: list[str] = []
    original = LocalApi.fetch

    def recording(self: LocalApi, name: Any) -> Any:
        if name in ("libs", "extra"):  # the harness's parts
            fetched.append(str(name))
        return original(self, name)

    monkeypatch.setattr(LocalApi, "__call__", recording)  # the harness's fetch function
    assert run_lua(tmp_path, "return {x = #args.s}", {"s": "abc"}, options=MODES["fresh"]) == {
        "x": 3
    }
    assert fetched == []  # a skill that touches no wrapper costs its isolate nothing more
    out = run_lua(
        tmp_path,
        "local ok, e = pcall(error, 'x')\nreturn {ok = ok, m = ('aXb'):match('X')}",
        options=MODES["fresh"],
    )
    assert out == {"ok": False, "m": "X"}
    assert fetched == ["libs", "extra"]  # the extra part builds on the library proxies
    fetched.clear()
    out = run_lua(
        tmp_path,
        "return {n = #table.concat({'a', 'b'}), u = ('x'):upper(), k = math.max(1, 2)}",
        options=MODES["fresh"],
    )
    assert out == {"n": 2, "u": "X", "k": 2}
    assert fetched == ["libs"]  # naming a library costs its proxy, not the extras


def test_a_discarded_fresh_isolate_is_freed_without_a_gc_pass(tmp_path, monkeypatch):
    import gc
    import weakref

    from skillyard.transports.lua.vulcan import LocalApi

    made: list[weakref.ref[LocalApi]] = []
    original = LocalApi.__init__

    def tracking(self: LocalApi) -> None:
        original(self)
        made.append(weakref.ref(self))

    monkeypatch.setattr(LocalApi, "__init__", tracking)
    write_lua_package(tmp_path, "return {x = 1}", options={"isolation": "fresh"})
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(tmp_path / "probe", root="memory")
        gc.disable()
        try:
            assert rt.call("probe-run", {}).output == {"x": 1}
            assert len(made) == 1
            assert made[0]() is None  # the VM and its helpers went with the last reference
        finally:
            gc.enable()


def _counting_host_runtime(
    tmp_path: Path, body: str, isolation: str = "warm"
) -> tuple[SyncRuntime, list[str]]:
    sent: list[str] = []

    class Host:
        async def dispatch(self, method: str, params: dict[str, Any]) -> Any:
            sent.append(method)
            return "v"

    write_lua_package(tmp_path, body, options={"isolation": isolation})
    rt = SyncRuntime.memory()
    rt.runtime.host_factory = lambda ctx: Host()
    rt.runtime.add_package(tmp_path / "probe", root="memory")
    return rt, sent


def test_a_direct_run_that_reaches_the_host_defers_before_sending_anything(tmp_path):
    body = "local before = (before or 0) + 1\nreturn {v = vulcan.config.get('k'), n = before}"
    rt, sent = _counting_host_runtime(tmp_path, body)
    with rt:
        outs = [rt.call("probe-run", {}).output for _ in range(3)]
        stats = rt.run(rt.runtime.transport("lua").health())
    assert outs == [{"v": "v", "n": 1}] * 3
    assert sent == ["config.get"] * 3  # one request per call: the deferred run sent none
    assert stats["isolates"] == 1 and stats["pooled"] == 1  # the deferring VM was kept


def test_a_direct_run_defers_on_a_log_line_even_inside_pcall(tmp_path):
    body = "pcall(print, 'hello')\nreturn {ok = true}"
    rt, _ = _counting_host_runtime(tmp_path, body)
    seen: list[dict[str, Any]] = []
    with rt:
        first = rt.call("probe-run", {})
        second = rt.call("probe-run", {}, sink=seen.append)
    assert first.output == second.output == {"ok": True}
    logs = [e for e in first.events if e["kind"] == "log"]
    assert [e["message"] for e in logs] == ["hello"]  # emitted once, by the full run
    assert [e["message"] for e in seen if e["kind"] == "log"] == ["hello"]


def test_a_direct_run_defers_for_the_call_context(tmp_path):
    rt, _ = _counting_host_runtime(tmp_path, "return {id = vulcan.context.call_id}")
    with rt:
        result = rt.call("probe-run", {})
    assert result.output == {"id": result.call_id}


def test_a_skill_that_never_reaches_out_stays_on_the_direct_path(tmp_path):
    rt, _ = _counting_host_runtime(tmp_path, "return {n = args.n + 1}")
    with rt:
        transport = rt.runtime.transport("lua")
        calls: list[Any] = []
        original = transport.call

        async def counting(*a: Any) -> Any:
            calls.append(a)
            return await original(*a)

        transport.call = counting  # type: ignore[method-assign]
        outs = [rt.call("probe-run", {"n": i}).output for i in range(3)]
    assert outs == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert calls == []  # never needed the full path


# -- arguments by shape, the kept environment, non-JSON values --------------------------

SHAPE_ARGS = [
    {},
    {"a": 1},
    {"b": "two", "a": 1},  # the same keys as the next one, in another order
    {"a": 1, "b": "two"},
    {"a": 1.5, "b": True, "c": "x" * 100},
    {"a": None},  # a null: the general conversion
    {"a": {"nested": [1, None]}},
    {f"k{i}": i for i in range(20)},  # more keys than a shape takes
]


@pytest.mark.parametrize("mode", ["warm", "runner", "fresh", "fresh-runner"])
def test_arguments_of_any_shape_arrive_as_the_general_path_gives_them(tmp_path, mode):
    body = "return {args = args, keys = #(function() local k = {} for n in pairs(args) do k[#k + 1] = n end return k end)()}"
    for i, args in enumerate(SHAPE_ARGS):
        outcome = _outcome(tmp_path / f"{mode}{i}", mode, body, args)
        general = _outcome(tmp_path / f"general{i}", "general", body, args)
        assert outcome == general, (args, outcome, general)
        assert outcome[0] == "ok" and outcome[1]["keys"] == len(args)
    assert outcome[1]["args"] == SHAPE_ARGS[-1]


def test_one_isolate_serves_changing_shapes_in_order(tmp_path):
    write_lua_package(tmp_path, "return {a = args.a, b = args.b}", options={"isolation": "warm"})
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(tmp_path / "probe", root="memory")
        outs = [
            rt.call("probe-run", args).output
            for args in ({"a": 1, "b": 2}, {"b": 3, "a": 4}, {"a": 5, "b": 6}, {"b": 7})
        ]
        (pool,) = rt.runtime.transport("lua")._pools.values()
        (iso,) = pool
        (shapes,) = iso.runners.values()
    assert outs == [{"a": 1, "b": 2}, {"a": 4, "b": 3}, {"a": 5, "b": 6}, {"b": 7}]
    assert set(shapes) == {None, ("a", "b"), ("b", "a"), ("b",)}


@pytest.mark.parametrize(
    "body",
    [
        "leak = (leak or 0) + 1",
        "_G.leak = (_G.leak or 0) + 1",
        "rawset(_G, 'leak', (rawget(_G, 'leak') or 0) + 1)",
        "_G = {leak = 1}",
        "local t = _G; _G = nil; t.leak = 1",
        "leak = 1; leak = nil",
    ],
)
def test_a_kept_environment_never_carries_a_global_to_the_next_call(tmp_path, body):
    write_lua_package(
        tmp_path,
        f"local seen = rawget(_ENV, 'leak')\n{body}\nreturn {{seen = seen or false}}",
        options={"isolation": "warm"},
    )
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(tmp_path / "probe", root="memory")
        outs = [rt.call("probe-run", {}).output for _ in range(3)]
        stats = rt.run(rt.runtime.transport("lua").health())
    assert outs == [{"seen": False}] * 3
    assert stats["isolates"] == 1  # one VM served all three


class _Opaque:
    def __repr__(self) -> str:
        return "opaque"


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(
    "args",
    [
        {"x": _Opaque()},
        {"x": [1, _Opaque()]},
        {"x": {"y": print}},
        {"x": {(1, 2): "tuple key"}},
    ],
    ids=["value", "in-list", "callable", "tuple-key"],
)
def test_a_python_object_in_the_arguments_never_reaches_lua(tmp_path, mode, args):
    outcome = _outcome(tmp_path, mode, "return {t = type(args.x)}", args)
    assert outcome[0] == "error", outcome
    assert outcome[1] == "SkillError"
    assert "cannot be passed to Lua" in outcome[2]


def test_flat_results_with_null_text_or_large_text_are_checked_exactly(tmp_path):
    assert run_lua(tmp_path / "a", "return {s = 'null', t = 'nullable'}") == {
        "s": "null",
        "t": "nullable",
    }
    with pytest.raises(SkillyardError, match="not a JSON number"):
        run_lua(tmp_path / "b", "return {x = 0/0, s = 'ok'}", options={"isolation": "warm"})
    with pytest.raises(SkillyardError, match="output is 1008 bytes; the limit is 1000"):
        run_lua(
            tmp_path / "c",
            "return {s = string.rep('x', 1000)}",
            limits={"max_output_bytes": 1000},
            options={"isolation": "warm"},
        )


def test_a_fresh_direct_run_that_reaches_the_host_defers_once_per_card(tmp_path):
    body = "return {v = vulcan.config.get('k'), n = args.n}"
    rt, sent = _counting_host_runtime(tmp_path, body, isolation="fresh")
    with rt:
        outs = [rt.call("probe-run", {"n": i}).output for i in range(3)]
        stats = rt.run(rt.runtime.transport("lua").health())
    assert outs == [{"v": "v", "n": i} for i in range(3)]
    assert sent == ["config.get"] * 3  # the deferred run sent nothing
    # the first call built a VM for its deferred direct run and one for the full call;
    # later calls go the full way at once, a VM each, none kept
    assert stats["isolates"] == 4 and stats["pooled"] == 0
