"""The `mcp` transport against real third-party servers: their tools as cards, called end to end."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from skillyard.errors import ConfigError, SkillError, SkillTimeout
from skillyard.runtime import Runtime
from skillyard.serve.mcp import McpServer
from skillyard.serve.mcp_http import start_http

REPO = Path(__file__).resolve().parents[2]
EVERYTHING = REPO / ".ci" / "node_modules" / "@modelcontextprotocol" / "server-everything"


def everything_argv() -> list[str]:
    node = shutil.which("node")
    entry = EVERYTHING / "dist" / "index.js"
    assert node and entry.is_file(), "server-everything is missing: run `bash .ci/setup`"
    return [node, str(entry), "stdio"]


def write_pkg(root: Path, skill_id: str, options: str, extra: str = "") -> Path:
    pkg = root / "skills" / "project" / skill_id
    pkg.mkdir(parents=True)
    body = f'id = "{skill_id}"\nruntime = "mcp"\n{extra}\n[options]\n{options}\n'
    (pkg / "skill.toml").write_text(body)
    return pkg


def toml_list(argv: list[str]) -> str:
    return "[" + ", ".join(f'"{a}"' for a in argv) + "]"


def children_matching(text: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and text in cmd:
            found.append(int(pid))
    return found


async def until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_time_server_from_config_listed_called_restarted(tmp_path: Path) -> None:
    time_cfg = {
        "command": sys.executable,
        "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"],
    }
    config = {"mcp": {"servers": {"clock": time_cfg}}}

    async def go() -> None:
        rt = Runtime.open(tmp_path / "home", config=config)
        assert rt.problems == []
        names = [c.name for c in rt.list()]
        assert names == ["clock-convert_time", "clock-get_current_time"]
        card = rt.card("clock-get_current_time")
        assert card.transport == "mcp" and card.input_schema["type"] == "object"
        assert "timezone" in card.input_schema["properties"]
        assert card.options["annotations"].get("readOnlyHint") is True
        res = await rt.call("clock-get_current_time", {"timezone": "Europe/Paris"})
        assert res.output["timezone"] == "Europe/Paris" and "datetime" in res.output
        with pytest.raises(SkillError, match="Invalid timezone"):
            await rt.call("clock-get_current_time", {"timezone": "Nowhere/Atlantis"})
        # kill the server: the link notices and the next call restarts it
        pids = children_matching("mcp_server_time")
        assert len(pids) == 1
        os.kill(pids[0], signal.SIGKILL)

        async def dead() -> bool:
            return not (await rt.health())["mcp"]["servers"]["clock"]["alive"]

        await until(dead)
        again = await rt.call("clock-get_current_time", {"timezone": "Asia/Tokyo"})
        assert again.output["timezone"] == "Asia/Tokyo"
        health = await rt.health()
        assert health["mcp"]["restarts"] == 1
        new_pids = children_matching("mcp_server_time")
        assert len(new_pids) == 1 and new_pids != pids
        await rt.aclose()
        assert children_matching("mcp_server_time") == []  # closed cleanly on shutdown
        # the tool list is cached in the store: reopening lists cards without a server
        rt2 = Runtime.open(tmp_path / "home", config=config)
        assert [c.name for c in rt2.list()] == names
        assert children_matching("mcp_server_time") == []
        await rt2.aclose()

    asyncio.run(go())


def test_everything_server_package_progress_and_timeout(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_pkg(
        home,
        "everything",
        f"command = {toml_list(everything_argv())}\n"
        'env = { SKILLYARD_PROBE = "${config:probe}", FIXED = "plain" }',
        extra='description = "reference server"\n'
        '[[config]]\nkey = "probe"\nsensitive = true\n'
        "[limits]\ntimeout_sec = 20\n"
        '[policy]\ncache = "read-through"\nidempotent = true',  # the memo applies as usual
    )
    config = {"skills": {"everything": {"config": {"probe": "xyz-123"}}}}

    async def go() -> None:
        rt = Runtime.open(home, config=config)
        assert rt.problems == []
        names = {c.name for c in rt.list()}
        assert {
            "everything-echo",
            "everything-get-sum",
            "everything-get-structured-content",
        } <= names
        assert "everything-trigger-long-running-operation" in names
        echo = await rt.call("everything-echo", {"message": "hi there"})
        assert "hi there" in echo.content
        env = await rt.call("everything-get-env", {})
        assert '"SKILLYARD_PROBE": "xyz-123"' in env.content and '"FIXED": "plain"' in env.content
        assert "xyz-123" not in str(rt.card("everything-get-env").to_dict())  # never on a card
        total = await rt.call("everything-get-sum", {"a": 2, "b": 40})
        assert "42" in total.content and total.source == "live"
        again = await rt.call("everything-get-sum", {"a": 2, "b": 40})
        assert again.source == "cache" and again.output == total.output
        events: list[dict] = []
        res = await rt.call(
            "everything-trigger-long-running-operation",
            {"duration": 0.4, "steps": 2},
            sink=events.append,
        )
        assert "completed" in res.content
        assert [e["progress"] for e in events] == [1, 2] and events[0]["total"] == 2
        # a slow tool is cancelled by the call's timeout; the warm session keeps serving
        t0 = time.monotonic()
        with pytest.raises(SkillTimeout, match="cancelled"):
            await rt.call(
                "everything-trigger-long-running-operation",
                {"duration": 30, "steps": 3},
                timeout=1.0,
            )
        assert time.monotonic() - t0 < 10
        echo2 = await rt.call("everything-echo", {"message": "still warm"})
        assert "still warm" in echo2.content
        assert (await rt.health())["mcp"]["restarts"] == 0
        await rt.aclose()

    asyncio.run(go())


CHANGING_SERVER = """
from mcp.server.mcpserver import Context, MCPServer

