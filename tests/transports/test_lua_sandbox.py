"""The sandbox attack suite: every escape is refused or stopped with the right error."""

from __future__ import annotations

import os
import time

import pytest

from skillyard import SyncRuntime
from skillyard.errors import LimitExceeded, SkillError, SkillTimeout
from tests.transports.luakit import run_lua, write_lua_package

REMOVED = [
    "io",
    "debug",
    "package",
    "dofile",
    "loadfile",
    "python",
    "warn",
    "os.execute",
    "os.exit",
    "os.getenv",
    "os.remove",
    "os.rename",
    "os.tmpname",
    "os.setlocale",
    "string.dump",
    "('').dump",
]


@pytest.mark.parametrize("name", REMOVED)
def test_removed_globals_and_functions_are_nil(tmp_path, name):
    assert run_lua(tmp_path, f"return {name} == nil") is True


def test_only_the_whitelisted_globals_exist(tmp_path):
    out = run_lua(
        tmp_path,
        """
        local names = {}
        for _, k in ipairs({"assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall",
            "select", "tonumber", "tostring", "type", "rawequal", "rawget", "rawlen", "rawset",
            "setmetatable", "getmetatable", "load", "collectgarbage", "require", "print",
            "string", "table", "math", "utf8", "coroutine", "os", "vulcan", "_G", "_VERSION"}) do
          names[#names + 1] = k .. "=" .. type(_G[k])
        end
        local os_keys = {}
        for k in pairs(os) do os_keys[#os_keys + 1] = k end
        table.sort(os_keys)
        return {names = names, os = os_keys}
        """,
    )
    assert all(not n.endswith("=nil") for n in out["names"])
    assert out["os"] == ["clock", "date", "time"]


@pytest.mark.parametrize(
    "body",
    [
        "return load(string.char(27) .. 'Lua' .. string.rep('x', 40))",
        "return load('return 1', 'x', 'b')",
        "return load('return 1', 'x', 'bt')",
        "local done = false\n"
        "return load(function() if done then return nil end done = true "
        "return string.char(27) .. 'LuaT' end)",
    ],
    ids=["binary-string", "mode-b", "mode-bt", "binary-reader"],
)
def test_bytecode_cannot_be_loaded(tmp_path, body):
    try:
        out = run_lua(tmp_path, f"local f, err = (function() {body} end)() return {{f, err}}")
    except SkillError as exc:
        assert "only text chunks" in exc.message
    else:
        assert out[0] is None if isinstance(out, list) and len(out) > 1 else True
        assert "binary" in str(out)


def test_text_load_runs_in_the_sandbox_env(tmp_path):
    out = run_lua(tmp_path, "x = 5 local f = load('return x, io, os.execute') return {f()}")
    assert out == [5]


@pytest.mark.parametrize(
    "body",
    [
        "return getmetatable('')",
        "return getmetatable(_G)",
        "return getmetatable(string)",
        "return getmetatable(vulcan)",
        "return getmetatable(vulcan.fs)",
    ],
)
def test_metatables_of_shared_objects_are_hidden(tmp_path, body):
    assert run_lua(tmp_path, body) is False


@pytest.mark.parametrize(
    "body",
    [
        "getmetatable('').__index = {}",
        "string.upper = function() return 'pwned' end",
        "rawset(string, 'upper', function() return 'pwned' end)",
        "setmetatable(string, {})",
        "rawset(vulcan, 'fs', {})",
        "vulcan.fs.read = print",
        "rawset(vulcan.fs, 'read', print)",
        "table.insert(math, 1)",
        "coroutine.create = nil",
    ],
)
def test_shared_tables_cannot_be_changed(tmp_path, body):
    with SyncRuntime.memory() as rt:
        with pytest.raises(SkillError):
            run_lua(tmp_path, body, rt=rt, options={"isolation": "warm"})
        # the same warm isolate still sees the untouched library
        assert run_lua(tmp_path / "after", "return ('a'):upper()", rt=rt, skill_id="after") == "A"


