"""A Lua call takes one of three paths into the VM, and all three behave alike.

Warm isolates run an entry through a runner bound once per isolate; fresh isolates
load and run the entry in one crossing; ``options.thread`` (and runtime sessions)
drive the general ``H.call``. Each case below runs through all three and must give
the same output, or the same error with the same message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skillyard import SyncRuntime
from skillyard.errors import SkillyardError
from tests.transports.luakit import run_lua, write_lua_package

MODES = {
    "warm": {"isolation": "warm"},
    "fresh": {"isolation": "fresh"},
    "general": {"isolation": "warm", "thread": True},
}
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


def _outcome(tmp_path: Path, mode: str, body: str, args: dict[str, Any]) -> Any:
    try:
        return ("ok", run_lua(tmp_path / mode, body, args, limits=LIMITS, options=MODES[mode]))
    except SkillyardError as exc:
        return ("error", type(exc).__name__, exc.message, exc.details)


@pytest.mark.parametrize("case", list(CASES))
def test_warm_fresh_and_general_paths_agree(tmp_path, case):
    args = {"nested": {"list": [1, None, {"x": None}]}} if case == "echo-args" else ARGS
    outcomes = {mode: _outcome(tmp_path, mode, CASES[case], args) for mode in MODES}
    assert outcomes["warm"] == outcomes["general"], outcomes
    assert outcomes["fresh"] == outcomes["general"], outcomes


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
    assert fetched == ["extra"]


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
