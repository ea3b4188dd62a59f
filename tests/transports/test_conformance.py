"""The promises every transport keeps, checked by one suite.

Each transport provides a :class:`Skills` fixture that installs the same five
tools under the same names; a new transport (lua, wasm, mcp) adds a class to
``SKILLS`` and every test here runs against it.

=========== ==========================================================
tool        behaviour
=========== ==========================================================
conf-echo   returns ``{"echo": args}`` (output schema requires ``echo``)
conf-slow   takes longer than its 1 s timeout
conf-flood  returns a string far over its 2,000-byte output cap
conf-fail   reports a skill error whose message says ``conformance failure``
conf-badout returns ``{"wrong": 1}``, which its output schema forbids
=========== ==========================================================
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

import pytest

from skillyard import SyncRuntime
from skillyard.card import Limits
from skillyard.errors import InvalidOutput, OutputTooLarge, SkillError, SkillTimeout
from tests.transports.conformance_kit import CAP, ECHO_SCHEMA, FLOOD_BYTES, install_package
from tests.transports.lua_conformance import LuaConformanceSkills


class Skills(Protocol):
    """Installs conf-echo, conf-slow, conf-flood, conf-fail and conf-badout into a runtime."""

    def install(self, rt: SyncRuntime, tmp_path: Path) -> None: ...


class PythonSkills:
    def install(self, rt: SyncRuntime, tmp_path: Path) -> None:
        @rt.tool("conf-echo", output_schema=ECHO_SCHEMA)
        def echo(args: dict[str, Any]) -> dict[str, Any]:
            return {"echo": args}

        @rt.tool("conf-slow", limits=Limits(timeout_sec=1))
        async def slow(args: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(30)
            return {}

        @rt.tool("conf-flood", limits=Limits(max_output_bytes=CAP))
        def flood(args: dict[str, Any]) -> str:
            return "x" * FLOOD_BYTES

        @rt.tool("conf-fail")
        def fail(args: dict[str, Any]) -> None:
            raise ValueError("conformance failure")

        @rt.tool("conf-badout", output_schema=ECHO_SCHEMA)
        def badout(args: dict[str, Any]) -> dict[str, Any]:
            return {"wrong": 1}


WORKER_SCRIPT = f"""
import time
from skillyard.worker import Error, serve

def slow(args, ctx):
    time.sleep(30)

def fail(args, ctx):
    raise Error("conformance failure")

serve({{
    "echo": lambda args, ctx: {{"echo": args}},
    "slow": slow,
    "flood": lambda args, ctx: "x" * {FLOOD_BYTES},
    "fail": fail,
    "badout": lambda args, ctx: {{"wrong": 1}},
}})
"""

JSON_SCRIPT = f"""
import json, os, sys, time
args = json.load(sys.stdin)
method = os.environ["SKILLYARD_METHOD"]
if method == "slow":
    time.sleep(30)
out = {{
    "echo": {{"echo": args}},
    "flood": {{"text": "x" * {FLOOD_BYTES}}},
    "fail": {{"error": {{"message": "conformance failure"}}}},
    "badout": {{"wrong": 1}},
}}[method]
print(json.dumps(out))
"""


class ProcessSkills:
    def __init__(self, mode: str, script: str) -> None:
        self.mode = mode
        self.script = script

    def install(self, rt: SyncRuntime, tmp_path: Path) -> None:
        head = f"""
version = "1.0.0"
runtime = "process"
entry = ["{{python}}", "main.py"]

[options]
mode = "{self.mode}"
"""
        install_package(rt, tmp_path, head, {"main.py": self.script})


class WasmSkills:
    """The five tools as a C guest (tests/transports/wasm_guests/conf.c)."""

    def __init__(self, *, warm: bool) -> None:
        from tests.transports.wasm_support import WasmConformanceSkills

        self.skills = WasmConformanceSkills(warm=warm)

    def install(self, rt: SyncRuntime, tmp_path: Path) -> None:
        self.skills.install(rt, tmp_path, ECHO_SCHEMA)


SKILLS: dict[str, Skills] = {
    "python": PythonSkills(),
    "process-worker": ProcessSkills("worker", WORKER_SCRIPT),
    "process-json": ProcessSkills("json", JSON_SCRIPT),
    "wasm": WasmSkills(warm=False),
    "wasm-warm": WasmSkills(warm=True),
    "lua": LuaConformanceSkills(),
}


@pytest.fixture(params=sorted(SKILLS), ids=sorted(SKILLS))
def conf(request, tmp_path):
    runtime = SyncRuntime.memory()
    SKILLS[request.param].install(runtime, tmp_path)
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
    async def many() -> list[Any]:
        return await asyncio.gather(*(conf.runtime.call("conf-echo", {"i": i}) for i in range(8)))

    results = conf.run(many())
    assert [r.output["echo"]["i"] for r in results] == list(range(8))