@pytest.mark.parametrize("lib", ["string", "table", "math", "utf8", "os", "vulcan.json"])
def test_pairs_never_hands_out_the_table_behind_a_shared_library(tmp_path, lib):
    # pairs() on a read-only library once returned the real table as its state, which a
    # call could change for every later call in the same warm isolate
    body = f"""
    local _, state = pairs({lib})
    local seen, planted = {{}}, false
    for k in pairs({lib}) do seen[#seen + 1] = k; planted = planted or k == "planted" end
    local wrote = pcall(function() state.planted = "pwned" end)
    local raw = pcall(rawset, state, "planted", "pwned")
    return {{names = #seen, wrote = wrote, raw = raw, planted = planted}}
    """
    with SyncRuntime.memory() as rt:
        first = run_lua(tmp_path, body, rt=rt, options={"isolation": "warm"})
        second = run_lua(tmp_path, body, rt=rt, options={"isolation": "warm"})
    assert first["names"] > 0  # the library can still be walked
    assert (
        first == second == {"names": first["names"], "wrote": False, "raw": False, "planted": False}
    )


def test_gc_metamethods_and_limit_changing_gc_options_are_refused(tmp_path):
    with pytest.raises(SkillError, match="__gc"):
        run_lua(tmp_path, "setmetatable({}, {__gc = function() end})")
    for opt in ("stop", "setpause", "incremental", "generational", "restart"):
        with pytest.raises(SkillError, match="not allowed"):
            run_lua(tmp_path / opt, f"collectgarbage('{opt}')")
    assert run_lua(tmp_path / "count", "return collectgarbage('count') > 0") is True


SWALLOWERS = {
    "pcall": "while true do pcall(function() while true do end end) end",
    "xpcall": "while true do xpcall(function() while true do end end, function(e) return e end) end",
    "coroutine.resume": (
        "while true do coroutine.resume(coroutine.create(function() while true do end end)) end"
    ),
    "coroutine.wrap": ("while true do pcall(coroutine.wrap(function() while true do end end)) end"),
    "coroutine.close": (
        "while true do local co = coroutine.create(function() while true do end end) "
        "coroutine.resume(co) coroutine.close(co) end"
    ),
    "__close": (
        "while true do pcall(function() local x <close> = setmetatable({}, "
        "{__close = function() error('replaced') end}) while true do end end) end"
    ),
    "error-handler-loop": (
        "while true do xpcall(function() while true do end end, "
        "function() while true do end end) end"
    ),
}


@pytest.mark.parametrize("how", list(SWALLOWERS))
def test_quota_errors_cannot_be_swallowed(tmp_path, how):
    with pytest.raises(LimitExceeded) as info:
        run_lua(tmp_path, SWALLOWERS[how], limits={"instructions": 200_000})
    assert info.value.details["limit"] == "instructions"


def test_infinite_loop_hidden_in_a_coroutine_times_out(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(SkillTimeout):
        run_lua(
            tmp_path,
            "local co = coroutine.wrap(function() while true do end end) co()",
            limits={"timeout_sec": 0.3},
        )
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    "body",
    [
        "return string.rep('x', 2^30)",
        "return ('x'):rep(1e9, ',')",
        "local s = 'x' while true do s = s .. s end",
        "local t = {} for i = 1, 1e9 do t[i] = i end",
        "local t = {} for i = 1, 1e9 do t[#t + 1] = {i} end",
        "return table.concat({string.rep('y', 1e6)}, '', 1, 1) .. string.rep('z', 3e7)",
    ],
    ids=["rep", "rep-sep", "concat-doubling", "array-growth", "table-growth", "big-concat"],
)
def test_memory_bombs_hit_the_memory_limit(tmp_path, body):
    with pytest.raises(LimitExceeded) as info:
        run_lua(tmp_path, body, limits={"memory_mb": 16, "timeout_sec": 20})
    assert info.value.details["limit"] == "memory"


