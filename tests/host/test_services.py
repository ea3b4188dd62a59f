"""env, kv, cache, config, models, host tools, invoke, log, runtime.info, sync helpers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from skillyard import SyncRuntime
from skillyard.errors import PermissionDenied
from skillyard.host import services_of
from skillyard.host.models import ModelError
from tests.host.conftest import Probe, write_skill


def test_env_names_and_globs(make_probe, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYAPP_URL", "u")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "k")
    p = make_probe({"env": ["MYAPP_*", "UNSET_ONE"]})
    assert p.value("env.get", name="MYAPP_URL") == "u"
    assert p.value("env.get", name="UNSET_ONE") is None
    message = p.denied("env.get", name="AWS_SECRET_ACCESS_KEY")
    assert "not granted" in message and "k" not in message.split("'")[1:2]


def test_kv_is_per_skill_with_ttl(make_probe) -> None:
    a = make_probe({}, tool="alpha-run")
    a.value("kv.put", key="k", value={"n": 1})
    a.value("kv.put", key="k2", value=[1, 2], ttl_sec=0.05)
    a.value("kv.put", key="other", value="x")
    assert a.value("kv.get", key="k") == {"n": 1}
    assert a.value("kv.list", prefix="k") == ["k", "k2"]
    deadline = time.monotonic() + 5
    while a.value("kv.get", key="k2") is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.value("kv.get", key="k2") is None
    a.value("kv.delete", key="k")
    assert a.value("kv.list") == ["other"]
    # Same runtime, another skill: its own namespace.
    rt = a.rt
    rt.tool("beta-run")(rt.runtime.transport("python")._registered["memory:alpha-run"][0])
    b = Probe(rt, "beta-run")
    assert b.value("kv.get", key="other") is None
    assert a.error("kv.put", key="", value=1)["code"] == "invalid_argument"
    assert a.error("kv.put", key="x")["code"] == "invalid_argument"
    assert a.error("kv.put", key="x", value=1, ttl_sec=-1)["code"] == "invalid_argument"


def test_cache_expires_and_persists_in_sqlite(tmp_path: Path) -> None:
    from tests.host.conftest import _probe

    home = tmp_path / "home"
    rt = SyncRuntime.open(home)
    rt.tool("c-run")(_probe)
    p = Probe(rt, "c-run")
    p.value("cache.put", key="a", value=1)
    p.value("kv.put", key="durable", value="yes")
    rt.close()
    rt2 = SyncRuntime.open(home)
    rt2.tool("c-run")(_probe)
    p2 = Probe(rt2, "c-run")
    try:
        assert p2.value("cache.get", key="a") == 1
        assert p2.value("kv.get", key="durable") == "yes"
        p2.value("cache.delete", key="a")
        assert p2.value("cache.get", key="a") is None
    finally:
        rt2.close()


CONFIG_DECLS = """
[[config]]
key = "currency"
type = "string"
default = "EUR"

[[config]]
key = "api_key"
type = "string"
sensitive = true
required = true