srv = MCPServer("changing")


@srv.tool()
def ping() -> str:
    return "pong"


@srv.tool()
async def grow(ctx: Context) -> str:
    def extra() -> str:
        return "new tool"

    srv.add_tool(extra, name="extra")
    await ctx.session.send_tool_list_changed()
    return "grown"


srv.run()
"""


def test_tools_list_changed_refreshes_cards(tmp_path: Path) -> None:
    script = tmp_path / "changing.py"
    script.write_text(textwrap.dedent(CHANGING_SERVER))
    config = {"mcp": {"servers": {"chg": {"command": [sys.executable, str(script)]}}}}

    async def go() -> None:
        rt = Runtime.open(tmp_path / "home", config=config)
        assert [c.name for c in rt.list()] == ["chg-grow", "chg-ping"]
        assert (await rt.call("chg-grow", {})).output == {"result": "grown"}

        async def grown() -> bool:
            return "chg-extra" in [c.name for c in rt.list()]

        await until(grown)
        assert (await rt.call("chg-extra", {})).content == "new tool"
        await rt.aclose()

    asyncio.run(go())


def test_streamable_http_server_with_headers_from_config(tmp_path: Path) -> None:
    async def go() -> None:
        served = Runtime.memory()

        @served.tool("calc-add", input_schema={"type": "object"})
        def add(args: dict) -> dict:
            return {"sum": args["a"] + args["b"]}

        running = await start_http(McpServer(served), "127.0.0.1", 0, token="tok-123")
        os.environ["SKILLYARD_TEST_MCP_TOKEN"] = "tok-123"
        try:
            config = {
                "mcp": {
                    "servers": {
                        "remote": {
                            "url": running.url,
                            "headers": {"Authorization": "Bearer ${env:SKILLYARD_TEST_MCP_TOKEN}"},
                        }
                    }
                }
            }
            # discovery runs in a worker thread; this loop keeps serving meanwhile
            rt = await asyncio.to_thread(Runtime.open, tmp_path / "home", config=config)
            assert rt.problems == []
            assert [c.name for c in rt.list()] == ["remote-calc-add"]
            res = await rt.call("remote-calc-add", {"a": 2, "b": 3})
            assert res.output == {"sum": 5}
            await rt.aclose()
        finally:
            os.environ.pop("SKILLYARD_TEST_MCP_TOKEN", None)
            await running.aclose()
            await served.aclose()

    asyncio.run(go())


def test_bad_specs_are_problems_not_crashes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_pkg(home, "both", 'command = "x"\nurl = "http://127.0.0.1:1/mcp"')
    write_pkg(home, "missing", 'command = "/nonexistent/server-binary"')
    write_pkg(home, "secret", 'command = "true"\nenv = { TOKEN = "${config:api_token}" }')
    rt = Runtime.open(home)
    problems = {p.skill_id: p.message for p in rt.problems}
    assert "exactly one of command" in problems["both"]
    assert "could not be started" in problems["missing"]
    assert "api_token" in problems["secret"] and "config" in problems["secret"]
    assert rt.list() == []
    # a value set with `skillyard config set` (the host API's store) fills the placeholder
    from skillyard.host.config import ConfigStore
    from skillyard.transports.mcp_catalog import spec_for as spec_of

    ConfigStore(rt.store).set("secret", None, "api_token", "t0k3n")
    spec = spec_of(rt, "secret")
    assert spec.resolve(spec.env) == {"TOKEN": "t0k3n"}
    assert "t0k3n" not in repr(spec)
    with pytest.raises(ConfigError, match="no MCP server"):
        from skillyard.transports.mcp_catalog import spec_for

        spec_for(rt, "nothing-here")
    asyncio.run(rt.aclose())