@pytest.mark.parametrize(
    "body",
    [
        "return string.find(string.rep('a', 40000), '.-.-.-.-b')",
        "return string.match(string.rep('a', 40000), '^(.-)(.-)(.-)b')",
        "return (string.gsub(string.rep('a', 40000), 'a*a*a*a*b', ''))",
        "for x in string.gmatch(string.rep('a', 40000), '(.-)(.-)(.-)b') do end",
        "return string.find(string.rep('a', 4e6), string.rep('a', 2e5) .. 'b', 1, true)",
    ],
    ids=["find", "match", "gsub", "gmatch", "plain-find"],
)
def test_pathological_patterns_are_stopped_by_the_deadline(tmp_path, body):
    t0 = time.monotonic()
    with pytest.raises(SkillTimeout):
        run_lua(tmp_path, body, limits={"timeout_sec": 0.5, "memory_mb": 64})
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    "body",
    [
        "return python.eval('1')",
        "return type(vulcan.json.encode)",
        "return type(vulcan.runtime.log)",
        "return type(print)",
        "return tostring(vulcan.fs.read):match('^function') ~= nil",
    ],
)
def test_no_python_object_is_reachable(tmp_path, body):
    try:
        out = run_lua(tmp_path, body)
    except SkillError as exc:
        assert "python" in exc.message
    else:
        assert out in ("function", True)


def test_a_walk_of_everything_reachable_finds_no_userdata(tmp_path):
    out = run_lua(
        tmp_path,
        """
        local seen, bad, count = {}, {}, 0
        local function walk(v, path, depth)
          local t = type(v)
          if t == "userdata" or t == "thread" then bad[#bad + 1] = path end
          if t ~= "table" or seen[v] or depth > 6 then return end
          seen[v] = true
          for k, x in pairs(v) do
            count = count + 1
            walk(k, path .. "<key>", depth + 1)
            walk(x, path .. "." .. tostring(k), depth + 1)
          end
          local mt = getmetatable(v)
          if type(mt) == "table" then walk(mt, path .. "<mt>", depth + 1) end
        end
        walk(_G, "_G", 0)
        for _, name in ipairs({"string", "table", "math", "utf8", "coroutine", "os", "vulcan",
                               "print", "load", "require", "pcall", "setmetatable"}) do
          walk(_G[name], name, 0)
        end
        walk(getmetatable(""), "string-mt", 0)
        walk(vulcan.context, "context", 0)
        return {bad = bad, count = count}
        """,
    )
    assert out["bad"] == {} or out["bad"] == []
    assert out["count"] > 50


def test_the_host_process_is_unharmed(tmp_path):
    marker = tmp_path / "marker.txt"
    marker.write_text("still here")
    attacks = [
        f"os.remove('{marker}')",
        "os.exit(1)",
        f"io.open('{marker}', 'w')",
        "require('os').exit(1)",
        "package.loadlib('libc.so.6', 'system')",
    ]
    with SyncRuntime.memory() as rt:
        for i, body in enumerate(attacks):
            with pytest.raises(SkillError):
                run_lua(tmp_path / f"a{i}", body, rt=rt, skill_id=f"a{i}")
        assert run_lua(tmp_path / "ok", "return 1 + 1", rt=rt, skill_id="ok") == 2
    assert marker.read_text() == "still here"
    assert os.getpid() > 0


def test_an_isolate_that_hit_a_limit_is_discarded(tmp_path):
    write_lua_package(
        tmp_path,
        "if args.loop then while true do end end return 'ok'",
        limits={"instructions": 100_000},
        options={"isolation": "warm"},
    )
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(tmp_path / "probe", root="memory")
        assert rt.call("probe-run", {}).output == "ok"
        with pytest.raises(LimitExceeded):
            rt.call("probe-run", {"loop": True})
        assert rt.call("probe-run", {}).output == "ok"
        stats = rt.run(rt.runtime.transport("lua").health())
    assert stats["isolates"] == 2 and stats["discarded"] == 1


def test_the_call_context_is_plain_data_in_every_kind_of_isolate(tmp_path):
    # its nulls are the JSON null marker, fetched before the call, never a value read back
    # from inside the running call (where the VM's stack belongs to a coroutine)
    for isolation in ("fresh", "warm"):
        out = run_lua(
            tmp_path / isolation,
            """
            local c = vulcan.context
            local kinds = {}
            for k, v in pairs(c) do kinds[k] = type(v) end
            return {kinds = kinds, null = c.session_id == vulcan.json.null, tool = c.tool}
            """,
            options={"isolation": isolation},
        )
        assert out["null"] is True and out["tool"] == "probe-run"
        assert set(out["kinds"].values()) <= {"string", "number", "table"}
