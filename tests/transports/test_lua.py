from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from skillyard import SyncRuntime
from skillyard.errors import (
    InvalidArguments,
    NotSupported,
    OutputTooLarge,
    PermissionDenied,
    SkillError,
    SkillTimeout,
)
from tests.transports.luakit import DictHost, run_lua, write_lua_package

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "skills"


def test_a_method_returns_json_with_lists_and_nested_tables(tmp_path):
    out = run_lua(
        tmp_path,
        "return {text = 'hi ' .. args.name, n = args.n + 1, list = {1, 2, {x = true}}, empty = {}}",
        {"name": "ada", "n": 41},
    )
    assert out == {"text": "hi ada", "n": 42, "list": [1, 2, {"x": True}], "empty": {}}


def test_nested_arguments_arrive_as_tables(tmp_path):
    out = run_lua(
        tmp_path,
        "return {first = args.items[1].name, count = #args.items}",
        {"items": [{"name": "a"}, {"name": "b"}]},
    )
    assert out == {"first": "a", "count": 2}


def test_skill_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(SkillError) as info:
        run_lua(tmp_path, "error('broken on purpose')")
    assert "main.lua:3: broken on purpose" in info.value.message
    assert info.value.tool == "probe-run"


def test_error_objects_are_described_without_running_their_metamethods(tmp_path):
    body = "error(setmetatable({}, {__tostring = function() while true do end end}))"
    with pytest.raises(SkillError, match="an error object"):
        run_lua(tmp_path, body, timeout=5)


def test_warm_isolates_do_not_carry_state_between_calls(tmp_path):
    pkg = tmp_path / "warm"
    pkg.mkdir()
    (pkg / "skill.toml").write_text(
        'runtime = "lua"\nentry = "main.lua"\n[options]\nisolation = "warm"\n[[methods]]\nname = "run"\n'
    )
    (pkg / "main.lua").write_text(
        """
local count = 0
return {run = function(args)
  count = count + 1
  leaked = (leaked or 0) + 1
  local ok1 = pcall(function() string.upper = nil end)
  local ok2 = pcall(rawset, table, "insert", nil)
  return {count = count, leaked = leaked, upper = ("a"):upper(), ok1 = ok1, ok2 = ok2,
          insert = type(table.insert)}
end}
"""
    )
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(pkg, root="memory")
        outs = [rt.call("warm-run", {}).output for _ in range(3)]
        stats = rt.run(rt.runtime.transport("lua").health())
    expected = {
        "count": 1,
        "leaked": 1,
        "upper": "A",
        "ok1": False,
        "ok2": False,
        "insert": "function",
    }
    assert outs == [expected] * 3
    assert stats["isolates"] == 1  # one warm isolate served all three calls


def test_fresh_isolation_creates_a_vm_per_call(tmp_path):
    write_lua_package(tmp_path, "return {x = 1}", options={"isolation": "fresh"})
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(tmp_path / "probe", root="memory")
        for _ in range(3):
            assert rt.call("probe-run", {}).output == {"x": 1}
        stats = rt.run(rt.runtime.transport("lua").health())
    assert stats["isolates"] == 3
    assert stats["pooled"] == 0


def test_untrusted_roots_default_to_fresh_isolates(tmp_path):
    write_lua_package(tmp_path, "return {x = 1}")
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(tmp_path / "probe", root="user")
        rt.call("probe-run", {})
        rt.call("probe-run", {})
        transport = rt.runtime.transport("lua")
        assert transport.isolation_for(rt.runtime.card("probe-run")) == "fresh"
        assert rt.run(transport.health())["isolates"] == 2


def test_undeclared_permissions_are_denied_by_the_host(tmp_path):
    with pytest.raises(PermissionDenied, match=r"fs\.read_text"):
        run_lua(tmp_path, "return vulcan.fs.read('main.lua')")


def test_without_a_host_api_everything_is_denied(tmp_path):
    from skillyard.transports.base import DenyAllHost

    with SyncRuntime.memory() as rt:
        rt.runtime.host_factory = lambda ctx: DenyAllHost(ctx.tool)
        with pytest.raises(PermissionDenied, match=r"config\.get"):
            run_lua(tmp_path, "return vulcan.config.get('x')", rt=rt)


def test_host_errors_can_be_caught_by_the_skill(tmp_path):
    out = run_lua(
        tmp_path,
        "local ok, err = pcall(vulcan.fs.read, 'secret.txt')\n"
        "return {ok = ok, code = err.code, message = tostring(err)}",
    )
    assert out["ok"] is False and out["code"] == "permission_denied"
    assert "fs.read_text" in out["message"]


