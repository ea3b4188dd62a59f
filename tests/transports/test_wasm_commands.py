"""WASM commands through the runtime pipeline, and host imports bound to ctx.host.dispatch."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from skillyard import SyncRuntime
from skillyard.errors import PermissionDenied, SkillError
from skillyard.transports.base import CallContext, DenyAllHost
from tests.transports.wasm_support import GUESTS, make_pkg, relay_guest

TESTSKILL = GUESTS / "testskill.wasm"
GRANT_SELF = '[permissions]\ninvoke = ["testskill-*"]\n'


class Recorder:
    """Middleware that records every call passing through the pipeline (and its parent)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def on_call(self, ctx: CallContext, call_next: Any) -> Any:
        self.seen.append((ctx.tool, ctx.parent.tool if ctx.parent else None))
        return await call_next(ctx)


@pytest.fixture
def rt(tmp_path):
    runtime = SyncRuntime.memory()
    recorder = Recorder()
    runtime.runtime.use(recorder)
    runtime.recorder = recorder  # type: ignore[attr-defined]
    runtime.runtime.add_package(make_pkg(tmp_path, "testskill", TESTSKILL, GRANT_SELF))
    yield runtime
    runtime.close()


def command(rt: SyncRuntime, *commands: dict[str, Any], output: Any = None) -> Any:
    args: dict[str, Any] = {"commands": list(commands)}
    if output is not None:
        args["output"] = output
    return rt.call("testskill-command", args)


def test_call_module_runs_through_the_pipeline_and_calls_back(rt):
    result = command(
        rt,
        {
            "type": "call_module",
            "payload": {
                "skill_id": "testskill",
                "method": "echo",
                "payload": {"text": "inner"},
                "callback": "on_result",
                "call_ctx": "c-1",
            },
        },
        output={"first": True},
    )
    got = result.output["callback_got"]
    assert got == {
        "call_ctx": "c-1",
        "skill_id": "testskill",
        "method": "echo",
        "result": {"text": "inner"},
    }
    assert ("testskill-echo", "testskill-command") in rt.recorder.seen


def test_call_module_output_without_callback_keeps_the_first_payload(rt):
    result = command(
        rt,
        {
            "type": "call_module",
            "payload": {"skill_id": "testskill", "method": "count", "payload": {}},
        },
        output={"kept": 1},
    )
    assert result.output == {"kept": 1}
    assert rt.call("testskill-count").output == {"count": 2}  # the nested call really ran


def test_call_module_to_a_tool_not_granted_is_refused(rt):
    rt.runtime.tool("other-secret")(lambda args: {"secret": 42})
    with pytest.raises(PermissionDenied, match=r"\[permissions\]\.invoke"):
        command(
            rt,
            {"type": "call_module", "payload": {"skill_id": "other", "method": "secret"}},
        )
    assert ("other-secret", "testskill-command") not in rt.recorder.seen


def test_refusal_is_delivered_to_the_callback_when_there_is_one(rt):
    rt.runtime.tool("other-secret")(lambda args: {"secret": 42})
    result = command(
        rt,
        {
            "type": "call_module",
            "payload": {"skill_id": "other", "method": "secret", "callback": "on_result"},
        },
    )
    got = result.output["callback_got"]
    assert got["code"] == "permission_denied" and "result" not in got


def test_call_module_granted_to_another_skill(tmp_path):
    with SyncRuntime.memory() as rt:
        rt.runtime.tool("other-hello")(lambda args: {"hello": args.get("who", "?")})
        toml = '[permissions]\ninvoke = ["other-hello"]\n'
        rt.runtime.add_package(make_pkg(tmp_path, "testskill", TESTSKILL, toml))
        result = rt.call(
            "testskill-command",
            {
                "commands": [
                    {
                        "type": "call_module",
                        "payload": {
                            "skill_id": "other",
                            "method": "hello",
                            "payload": {"who": "wasm"},
                            "callback": "on_result",
                        },
                    }
                ]
            },
        )
        assert result.output["callback_got"]["result"] == {"hello": "wasm"}


