"""`make demo`: a tour of skillyard on a throw-away runtime home.

It copies the example skills into the home's USER root, writes a policy that lets
them run (and nothing else), and then calls a skill of every kind: in-process
Python, a persistent process worker, a streamed process, a LuaSkills package, a
WASM module. It shows a cache hit, a refused call, the audit ledger, and the
same skills served to an official MCP client over stdio.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from skillyard import Card, SkillyardError, SyncRuntime

EXAMPLES = Path(__file__).resolve().parent / "skills"

POLICY = """\
version = "demo-1"
description = "make demo: the example skills may run; everything else is denied"

[contracts."*"]
level = "L3"
reversible = true
blast_radius = "local"

[[rules]]
name = "examples"
tool = ["text-tools-*", "text-stats-*", "line-grep-*", "lua-notes-*", "tally-*"]
effect = "allow"
reason = "the shipped examples"
"""

CONFIG = """\
[gate]
policy = "policy.toml"
"""


def step(title: str) -> None:
    print(f"\n== {title}")


def show(value: Any) -> None:
    print("  " + orjson.dumps(value).decode())


def demo_embed(request: dict[str, Any]) -> dict[str, Any]:
    """A stand-in embedding model (no network): hashed bag of words, normalised."""
    vec = [0.0] * 64
    for word in str(request.get("text", "")).lower().split():
        vec[hashlib.sha256(word.strip(".,!?").encode()).digest()[0] % 64] += 1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return {"vector": [v / norm for v in vec], "model": "demo-hash-64"}


def demo_llm(request: dict[str, Any]) -> dict[str, Any]:
    """A stand-in language model (no network): the first sentence of each paragraph."""
    paragraphs = [p for p in str(request.get("user", "")).split("\n") if p.strip()]
    summary = " / ".join(p.split(". ")[0].strip() for p in paragraphs[:5])
    return {"text": f"Summary: {summary}", "model": "demo-extractive"}


def tour(rt: SyncRuntime) -> None:
    step("skills an agent can see")
    for card in rt.list():
        print(f"  {card.name:28} {card.transport:8} {card.description[:58]}")
    for problem in rt.runtime.problems:
        print(f"  (not loaded: {problem.path}: {problem.message})")

    text = (
        "Skillyard runs skills. Skills are small tools an agent calls!\n"
        "Every call is checked, governed and recorded. Read https://example.org/docs."
    )
    step("python, in process: text-tools-stats (cached: read-through)")
    first = rt.call("text-tools-stats", {"text": text, "top": 3})
    show(first.output)
    again = rt.call("text-tools-stats", {"text": text, "top": 3})
    print(f"  the same call again came from: {again.source}")

    step("process, persistent worker: text-stats-analyze")
    show(rt.call("text-stats-analyze", {"text": text, "top": 3}).output)

    step("process, streamed line by line: line-grep-search")
    result = rt.call(
        "line-grep-search",
        {"text": text, "pattern": "call"},
        sink=lambda e: e.get("kind") == "delta" and print(f"  delta: {e.get('text', '').rstrip()}"),
    )
    show(result.output)

    step("Lua (a LuaSkills package, sandboxed): lua-notes-add, -search, -summarize")
    rt.call("lua-notes-add", {"title": "Ship it", "text": "Release on Friday. Tell the team."})
    rt.call("lua-notes-add", {"title": "Groceries", "text": "Milk, bread and coffee."})
    found = rt.call("lua-notes-search", {"query": "release friday", "limit": 1})
    show(found.output if found.output is not None else found.content)
    print("  " + str(rt.call("lua-notes-summarize", {}).content))

    step("WASM (C compiled to wasm32-wasi), state kept between calls: tally")
    rt.call("tally-count", {"text": "red green red"})
    show(rt.call("tally-count", {"text": "blue red"}).output)
    show(rt.call("tally-totals", {}).output)

    step("governance: a tool the policy does not name is refused")

    @rt.tool("ops-restart", description="Restart a service (not in the demo policy).")
    def restart(args: dict[str, Any]) -> dict[str, Any]:
        return {"restarted": True}

    try:
        rt.call("ops-restart", {})
    except SkillyardError as exc:
        print(f"  {exc.code}: {exc.message}")
    assert isinstance(rt.card("ops-restart"), Card)


def audit(home: Path) -> None:
    step("the tamper-evident ledger: skillyard audit verify")
    cli = [sys.executable, "-m", "skillyard", "--home", str(home)]
    out = subprocess.run([*cli, "audit", "verify"], capture_output=True, text=True, timeout=60)
    print("  " + (out.stdout or out.stderr).strip().replace("\n", "\n  "))


async def over_mcp(home: Path) -> None:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    step("the same skills over MCP (official client, stdio): skillyard serve mcp")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "skillyard", "--home", str(home), "serve", "mcp"],
        env={**os.environ, "SKILLYARD_HOME": str(home)},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        print(f"  {len(tools.tools)} tools, e.g. {', '.join(t.name for t in tools.tools[:3])}")
        result = await session.call_tool("text-tools-slugify", {"text": "Skills, served over MCP!"})
        print(f"  text-tools-slugify -> {result.structured_content}")


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="skillyard-demo-"))
    shutil.copytree(EXAMPLES, home / "skills" / "user")
    (home / "policy.toml").write_text(POLICY)
    (home / "config.toml").write_text(CONFIG)
    print(f"runtime home: {home}")
    try:
        rt = SyncRuntime.open(home)
        rt.runtime.models.register(embed=demo_embed, llm=demo_llm)  # type: ignore[attr-defined]
        try:
            tour(rt)
        finally:
            rt.close()
        audit(home)
        asyncio.run(over_mcp(home))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print("\ndemo finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
