"""The Lua fixture of the transport conformance suite (tests/transports/test_conformance.py)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from skillyard import SyncRuntime

ECHO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"echo": {"type": "object"}},
    "required": ["echo"],
    "additionalProperties": False,
}
FLOOD_BYTES = 50_000
CAP = 2_000

MANIFEST = f"""
version = "1.0.0"
runtime = "lua"
entry = "conf.lua"

[options]
isolation = "warm"

[[methods]]
name = "echo"
output_schema = "schemas/echo.json"

[[methods]]
name = "slow"
limits = {{ timeout_sec = 1 }}

[[methods]]
name = "flood"
limits = {{ max_output_bytes = {CAP} }}

[[methods]]
name = "fail"

[[methods]]
name = "badout"
output_schema = "schemas/echo.json"
"""

LUA = f"""
local M = {{}}
function M.echo(args) return {{echo = args}} end
function M.slow(args) while true do end end
function M.flood(args) return string.rep("x", {FLOOD_BYTES}) end
function M.fail(args) error("conformance failure") end
function M.badout(args) return {{wrong = 1}} end
return M
"""


class LuaConformanceSkills:
    def install(self, rt: SyncRuntime, tmp_path: Path) -> None:
        pkg = tmp_path / "conf"
        (pkg / "schemas").mkdir(parents=True)
        (pkg / "schemas" / "echo.json").write_text(json.dumps(ECHO_SCHEMA))
        (pkg / "conf.lua").write_text(textwrap.dedent(LUA))
        (pkg / "skill.toml").write_text(textwrap.dedent(MANIFEST))
        rt.runtime.add_package(pkg)