[[config]]
key = "limit"
type = "integer"
"""


def test_config_declared_typed_and_sensitive(tmp_path: Path) -> None:
    write_skill(tmp_path, "cfg", "", extra=CONFIG_DECLS)
    rt = SyncRuntime.memory(roots={"project": [tmp_path]})
    p = Probe(rt, "cfg-probe")
    try:
        assert p.value("config.get", key="currency") == "EUR"
        assert p.error("config.get", key="api_key")["code"] == "config_missing"
        p.value("config.set", key="api_key", value="sk-live-123")
        assert p.value("config.get", key="api_key") == "sk-live-123"
        assert p.value("config.has", key="limit") is False
        err = p.error("config.set", key="limit", value="ten")
        assert err["code"] == "invalid_argument" and "integer" in err["message"]
        p.value("config.set", key="limit", value=10)
        listed = p.value("config.list")
        assert listed == {"currency": "EUR", "limit": 10}
        assert "sk-live" not in str(listed)
        assert "not declared" in p.error("config.get", key="typo")["message"]
    finally:
        rt.close()


def test_models_without_a_callback(make_probe) -> None:
    p = make_probe({"models": ["embed", "llm"]})
    assert p.value("models.status") == {"embed": False, "llm": False}
    assert p.error("models.embed", text="hi")["code"] == "model_unavailable"
    assert p.error("models.llm", system="s", user="u")["code"] == "model_unavailable"
    assert "not granted" in make_probe({}).denied("models.embed", text="hi")


def test_models_route_to_callbacks_with_attribution(make_probe) -> None:
    p = make_probe({"models": ["embed", "llm"]})
    seen: list[dict[str, Any]] = []

    def embed(req: dict[str, Any]) -> list[float]:
        seen.append(req)
        return [1.0, 2.0]

    async def llm(req: dict[str, Any]) -> dict[str, Any]:
        return {"text": req["system"] + "|" + req["user"], "model": "m1"}

    registry = services_of(p.rt.runtime).models
    assert p.rt.runtime.models is registry  # the embedding application's handle
    registry.register(embed=embed, llm=llm)
    assert p.value("models.status") == {"embed": True, "llm": True}
    assert p.value("models.embed", text="hello") == {"vector": [1.0, 2.0], "model": None}
    caller = seen[0]["caller"]
    assert caller["skill_id"] == "probe" and caller["tool"] == "probe-run"
    assert caller["entry"] == "run" and caller["call_id"] == caller["request_id"]
    assert p.value("models.llm", system="S", user="U")["text"] == "S|U"
    assert p.error("models.embed", text="")["code"] == "invalid_argument"


def test_model_errors_never_leak_secrets(make_probe) -> None:
    p = make_probe({"models": ["llm", "embed"]})

    def llm(req: dict[str, Any]) -> str:
        raise RuntimeError("401 from provider: Authorization: Bearer sk-SECRET-KEY")

    def embed(req: dict[str, Any]) -> list[float]:
        raise ModelError("budget_exceeded", "monthly budget used up")

    services_of(p.rt.runtime).models.register(llm=llm, embed=embed)
    out = p.error("models.llm", user="hi")
    assert out["code"] == "provider_error" and "SECRET" not in out["message"]
    assert "RuntimeError" in out["message"]
    assert p.error("models.embed", text="x")["code"] == "budget_exceeded"


def test_model_timeout_and_budget(make_probe) -> None:
    p = make_probe({"models": ["llm", "embed"]})
    release = asyncio.Event()

    async def slow(req: dict[str, Any]) -> str:
        await release.wait()
        return "never"

    reg = services_of(p.rt.runtime).models
    reg.register(llm=slow, embed=lambda req: [0.0], timeout_sec=0.1, max_calls_per_call=1)
    # One probe call makes one model call: the budget is per skill call.
    assert p.error("models.llm", user="x")["code"] == "timeout"
    assert p.value("models.embed", text="x") == {"vector": [0.0], "model": None}
    reg.register(max_calls_per_call=0)  # hypothetical host policy: no model calls at all
    assert p.error("models.embed", text="x")["code"] == "budget_exceeded"


def test_host_tools_are_filtered_by_permission(make_probe) -> None:
    p = make_probe({"tools": ["search.*"]})
    reg = services_of(p.rt.runtime).tools
    reg.register("search.web", lambda args, caller: {"q": args["q"], "by": caller["skill_id"]})
    reg.register("admin.delete_all", lambda args, caller: "boom")

    async def broken(args: dict[str, Any], caller: dict[str, Any]) -> Any:
        raise ValueError("password=hunter2")

    reg.register("search.broken", broken)
    assert p.value("tools.list") == ["search.broken", "search.web"]
    assert p.value("tools.has", name="search.web") is True
    assert p.value("tools.has", name="admin.delete_all") is False
    assert p.value("tools.call", name="search.web", args={"q": "x"}) == {"q": "x", "by": "probe"}
    assert "not granted" in p.denied("tools.call", name="admin.delete_all")
    err = p.error("tools.call", name="search.broken")
    assert err["code"] == "tool_error" and "hunter2" not in err["message"]
    assert p.error("tools.call", name="search.missing")["code"] == "not_found"


def _invoke_rt(caller_perms: dict[str, Any], target_perms: dict[str, Any]) -> SyncRuntime:
    from tests.host.conftest import _probe

    rt = SyncRuntime.memory()
    rt.tool("caller-run", permissions=caller_perms)(_probe)
    rt.tool("target-echo", permissions=target_perms)(lambda args: {"echo": args})
    rt.tool("target-secret", permissions={"can_be_invoked_by": ["planner"]})(lambda args: "s")
    return rt


def test_invoke_needs_both_sides_consent() -> None:
    rt = _invoke_rt({"invoke": ["target-*"]}, {})
    p = Probe(rt, "caller-run")
    try:
        assert p.value("invoke", tool="target-echo", args={"a": 1}) == {"echo": {"a": 1}}
        assert "can_be_invoked_by" in p.denied("invoke", tool="target-secret")
        assert "may not call" in p.denied("invoke", tool="other-thing")
    finally:
        rt.close()
    rt = _invoke_rt({}, {})
    try:
        assert "may not call" in Probe(rt, "caller-run").denied("invoke", tool="target-echo")
    finally:
        rt.close()


def test_invoke_refuses_cycles_and_inherits_the_deadline() -> None:
    rt = SyncRuntime.memory()

    async def ping(args: dict[str, Any], ctx: Any) -> Any:
        return await ctx.host.invoke("loop-pong", {})

    async def pong(args: dict[str, Any], ctx: Any) -> Any:
        info = await ctx.host.info()
        try:
            back = await ctx.host.invoke("loop-ping")
        except PermissionDenied as exc:
            back = {"refused": exc.message}
        return {"remaining_ms": info["remaining_ms"], "back": back}

    rt.tool("loop-ping", permissions={"invoke": ["loop-*"]})(ping)
    rt.tool("loop-pong", permissions={"invoke": ["loop-*"]})(pong)
    try:
        out = rt.call("loop-ping", {}, timeout=2).output
        assert out["remaining_ms"] <= 2000
        assert "cycle refused" in out["back"]["refused"]
    finally:
        rt.close()


def test_log_and_info(make_probe, workspace: Path) -> None:
    p = make_probe({})
    result = p.rt.call(
        "probe-run",
        {"method": "log", "params": {"level": "warning", "message": "hi", "fields": {"a": 1}}},
    )
    assert result.events[0] == {
        "kind": "log",
        "level": "warning",
        "message": "hi",
        "fields": {"a": 1},
    }
    info = p.value("runtime.info")
    assert info["skill_id"] == "probe" and info["cwd"] == str(workspace)
    assert Path(info["temp_dir"]).is_dir()
    assert p.error("log", level="loud", message="x")["code"] == "invalid_argument"
    assert p.error("no.such.method")["code"] == "unknown_method"


def test_denials_are_recorded_as_events(make_probe) -> None:
    p = make_probe({})
    result = p.rt.call("probe-run", {"method": "env.get", "params": {"name": "HOME"}})
    assert [e["kind"] for e in result.events] == ["host.denied"]
    assert result.events[0]["method"] == "env.get"


def test_sync_skill_helpers(workspace: Path) -> None:
    (workspace / "f.txt").write_text("sync!")
    rt = SyncRuntime.memory(config={"host": {"workspace": str(workspace)}})

    def on_loop(args: dict[str, Any], ctx: Any) -> Any:
        text = ctx.host.sync.fs.read_text("f.txt")
        try:
            ctx.host.sync.shell.exec(["echo"])
        except Exception as exc:
            return {"text": text, "shell": exc.code}
        return {"text": text}

    def threaded(args: dict[str, Any], ctx: Any) -> Any:
        return ctx.host.sync.shell.exec(["echo", "from a thread"])["stdout"]

    perms = {"fs": {"ro": ["."]}, "shell": ["echo"]}
    rt.tool("s-loop", permissions=perms)(on_loop)
    rt.tool("s-thread", permissions=perms)(threaded)
    card = rt.card("s-thread")
    import dataclasses

    rt.runtime.add_card(dataclasses.replace(card, options={"thread": True}))
    try:
        assert rt.call("s-loop", {}).output == {"text": "sync!", "shell": "not_supported"}
        assert rt.call("s-thread", {}).output == "from a thread\n"
    finally:
        rt.close()


def test_python_package_skill_end_to_end(tmp_path: Path) -> None:
    """A skill on disk, its manifest's permissions, its own directory as the base."""
    pkg = write_skill(tmp_path, "notes", 'fs = { ro = ["notes"], rw = ["out"] }\nenv = ["LANG"]')
    (pkg / "notes").mkdir()
    (pkg / "notes" / "a.md").write_text("# A")
    (pkg / "out").mkdir()
    rt = SyncRuntime.memory(roots={"project": [tmp_path]})
    p = Probe(rt, "notes-probe")
    try:
        assert p.value("fs.read_text", path="notes/a.md") == "# A"
        p.value("fs.write_text", path="out/b.md", text="B")
        assert (pkg / "out" / "b.md").read_text() == "B"
        p.denied("fs.write_text", path="notes/c.md", text="no")
        p.denied("fs.read_text", path="skill.toml")
        p.denied("env.get", name="HOME")
    finally:
        rt.close()


def test_hostile_dispatch_input_is_refused_cleanly() -> None:
    rt = SyncRuntime.memory()

    async def hostile(args: dict[str, Any], ctx: Any) -> Any:
        codes = []
        for method, params in [
            (123, {}),
            ("kv.get", [1]),
            ("kv.get", "key"),
            ("kv.get", None),
            ("fs.read_text\0", {}),
            ("", {}),
            ("kv.put", {"key": "k", "value": {1, 2}}),
        ]:
            try:
                await ctx.host.dispatch(method, params)
                codes.append("ok")
            except Exception as exc:
                codes.append(getattr(exc, "code", type(exc).__name__))
        return codes

    rt.tool("hostile-run")(hostile)
    try:
        assert rt.call("hostile-run", {}).output == [
            "unknown_method",
            "invalid_argument",
            "invalid_argument",
            "invalid_argument",
            "unknown_method",
            "unknown_method",
            "invalid_argument",
        ]
    finally:
        rt.close()