def test_call_module_cycle_is_refused_by_the_runtime(rt):
    with pytest.raises(PermissionDenied, match="cycle"):
        command(
            rt,
            {
                "type": "call_module",
                "payload": {
                    "skill_id": "testskill",
                    "method": "command",
                    "payload": {"commands": []},
                },
            },
        )


def test_batch_invoke(rt):
    rt.runtime.tool("other-secret")(lambda args: {"secret": 42})
    items = [
        {"index": 0, "skill_id": "testskill", "method": "echo", "payload": {"text": "a"}},
        {"index": 1, "skill_id": "testskill", "method": "echo", "payload": {"text": "b"}},
        {"index": 2, "skill_id": "other", "method": "secret", "payload": {}},
    ]
    result = command(
        rt,
        {
            "type": "batch_invoke",
            "payload": {"items": items, "callback": "on_result", "concurrency": 2},
        },
    )
    got = result.output["callback_got"]
    by_index = {i["index"]: i for i in got["items"]}
    assert by_index[0]["result"] == {"text": "a"} and by_index[1]["result"] == {"text": "b"}
    assert by_index[2]["code"] == "permission_denied"
    assert got["batch_id"]
    assert [s for s in rt.recorder.seen if s[0] == "testskill-echo"] == [
        ("testskill-echo", "testskill-command")
    ] * 2


def test_subscribe_then_emit_event(tmp_path):
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(make_pkg(tmp_path, "testskill", TESTSKILL, GRANT_SELF))
        rt.runtime.add_package(make_pkg(tmp_path, "emitter", TESTSKILL))
        rt.call(
            "testskill-command",
            {
                "commands": [
                    {"type": "subscribe", "payload": {"topic": "news", "method": "on_event"}}
                ]
            },
        )
        result = rt.call(
            "emitter-command",
            {
                "commands": [
                    {"type": "emit_event", "payload": {"topic": "news", "payload": {"n": 1}}},
                    {"type": "emit_event", "payload": {"topic": "other", "payload": {"n": 2}}},
                ]
            },
        )
        events = [e for e in result.events if e["kind"] == "event"]
        assert [e["topic"] for e in events] == ["news", "other"]
        # the subscriber ran once, through the pipeline, and counted it in its own state
        assert rt.call("testskill-count").output == {"count": 2}


class KvHost:
    """A host with a key-value store and files (stands in for the host API in these tests)."""

    def __init__(
        self, tool: str, kv: dict[str, Any], log: list[tuple[str, dict[str, Any]]]
    ) -> None:
        self.tool, self.kv, self.log = tool, kv, log

    async def dispatch(self, method: str, params: dict[str, Any]) -> Any:
        self.log.append((method, params))
        if method == "kv.put":
            self.kv[params["key"]] = params["value"]
            return None
        if method == "kv.get":
            return self.kv.get(params["key"])
        if method == "fs.read_bytes" and params["path"] == "/granted.txt":
            return {"data_b64": base64.b64encode(b"file body").decode()}
        if method == "env.get":
            return {"HOME": "/home/x"}.get(params["name"])
        raise PermissionDenied(f"host call {method!r} denied for {params}", tool=self.tool)


@pytest.fixture
def kv_rt(rt):
    kv: dict[str, Any] = {}
    log: list[tuple[str, dict[str, Any]]] = []
    rt.runtime.host_factory = lambda ctx: KvHost(ctx.tool, kv, log)
    rt.kv, rt.log = kv, log  # type: ignore[attr-defined]
    return rt


def test_store_kv_and_load_kv_go_through_the_host(kv_rt):
    command(kv_rt, {"type": "store_kv", "payload": {"key": "k", "value": {"v": [1, 2]}}})
    assert kv_rt.kv == {"k": {"v": [1, 2]}}
    result = command(kv_rt, {"type": "load_kv", "payload": {"key": "k", "callback": "on_result"}})
    assert result.output["callback_got"] == {"key": "k", "value": {"v": [1, 2]}, "found": True}
    assert [m for m, _ in kv_rt.log] == ["kv.put", "kv.get"]


