"""The sandbox attack suite again, with every isolate fresh (one new VM per call).

Warm isolates (the suite's default for the ``memory`` root) and fresh ones take
different paths into Lua (a bound runner against one load-and-run crossing) and a
fresh isolate loads the harness extras only when a skill first touches them, so
each attack has to be stopped the same way in both modes. A test that asks for
warm isolates explicitly keeps them.
"""

from __future__ import annotations

import pytest

from skillyard import SyncRuntime
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
