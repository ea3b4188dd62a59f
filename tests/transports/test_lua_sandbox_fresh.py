"""The sandbox attack suite again, with every isolate fresh (one new VM per call).

Warm isolates (the suite's default for the ``memory`` root) and fresh ones take
different paths into Lua (a bound runner against one load-and-run crossing) and a
fresh isolate loads the harness extras only when a skill first touches them, so
each attack has to be stopped the same way in both modes. A test that asks for
warm isolates explicitly keeps them.
"""

from __future__ import annotations

import time

import pytest

from skillyard import SyncRuntime
from skillyard.errors import LimitExceeded, SkillTimeout
from skillyard.transports.lua import LuaTransport
from tests.transports.luakit import run_lua
from tests.transports.test_lua_sandbox import *  # noqa: F403


@pytest.fixture(autouse=True)
def _fresh_isolates(monkeypatch: pytest.MonkeyPatch) -> None:
    def fresh_unless_asked(self: LuaTransport, card: object) -> str:
        options = getattr(card, "options", {})
        return "warm" if options.get("isolation") == "warm" else "fresh"

    monkeypatch.setattr(LuaTransport, "isolation_for", fresh_unless_asked)


def test_this_module_really_runs_fresh_isolates(tmp_path):
    with SyncRuntime.memory() as rt:
        for _ in range(3):
            assert run_lua(tmp_path, "return {n = 1}", rt=rt) == {"n": 1}
        stats = rt.runtime.transport("lua").stats
        assert stats["isolates"] == 3
        assert stats["discarded"] == 3


@pytest.mark.parametrize(
    "body",
    [
        "return (args.a):rep(40000):find('.-.-.-.-b')",
        "return (args.a):rep(40000):match('^(.-)(.-)(.-)b')",
        "return ((args.a):rep(40000):gsub('a*a*a*a*b', ''))",
        "for x in (args.a):rep(40000):gmatch('(.-)(.-)(.-)b') do end",
    ],
    ids=["find", "match", "gsub", "gmatch"],
)
def test_string_methods_are_guarded_before_anything_else_is_loaded(tmp_path, body):
    # the skill's first and only reach into the libraries is a string method, in a fresh VM
    # whose extras (the pattern cost estimate, the hooked matcher) are not loaded yet
    t0 = time.monotonic()
    with pytest.raises(SkillTimeout):
        run_lua(tmp_path, body, {"a": "a"}, limits={"timeout_sec": 0.5, "memory_mb": 64})
    assert time.monotonic() - t0 < 5


def test_a_string_method_memory_bomb_is_refused_in_a_new_vm(tmp_path):
    with pytest.raises(LimitExceeded) as info:
        run_lua(tmp_path, "return (args.a):rep(1e9, ',')", {"a": "x"}, limits={"memory_mb": 16})
    assert info.value.details["limit"] == "memory"