def test_store_kv_and_load_kv_with_the_host_api(rt):
    command(rt, {"type": "store_kv", "payload": {"key": "greeting", "value": ["hi", 1]}})
    result = command(
        rt, {"type": "load_kv", "payload": {"key": "greeting", "callback": "on_result"}}
    )
    assert result.output["callback_got"] == {"key": "greeting", "value": ["hi", 1], "found": True}
    missing = command(rt, {"type": "load_kv", "payload": {"key": "nope", "callback": "on_result"}})
    assert missing.output["callback_got"]["found"] is False


def test_schedule_calls_the_method_later(rt):
    command(rt, {"type": "schedule", "payload": {"method": "count", "delay_ms": 5, "payload": {}}})
    runner = rt.runtime.transport("wasm")._commands
    deadline = time.monotonic() + 5
    while not runner.scheduled_results and time.monotonic() < deadline:
        rt.run(__import__("asyncio").sleep(0.01))
    assert list(runner.scheduled_results) == [{"tool": "testskill-count", "output": {"count": 1}}]
    assert ("testskill-count", None) in rt.recorder.seen


@pytest.mark.parametrize(
    ("cmd", "needle"),
    [
        ({"type": "call_module", "payload": {"method": "x"}}, "skill_id"),
        ({"type": "schedule", "payload": {"method": "count", "delay_ms": -1}}, "delay_ms"),
        ({"type": "schedule", "payload": {"method": "nope"}}, "not a method"),
        ({"type": "batch_invoke", "payload": {"items": "x"}}, "items"),
        ({"type": "subscribe", "payload": {"topic": "t"}}, "method"),
    ],
    ids=["no-skill-id", "negative-delay", "unknown-method", "items-not-array", "no-method"],
)
def test_malformed_commands_are_protocol_errors(rt, cmd, needle):
    from skillyard.errors import ProtocolError

    with pytest.raises(ProtocolError, match=needle):
        command(rt, cmd)
    assert rt.call("testskill-echo", {"ok": 1}).output == {"ok": 1}


# -- host imports -------------------------------------------------------------------------------


def test_fs_read_allowed_inside_the_grant_and_denied_outside(tmp_path):
    toml = '[permissions]\nfs = [{ path = "data", mode = "ro" }]\n'
    pkg = make_pkg(tmp_path, "reader", TESTSKILL, toml)
    (pkg / "data").mkdir()
    (pkg / "data" / "hello.txt").write_text("hello from disk")
    (tmp_path / "secret.txt").write_text("nope")
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(pkg)
        assert not rt.runtime.transport("wasm").skill_for(rt.card("reader-read")).threaded
        out = rt.call("reader-read", {"path": "data/hello.txt"}).output
        assert out == {"content": "hello from disk"}
        with pytest.raises(SkillError, match=r"fs\.read_bytes denied"):
            rt.call("reader-read", {"path": str(tmp_path / "secret.txt")})
        with pytest.raises(SkillError, match=r"fs\.read_bytes denied"):
            rt.call("reader-read", {"path": "data/../../secret.txt"})


def test_env_get_allowed_and_denied_per_permission(tmp_path, monkeypatch):
    monkeypatch.setenv("WASM_TEST_TOKEN", "t-123")
    monkeypatch.setenv("WASM_TEST_OTHER", "hidden")
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(
            make_pkg(tmp_path, "envy", TESTSKILL, '[permissions]\nenv = ["WASM_TEST_TOKEN"]\n')
        )
        assert rt.call("envy-env", {"name": "WASM_TEST_TOKEN"}).output == {"value": "t-123"}
        with pytest.raises(SkillError, match=r"env\.get denied"):
            rt.call("envy-env", {"name": "WASM_TEST_OTHER"})


def test_waiting_import_runs_on_a_worker_thread_and_reaches_the_pipeline(tmp_path):
    with SyncRuntime.memory() as rt:
        recorder = Recorder()
        rt.runtime.use(recorder)
        rt.runtime.tool("other-hello")(lambda args: {"hello": args["who"]})
        guest = relay_guest("invoke", {"tool": "other-hello", "args": {"who": "wasm"}})
        rt.runtime.add_package(
            make_pkg(tmp_path, "relay", guest, '[permissions]\ninvoke = ["other-hello"]\n')
        )
        assert rt.runtime.transport("wasm").skill_for(rt.card("relay-run")).threaded
        assert rt.call("relay-run").output == {"result": {"hello": "wasm"}}
        assert ("other-hello", "relay-run") in recorder.seen


