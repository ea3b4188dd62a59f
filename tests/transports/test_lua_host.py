"""vulcan.* against the real host API: config, fs, cache, models and runtime info."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from skillyard import SyncRuntime
from skillyard.errors import HostError, PermissionDenied

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "skills"

MANIFEST = """
name: Probe
entries:
  - {name: run, lua_entry: runtime/run.lua, parameters: [{name: code, type: string}]}
config:
  - {name: units, type: string, default: metric}
  - {name: token, type: string, sensitive: true}
permissions:
  fs: [{path: out, mode: rw, base: workspace}, {path: data, mode: ro}]
  models: {embed: true, llm: true, optional: true}
"""


@pytest.fixture
def rt(tmp_path):
    pkg = tmp_path / "skills" / "probe"
    (pkg / "runtime").mkdir(parents=True)
    (pkg / "data").mkdir()
    (pkg / "data" / "hello.txt").write_text("hello from the package")
    (pkg / "skill.yaml").write_text(textwrap.dedent(MANIFEST))
    (pkg / "runtime" / "run.lua").write_text(
        "return function(args) return assert(load(args.code))() end"
    )
    workspace = tmp_path / "ws"
    workspace.mkdir()
    runtime = SyncRuntime.memory(config={"host": {"workspace": str(workspace)}})
    runtime.runtime.add_package(pkg, root="user")
    yield runtime
    runtime.close()


def lua(rt, code: str):
    return rt.call("probe-run", {"code": textwrap.dedent(code)}).output


def test_config_through_vulcan(rt):
    out = lua(
        rt,
        """
        local before = vulcan.config.get('units')
        vulcan.config.set('units', 'imperial')
        vulcan.config.set('token', 's3cret')
        local listed = vulcan.config.list()
        local after = vulcan.config.get('units')
        vulcan.config.delete('units')
        return {before = before, after = after, listed_units = listed.units,
                token_listed = listed.token, token = vulcan.config.get('token'),
                reset = vulcan.config.get('units'), has = vulcan.config.has('units')}
        """,
    )
    assert out["before"] == "metric" and out["after"] == "imperial"
    assert out["listed_units"] == "imperial" and out["token"] == "s3cret"
    assert out.get("token_listed") != "s3cret"  # sensitive values are never listed
    assert out["reset"] == "metric" and out["has"] is True


def test_config_type_errors_come_back_as_host_errors(rt):
    with pytest.raises(Exception) as info:
        lua(rt, "vulcan.config.set('units', 42)")
    assert info.value.code in ("config_invalid", "invalid_argument")


def test_fs_is_permission_checked(rt, tmp_path):
    out = lua(
        rt,
        """
        local out = vulcan.path.join(vulcan.runtime.workspace(), 'out')
        local a = vulcan.path.join(out, 'a.txt')
        vulcan.fs.mkdir(out, true)
        vulcan.fs.write(a, 'one')
        vulcan.fs.append(a, ' two')
        local listing = vulcan.fs.list(out)
        return {text = vulcan.fs.read(a), pkg = vulcan.fs.read('data/hello.txt'),
                names = {listing[1].name}, exists = vulcan.fs.exists(a)}
        """,
    )
    assert out == {
        "text": "one two",
        "pkg": "hello from the package",
        "names": ["a.txt"],
        "exists": True,
    }
    assert (tmp_path / "ws" / "out" / "a.txt").read_text() == "one two"
    for code in (
        "vulcan.fs.write('data/x.txt', 'no')",  # ro grant
        "vulcan.fs.read('/etc/passwd')",
        "vulcan.fs.read('../../../../etc/passwd')",
        "vulcan.fs.write('elsewhere.txt', 'no')",
    ):
        with pytest.raises(PermissionDenied):
            lua(rt, code)
    assert not (tmp_path / "skills" / "probe" / "data" / "x.txt").exists()


def test_cache_through_vulcan(rt):
    out = lua(
        rt,
        """
        vulcan.cache.put('k', {n = 1, list = {1, 2}}, 60)
        local got = vulcan.cache.get('k')
        vulcan.cache.delete('k')
        return {got = got, gone = vulcan.cache.get('k') == nil}
        """,
    )
    assert out == {"got": {"n": 1, "list": [1, 2]}, "gone": True}


def test_models_without_callbacks_and_with(rt):
    out = lua(
        rt,
        "local ok, err = pcall(vulcan.models.embed, 'x')"
        " return {ok = ok, code = err.code, has = vulcan.models.has('embed')}",
    )
    assert out == {"ok": False, "code": "model_unavailable", "has": False}
    seen = []

    def embed(req):
        seen.append(req)
        return [float(len(req["text"])), 1.0]

    rt.runtime.models.register(embed=embed, llm=lambda req: f"echo: {req['user']}")
    out = lua(
        rt,
        "return {v = vulcan.models.embed('abc').vector, t = vulcan.models.llm('sys', 'hi').text,"
        " status = vulcan.models.status()}",
    )
    assert out == {"v": [3.0, 1.0], "t": "echo: hi", "status": {"embed": True, "llm": True}}
    assert seen[0]["caller"]["tool"] == "probe-run"


def test_runtime_info_through_vulcan(rt, tmp_path):
    out = lua(
        rt,
        "return {cwd = vulcan.runtime.cwd(), ws = vulcan.runtime.workspace(),"
        " tmp = vulcan.runtime.temp_dir()}",
    )
    assert Path(out["cwd"]) == (tmp_path / "skills" / "probe").resolve()
    assert Path(out["ws"]) == (tmp_path / "ws").resolve()
    assert out["tmp"]


def test_unknown_host_tools_and_invoke_are_denied(rt):
    with pytest.raises(PermissionDenied):
        lua(rt, "return vulcan.call('probe-run', {code = 'return 1'})")
    with pytest.raises((PermissionDenied, HostError)):
        lua(rt, "return vulcan.host.call('nope', {})")


def test_example_notes_with_the_real_host(tmp_path):
    skills = tmp_path / "skills"
    shutil.copytree(EXAMPLES / "lua-notes", skills / "lua-notes")
    (tmp_path / "ws").mkdir()
    with SyncRuntime.memory(config={"host": {"workspace": str(tmp_path / "ws")}}) as rt:
        rt.runtime.add_package(skills / "lua-notes", root="user")
        rt.call("lua-notes-add", {"title": "Lua in Python", "text": "lupa runs lua"})
        rt.call("lua-notes-add", {"title": "Shopping", "text": "milk and bread"})
        by_words = rt.call("lua-notes-search", {"query": "lua"}).output
        no_model = rt.call("lua-notes-summarize", {}).content
        rt.runtime.models.register(
            embed=lambda req: [req["text"].lower().count(c) for c in "lmb"],
            llm=lambda req: f"{len(req['user'].splitlines())} notes",
        )
        by_meaning = rt.call("lua-notes-search", {"query": "lua", "limit": 1}).output
        summary = rt.call("lua-notes-summarize", {}).content
    assert (tmp_path / "ws" / "notes" / "lua-in-python.json").is_file()
    assert by_words["method"] == "keywords"
    assert [h["title"] for h in by_words["hits"]] == ["Lua in Python"]
    assert "No language model" in no_model
    assert by_meaning["method"] == "embedding" and len(by_meaning["hits"]) == 1
    assert summary == "2 notes"
