"""The Lua fixture of the transport conformance suite (tests/transports/test_conformance.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from skillyard import SyncRuntime
from tests.transports.conformance_kit import FLOOD_BYTES, install_package

HEAD = """
version = "1.0.0"
runtime = "lua"
entry = "conf.lua"

[options]
isolation = "warm"
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
        install_package(rt, tmp_path, HEAD, {"conf.lua": textwrap.dedent(LUA)})