@pytest.mark.parametrize(
    "expr",
    ["vulcan.sqlite.query('x')", "vulcan.fs.watch('.')", "vulcan.nothing()", "vulcan.models()"],
    ids=["unknown-namespace", "unknown-function", "unknown-top-level", "call-a-namespace"],
)
def test_unsupported_vulcan_functions_say_so_by_name(tmp_path, expr):
    with pytest.raises(NotSupported) as info:
        run_lua(tmp_path, f"return {expr}")
    assert "not supported" in info.value.message
    name = expr.split("(")[0]
    assert name in info.value.message


def test_vulcan_binds_host_methods_with_named_params(tmp_path):
    host = DictHost(embed=True)
    body = """
    vulcan.config.set('units', 'metric')
    vulcan.fs.write('a.txt', 'hello')
    vulcan.fs.append('a.txt', ' world')
    vulcan.cache.put('k', {1, 2}, 60)
    return {
      units = vulcan.config.get('units'), has = vulcan.config.has('units'),
      text = vulcan.fs.read('a.txt'), cached = vulcan.cache.get('k'),
      embed = vulcan.models.has('embed'), llm = vulcan.models.has('llm'),
      vec = #vulcan.models.embed('aab').vector,
      invoked = vulcan.call('other-tool', {x = 1}),
      tools = vulcan.host.list(),
    }
    """
    with SyncRuntime.memory() as rt:
        rt.runtime.host_factory = host.factory
        out = run_lua(tmp_path, body, rt=rt)
    assert out == {
        "units": "metric",
        "has": True,
        "text": "hello world",
        "cached": [1, 2],
        "embed": True,
        "llm": False,
        "vec": 26,
        "invoked": {"invoked": "other-tool", "args": {"x": 1}},
        "tools": ["echo"],
    }
    assert ("fs.write_text", {"path": "a.txt", "text": "hello"}) in host.calls
    assert ("fs.write_text", {"path": "a.txt", "text": " world", "append": True}) in host.calls
    assert ("cache.put", {"key": "k", "value": [1, 2], "ttl_sec": 60}) in host.calls


def test_host_calls_work_from_inside_skill_coroutines(tmp_path):
    host = DictHost()
    host.config["k"] = "v"
    body = """
    local co = coroutine.wrap(function() coroutine.yield(vulcan.config.get('k')) return 'end' end)
    return {first = co(), second = co()}
    """
    with SyncRuntime.memory() as rt:
        rt.runtime.host_factory = host.factory
        assert run_lua(tmp_path, body, rt=rt) == {"first": "v", "second": "end"}


def test_host_calls_inside_c_callbacks_fail_clearly(tmp_path):
    with pytest.raises(NotSupported, match="C callback"):
        run_lua(tmp_path, "return (('ab'):gsub('.', function(c) return vulcan.config.get(c) end))")


def test_local_vulcan_helpers(tmp_path):
    body = """
    local t = vulcan.json.decode('{"a": [1, 2, {"b": null}], "s": "x"}')
    return {
      json = vulcan.json.encode({k = {1, 2}}), a2 = t.a[2], s = t.s,
      join = vulcan.path.join('a', 'b', 'c.txt'), base = vulcan.path.basename('/x/y.lua'),
      ext = vulcan.path.extname('y.tar.gz'), norm = vulcan.path.normalize('a/./b/../c'),
      abs = vulcan.path.is_absolute('/x'), parts = vulcan.path.split('a/b/c'),
      tool = vulcan.context.tool, skill = vulcan.context.skill_id,
      cwd_is_dir = vulcan.runtime.cwd() == vulcan.runtime.skill_dir(),
    }
    """
    out = run_lua(tmp_path, body)
    assert out["json"] == '{"k":[1,2]}'
    assert (out["a2"], out["s"]) == (2, "x")
    assert out["join"] == "a/b/c.txt" and out["base"] == "y.lua" and out["ext"] == ".gz"
    assert out["norm"] == "a/c" and out["abs"] is True and out["parts"] == ["a", "b", "c"]
    assert (out["tool"], out["skill"], out["cwd_is_dir"]) == ("probe-run", "probe", True)


def test_bad_json_is_a_catchable_error(tmp_path):
    out = run_lua(tmp_path, "local ok, e = pcall(vulcan.json.decode, '{nope') return {ok, e.code}")
    assert out == [False, "invalid_argument"]


