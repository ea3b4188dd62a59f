"""The shared transport promises, kept by the Lua transport (fixture: lua_conformance.py)."""

from __future__ import annotations

import asyncio

import pytest

from skillyard import SyncRuntime
from skillyard.errors import InvalidOutput, OutputTooLarge, SkillError, SkillTimeout
from tests.transports.lua_conformance import LuaConformanceSkills


@pytest.fixture
def conf(tmp_path):
    runtime = SyncRuntime.memory()
    LuaConformanceSkills().install(runtime, tmp_path)
    yield runtime
    runtime.close()


def test_result_round_trip(conf):
    args = {"text": "héllo ✓", "n": 42, "nested": {"list": [1, 2.5, None, True]}, "empty": {}}
    result = conf.call("conf-echo", args)
    assert result.output == {"echo": args}
    assert result.tool == "conf-echo" and result.call_id


def test_timeout_is_skill_timeout(conf):
    with pytest.raises(SkillTimeout) as info:
        conf.call("conf-slow", {})
    assert info.value.tool == "conf-slow"
    assert conf.call("conf-echo", {"after": "timeout"}).output == {"echo": {"after": "timeout"}}


def test_output_cap_is_output_too_large(conf):
    with pytest.raises(OutputTooLarge):
        conf.call("conf-flood", {})
    assert conf.call("conf-echo", {"after": "flood"}).output == {"echo": {"after": "flood"}}


def test_skill_error_is_skill_error(conf):
    with pytest.raises(SkillError, match="conformance failure") as info:
        conf.call("conf-fail", {})
    assert info.value.code == "skill_error" and info.value.call_id


def test_output_schema_is_checked(conf):
    with pytest.raises(InvalidOutput) as info:
        conf.call("conf-badout", {})
    assert info.value.tool == "conf-badout"


def test_many_calls_in_flight(conf):
    async def many():
        return await asyncio.gather(*(conf.runtime.call("conf-echo", {"i": i}) for i in range(8)))

    results = conf.run(many())
    assert [r.output["echo"]["i"] for r in results] == list(range(8))
