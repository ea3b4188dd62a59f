"""The Lua demo step: the LuaSkills-format notes package with toy model callbacks.

Run alone with ``python examples/lua_demo.py``; ``examples/demo.py`` can call
``demo_step(rt, home)`` on its own runtime (the package is in examples/skills).
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from skillyard import SyncRuntime

EXAMPLES = Path(__file__).resolve().parent / "skills"


def toy_embed(request: dict[str, Any]) -> list[float]:
    """A bag-of-letters vector: enough to rank notes by overlap without a real model."""
    text = request["text"].lower()
    vec = [float(text.count(c)) for c in "abcdefghijklmnopqrstuvwxyz"]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def toy_llm(request: dict[str, Any]) -> str:
    lines = [line for line in request["user"].splitlines() if line.strip()]
    return f"{len(lines)} notes, first: {lines[0][2:] if lines else '-'}"


def demo_step(rt: SyncRuntime, home: Path) -> None:
    """Add two notes, search them, summarise them (notes land in the home's workspace)."""
    (home / "workspace").mkdir(exist_ok=True)
    rt.runtime.models.register(embed=toy_embed, llm=toy_llm)
    for title, text in (
        ("Lua in Python", "lupa embeds Lua 5.4; skillyard sandboxes it"),
        ("Groceries", "milk, bread and coffee"),
    ):
        print("  " + (rt.call("lua-notes-add", {"title": title, "text": text}).content or ""))
    found = rt.call("lua-notes-search", {"query": "sandboxed lua", "limit": 1}).output
    print("  search: " + orjson.dumps(found).decode())
    print("  summary: " + (rt.call("lua-notes-summarize", {}).content or ""))


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="skillyard-lua-demo-"))
    shutil.copytree(EXAMPLES / "lua-notes", home / "skills" / "user" / "lua-notes")
    rt = SyncRuntime.open(home)
    try:
        print("== lua-notes (LuaSkills skill.yaml, sandboxed Lua 5.4)")
        demo_step(rt, home)
    finally:
        rt.close()
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