def test_print_and_log_become_events(tmp_path):
    write_lua_package(tmp_path, "print('hello', 42) vulcan.runtime.log('warn', 'careful') return 1")
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(tmp_path / "probe", root="memory")
        result = rt.call("probe-run", {})
    logs = [e for e in result.events if e["kind"] == "log"]
    assert logs == [
        {"kind": "log", "level": "info", "message": "hello 42"},
        {"kind": "log", "level": "warn", "message": "careful"},
    ]


def test_require_loads_package_modules_only(tmp_path):
    extra = {"runtime/util.lua": "return {double = function(x) return x * 2 end}"}
    assert run_lua(tmp_path, "return require('util').double(21)", extra=extra) == 42
    with pytest.raises(SkillError, match="C modules"):
        run_lua(tmp_path / "b", "return require('io')", extra=extra)
    with pytest.raises(SkillError, match="not a module name"):
        run_lua(tmp_path / "c", "return require('../../etc/passwd')", extra=extra)


def test_output_cap_and_truncation(tmp_path):
    with pytest.raises(OutputTooLarge):
        run_lua(tmp_path, "return {s = string.rep('x', 5000)}", limits={"max_output_bytes": 1000})
    write_lua_package(
        tmp_path / "t",
        "return string.rep('y', 5000), 'truncate'",
        limits={"max_output_bytes": 1000},
    )
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(tmp_path / "t" / "probe", root="memory")
        result = rt.call("probe-run", {})
    assert result.content == "y" * 1000 and result.output == "y" * 1000


def test_functions_and_invalid_utf8_cannot_be_returned(tmp_path):
    with pytest.raises(SkillError, match="function"):
        run_lua(tmp_path, "return {f = print}")
    with pytest.raises(SkillError, match="UTF-8"):
        run_lua(tmp_path / "b", "return '\\255\\254'")
    with pytest.raises(SkillError, match="UTF-8"):
        run_lua(tmp_path / "c", "return {nested = {'\\255'}}")
    out = run_lua(
        tmp_path / "d",
        "local ok, e = pcall(vulcan.json.encode, {'\\255'}) return {ok = ok, code = e.code}",
    )
    assert out == {"ok": False, "code": "invalid_argument"}


def test_luaskills_results_content_hint_and_host_result(tmp_path):
    pkg = tmp_path / "shape"
    (pkg / "runtime").mkdir(parents=True)
    (pkg / "skill.yaml").write_text("entries:\n  - name: go\n    lua_entry: runtime/go.lua\n")
    (pkg / "runtime" / "go.lua").write_text(
        "return function(args) return 'done: ' .. (args.x or '?'), nil, 'markdown', {ok = true} end"
    )
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(pkg, root="memory")
        result = rt.call("shape-go", {"x": "1"})
    assert result.content == "done: 1"
    assert result.output == {"ok": True}
    assert {"kind": "template_hint", "hint": "markdown"} in result.events


def test_arguments_are_validated_before_lua_runs(tmp_path):
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(EXAMPLES / "lua-notes", root="memory")
        with pytest.raises(InvalidArguments):
            rt.call("lua-notes-add", {"title": 1})


def test_example_notes_package_with_a_test_host(tmp_path):
    host = DictHost(embed=True, llm=True)
    pkg = tmp_path / "lua-notes"
    shutil.copytree(EXAMPLES / "lua-notes", pkg)
    with SyncRuntime.memory() as rt:
        rt.runtime.host_factory = host.factory
        rt.runtime.add_package(pkg, root="user")
        added = rt.call("lua-notes-add", {"title": "Lua in Python", "text": "lupa runs lua"})
        rt.call("lua-notes-add", {"title": "Shopping", "text": "milk and bread"})
        found = rt.call("lua-notes-search", {"query": "lua python", "limit": 1}).output
        summary = rt.call("lua-notes-summarize", {})
    assert added.output == {"file": "lua-in-python.json", "title": "Lua in Python"}
    assert added.content == "Saved note 'Lua in Python' as lua-in-python.json"
    assert "/ws/notes/lua-in-python.json" in host.files
    assert found["method"] == "embedding"
    assert [h["title"] for h in found["hits"]] == ["Lua in Python"]
    assert summary.content == "summary of 2 notes"