def test_waiting_import_denied_without_permission(tmp_path):
    with SyncRuntime.memory() as rt:
        guest = relay_guest("http_get", {"url": "https://example.com/"})
        rt.runtime.add_package(make_pkg(tmp_path, "fetcher", guest))
        out = rt.call("fetcher-run").output
        assert out["code"] == "permission_denied" and "http.request denied" in out["error"]


def test_a_host_without_call_sync_is_driven_through_dispatch(kv_rt):
    assert kv_rt.call("testskill-read", {"path": "/granted.txt"}).output == {"content": "file body"}
    assert ("fs.read_bytes", {"path": "/granted.txt"}) in kv_rt.log
    assert kv_rt.call("testskill-env", {"name": "HOME"}).output == {"value": "/home/x"}
    with pytest.raises(SkillError, match="denied"):
        kv_rt.call("testskill-read", {"path": "/etc/shadow"})


def test_wasi_sees_only_granted_directories_with_their_modes(tmp_path):
    toml = '[permissions]\nfs = [{ path = "ro", mode = "ro" }, { path = "rw", mode = "rw" }]\n'
    pkg = make_pkg(tmp_path, "files", TESTSKILL, toml)
    for d in ("ro", "rw"):
        (pkg / d).mkdir()
    (pkg / "ro" / "in.txt").write_text("read me")
    (tmp_path / "outside.txt").write_text("secret")
    ro, rw = str((pkg / "ro").resolve()), str((pkg / "rw").resolve())
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(pkg)
        assert rt.call("files-wasi_read", {"path": f"{ro}/in.txt"}).output == {"text": "read me"}
        assert rt.call("files-wasi_write", {"path": f"{rw}/out.txt", "text": "new"}).output == {
            "written": 3
        }
        assert (pkg / "rw" / "out.txt").read_text() == "new"
        for tool, path in [
            ("files-wasi_write", f"{ro}/x.txt"),
            ("files-wasi_read", str(tmp_path / "outside.txt")),
            ("files-wasi_read", "/etc/passwd"),
        ]:
            with pytest.raises(SkillError, match="cannot open"):
                rt.call(tool, {"path": path, "text": "x"})
        assert not (pkg / "ro" / "x.txt").exists()


def test_wasi_sees_nothing_without_the_host_api(tmp_path):
    toml = '[permissions]\nfs = [{ path = "ro", mode = "ro" }]\n'
    pkg = make_pkg(tmp_path, "files", TESTSKILL, toml)
    (pkg / "ro").mkdir()
    (pkg / "ro" / "in.txt").write_text("read me")
    with SyncRuntime.memory() as rt:
        rt.runtime.host_factory = lambda ctx: DenyAllHost(ctx.tool)
        rt.runtime.add_package(pkg)
        with pytest.raises(SkillError, match="cannot open"):
            rt.call("files-wasi_read", {"path": str((pkg / "ro" / "in.txt").resolve())})


def test_http_get_reaches_a_loopback_server_through_the_host_api(tmp_path):
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"you asked for {self.path}".encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        guest = relay_guest("http_get", {"url": f"http://127.0.0.1:{port}/hello"})
        toml = '[permissions.http]\nhosts = ["127.0.0.1"]\nallow_loopback = true\n'
        with SyncRuntime.memory() as rt:
            rt.runtime.add_package(make_pkg(tmp_path, "fetcher", guest, toml))
            out = rt.call("fetcher-run").output
            assert out["status"] == 200 and out["body"] == "you asked for /hello"
    finally:
        server.shutdown()
        server.server_close()


def test_wasi_guest_sees_no_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WASM_TEST_TOKEN", "secret")
    toml = '[permissions]\nenv = ["WASM_TEST_TOKEN", "HOME", "PATH"]\n'
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(make_pkg(tmp_path, "envless", TESTSKILL, toml))
        assert rt.call("envless-wasi_env").output == {"count": 0, "home": False, "path": False}
