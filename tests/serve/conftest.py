from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

SKILL_TOML = """
id = "echo"
runtime = "python"
entry = "skill.py"
help = { usage = "HELP.md" }

[[methods]]
name = "say"
title = "Say it back"
description = "Echo the text"
input_schema = { type = "object", properties = { text = { type = "string" }, n = { type = "integer" } }, required = ["text"] }
output_schema = { type = "object", properties = { text = { type = "string" } }, required = ["text"] }

[[methods]]
name = "count"
description = "Count to n, reporting progress"
input_schema = { type = "object", properties = { n = { type = "integer" } }, required = ["n"] }

[[methods]]
name = "slow"
description = "Wait until cancelled"
input_schema = { type = "object", properties = { marker = { type = "string" } }, required = ["marker"] }

[[methods]]
name = "number"
description = "A bare number as output"
output_schema = { type = "integer" }

[[methods]]
name = "boom"
description = "Always fails"

[[methods]]
name = "secret"
description = "A private callback"
hidden = true

[[methods]]
name = "greet"
description = "A greeting prompt"
roles = ["prompt"]
input_schema = { type = "object", properties = { who = { type = "string", description = "whom to greet" } }, required = ["who"] }
"""

SKILL_PY = """
import asyncio
from pathlib import Path


def say(args):
    return {"text": args["text"]}


def count(args, ctx):
    for i in range(args["n"]):
        ctx.emit("progress", progress=i + 1, total=args["n"], message=f"step {i + 1}")
    return {"counted": args["n"]}


async def slow(args):
    marker = Path(args["marker"])
    marker.with_suffix(".started").write_text("1")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        marker.with_suffix(".cancelled").write_text("1")
        raise
    return {"done": True}


def number(args):
    return 42


def boom(args):
    raise RuntimeError("kaboom")


def secret(args):
    return {"secret": True}


def greet(args):
    return f"Please greet {args['who']} warmly."
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A runtime home with one python skill exercising every MCP feature."""
    pkg = tmp_path / "home" / "skills" / "project" / "echo"
    pkg.mkdir(parents=True)
    (pkg / "skill.toml").write_text(textwrap.dedent(SKILL_TOML))
    (pkg / "skill.py").write_text(SKILL_PY)
    (pkg / "HELP.md").write_text("# echo\n\nSays things back.\n")
    return tmp_path / "home"


def server_argv(home: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "skillyard.cli.main", "--home", str(home), "serve", "mcp", *extra]