def test_concurrent_calls_waiting_on_the_host_use_separate_isolates(tmp_path):
    import asyncio

    from skillyard import Runtime

    class SlowHost:
        def __init__(self) -> None:
            self.waiting = 0
            self.release = asyncio.Event()

        async def dispatch(self, method, params):
            self.waiting += 1
            await self.release.wait()
            return params["key"].upper()

    write_lua_package(
        tmp_path,
        "local v = vulcan.config.get(args.k) return {k = args.k, v = v, seen = seen}",
        options={"isolation": "warm"},
    )

    async def main():
        host = SlowHost()
        rt = Runtime.memory()
        rt.host_factory = lambda ctx: host
        rt.add_package(tmp_path / "probe", root="memory")
        calls = [asyncio.create_task(rt.call("probe-run", {"k": k})) for k in ("a", "b", "c")]
        while host.waiting < 3:
            await asyncio.sleep(0)
        host.release.set()
        outs = [r.output for r in await asyncio.gather(*calls)]
        health = await rt.transport("lua").health()
        await rt.aclose()
        return outs, health

    outs, health = asyncio.run(main())
    assert outs == [{"k": k, "v": k.upper()} for k in ("a", "b", "c")]
    assert health["isolates"] == 3 and health["pooled"] == 3


def test_json_nulls_round_trip_without_holes(tmp_path):
    args = {"list": [1, None, 3], "nested": {"z": None}, "empty": {}, "text": "héllo ✓"}
    body = """
    return {echo = args, len = #args.list, is_null = args.list[2] == vulcan.json.null,
            decoded = vulcan.json.decode('[null, {"a": null}]'),
            missing = vulcan.json.decode('null') == nil}
    """
    out = run_lua(tmp_path, body, args)
    assert out == {
        "echo": args,
        "len": 3,
        "is_null": True,
        "decoded": [None, {"a": None}],
        "missing": True,
    }


@pytest.mark.parametrize("debug", [False, True])
def test_debug_logs_follow_the_package_debug_flag(tmp_path, debug):
    pkg = tmp_path / "dbg"
    (pkg / "runtime").mkdir(parents=True)
    (pkg / "skill.yaml").write_text(
        f"debug: {str(debug).lower()}\nentries:\n  - {{name: go, lua_entry: runtime/go.lua}}\n"
    )
    (pkg / "runtime" / "go.lua").write_text(
        "return function() vulcan.runtime.log('debug', 'details') "
        "vulcan.runtime.log('info', 'always') return 1 end"
    )
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(pkg, root="memory")
        events = rt.call("dbg-go", {}).events
    messages = [e["message"] for e in events if e["kind"] == "log"]
    assert messages == (["details", "always"] if debug else ["always"])


def test_log_floods_and_caught_error_loops_are_bounded(tmp_path):
    body = """
    for i = 1, 5000 do print('line', i) end
    for i = 1, 200 do pcall(vulcan.fs.read, '/etc/passwd') end
    return vulcan.fs.read('/etc/shadow')
    """
    write_lua_package(tmp_path, body)
    events = []
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(tmp_path / "probe", root="memory")
        with pytest.raises(PermissionDenied, match="shadow"):
            rt.call("probe-run", {}, sink=events.append)
    logs = [e for e in events if e["kind"] == "log"]
    assert len(logs) == 1001
    assert "dropped" in logs[-1]["message"]


def test_thread_option_keeps_the_event_loop_free(tmp_path):
    import asyncio

    from skillyard import Runtime

    host = DictHost()
    host.config["k"] = "v"
    write_lua_package(
        tmp_path,
        """
        local deadline = os.clock() + 0.3
        local n = 0
        while os.clock() < deadline do n = n + 1 end
        return {v = vulcan.config.get('k'), spun = n > 0}
        """,
        options={"thread": True, "isolation": "warm"},
    )

    async def main():
        rt = Runtime.memory()
        rt.host_factory = host.factory
        rt.add_package(tmp_path / "probe", root="memory")
        ticks = 0
        call = asyncio.create_task(rt.call("probe-run", {}))
        while not call.done():
            ticks += 1
            await asyncio.sleep(0.01)
        out = call.result().output
        await rt.aclose()
        return out, ticks

    out, ticks = asyncio.run(main())
    assert out == {"v": "v", "spun": True}
    assert ticks >= 5  # the loop kept running while Lua spun in its worker thread


def test_thread_option_still_enforces_limits(tmp_path):
    with pytest.raises(SkillTimeout):
        run_lua(
            tmp_path,
            "while true do end",
            limits={"timeout_sec": 0.3},
            options={"thread": True},
        )
