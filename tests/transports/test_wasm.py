"""WASM transport: descriptor -> cards, state, limits and hostile guests, end to end."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

from skillyard import SyncRuntime
from skillyard.errors import (
    InvalidArguments,
    LimitExceeded,
    ManifestError,
    OutputTooLarge,
    PermissionDenied,
    ProtocolError,
    SkillCrashed,
    SkillError,
    SkillTimeout,
)
from tests.transports.wasm_support import GUESTS, descriptor, make_pkg, pack, response, wat_guest

TESTSKILL = GUESTS / "testskill.wasm"
ECHO = GUESTS / "echo.wasm"


@pytest.fixture
def rt():
    runtime = SyncRuntime.memory()
    yield runtime
    runtime.close()


def _healthy(rt: SyncRuntime, tmp_path: Path) -> None:
    """The host is unharmed: a fresh, ordinary wasm call still works."""
    if "echo-echo" not in {c.name for c in rt.list()}:
        rt.runtime.add_package(make_pkg(tmp_path, "echo", ECHO))
    assert rt.call("echo-echo", {"text": "still fine"}).output == {"text": "still fine"}


# -- descriptor -> cards --------------------------------------------------------------------


def test_descriptor_becomes_cards(rt, tmp_path):
    pkg = rt.runtime.add_package(make_pkg(tmp_path, "testskill", TESTSKILL))
    assert pkg.version == "1.2.3"
    assert pkg.description == "Test guest for the WASM transport"
    names = [c.name for c in rt.list()]
    assert "testskill-echo" in names and "testskill-count" in names
    assert "testskill-on_result" not in names  # a private callback is hidden
    echo = rt.card("testskill-echo")
    assert echo.transport == "wasm" and echo.operation == "skill.wasm"
    assert echo.input_schema["properties"]["text"] == {"type": "string"}
    hidden = rt.runtime._cards["testskill-on_result"]
    assert hidden.hidden and hidden.options["private_callback"] is True
    with pytest.raises(InvalidArguments):
        rt.call("testskill-echo", {"text": 5})


def test_toml_methods_override_the_descriptor(rt, tmp_path):
    toml = '[[methods]]\nname = "echo"\ndescription = "declared in toml"\n'
    rt.runtime.add_package(make_pkg(tmp_path, "declared", TESTSKILL, toml))
    assert [c.name for c in rt.list()] == ["declared-echo"]
    assert rt.card("declared-echo").description == "declared in toml"
    assert rt.call("declared-echo", {"a": [1, 2]}).output == {"a": [1, 2]}


@pytest.mark.parametrize(
    ("desc", "needle"),
    [
        (b"\xc1\xc1 not msgpack", "not valid msgpack"),
        (pack({"methods": "nope"}), "methods must be an array"),
        (descriptor([{"name": "Bad Name!"}]), "Bad Name!"),
        (descriptor([{"name": "a"}, {"name": "a"}]), "described twice"),
        (descriptor([{"name": "a", "params": [{"name": "x", "type": "blob"}]}]), "blob"),
        (descriptor(requirements=[{"kind": "teleport"}]), "teleport"),
        (descriptor([]), "describes no methods"),
    ],
    ids=["garbage", "methods-not-array", "bad-name", "duplicate", "bad-type", "bad-req", "empty"],
)
def test_malformed_descriptor_is_refused_at_load(rt, tmp_path, desc, needle):
    pkg = make_pkg(tmp_path, "bad", wat_guest(desc=desc))
    with pytest.raises(ManifestError) as err:
        rt.runtime.add_package(pkg)
    assert needle in str(err.value)
    assert rt.list() == []
    _healthy(rt, tmp_path)


def test_descriptor_outside_memory_is_refused(rt, tmp_path):
    pkg = make_pkg(tmp_path, "oob", wat_guest(describe="(i64.const 0x00fff00000001000)"))
    with pytest.raises(ManifestError, match="outside its"):
        rt.runtime.add_package(pkg)


def test_unknown_import_fails_at_load_naming_it(rt, tmp_path):
    wasm = wat_guest(
        imports='(import "env" "teleport" (func (param i32 i32) (result i64)))'
        ' (import "gpu" "draw" (func))'
    )
    with pytest.raises(ManifestError) as err:
        rt.runtime.add_package(make_pkg(tmp_path, "importer", wasm))
    assert "env.teleport" in str(err.value) and "gpu.draw" in str(err.value)


def test_missing_exports_are_named(rt, tmp_path):
    import wasmtime

    wasm = wasmtime.wat2wasm('(module (memory (export "memory") 1))')
    with pytest.raises(ManifestError) as err:
        rt.runtime.add_package(make_pkg(tmp_path, "empty", wasm))
    assert "skill_handle is missing" in str(err.value)


def test_not_wasm_at_all(rt, tmp_path):
    with pytest.raises(ManifestError, match="not a valid WebAssembly module"):
        rt.runtime.add_package(make_pkg(tmp_path, "junk", b"\x00asm garbage"))


def test_entry_outside_the_package_is_refused(rt, tmp_path):
    pkg = make_pkg(tmp_path, "escape", ECHO)
    (pkg / "skill.toml").write_text('runtime = "wasm"\nentry = "../echo.wasm"\n')
    shutil.copy(ECHO, tmp_path / "echo.wasm")
    with pytest.raises(ManifestError, match="outside the package"):
        rt.runtime.add_package(pkg)


def test_unknown_wasm_option_is_refused(rt, tmp_path):
    pkg = make_pkg(tmp_path, "opts", ECHO, "[options]\nturbo = true\n")
    with pytest.raises(ManifestError, match="unknown wasm option"):
        rt.runtime.add_package(pkg)


def test_unmet_requirements_refuse_the_package(rt, tmp_path):
    desc = descriptor(
        requirements=[
            {"kind": "shell", "pattern": "git"},
            {"kind": "fs", "pattern": "/data", "mode": "rw"},
        ]
    )
    pkg = make_pkg(tmp_path, "needy", wat_guest(desc=desc))
    with pytest.raises(PermissionDenied) as err:
        rt.runtime.add_package(pkg)
    msg = str(err.value)
    assert "not loaded" in msg and "shell 'git'" in msg and "/data" in msg
    assert rt.list() == []


def test_met_requirements_load(rt, tmp_path):
    desc = descriptor(
        requirements=[
            {"kind": "shell", "pattern": "git"},
            {"kind": "fs", "pattern": "/data/x", "mode": "rw"},
        ]
    )
    toml = '[permissions]\nshell = ["git"]\nfs = [{ path = "/data", mode = "rw" }]\n'
    rt.runtime.add_package(make_pkg(tmp_path, "granted", wat_guest(desc=desc), toml))
    assert [c.name for c in rt.list()] == ["granted-run"]


def test_discovery_reports_a_refused_package_and_loads_the_rest(tmp_path):
    desc = descriptor(requirements=[{"kind": "tcp", "pattern": "db:5432"}])
    make_pkg(tmp_path, "wants-tcp", wat_guest(desc=desc))
    make_pkg(tmp_path, "echo", ECHO)
    with SyncRuntime.memory(roots={"project": [tmp_path]}) as rt:
        assert [c.name for c in rt.list()] == ["echo-echo"]
        (problem,) = rt.runtime.problems
        assert problem.skill_id == "wants-tcp" and "tcp" in problem.message


# -- calls and state ----------------------------------------------------------------------------


def test_echo_round_trip(rt, tmp_path):
    rt.runtime.add_package(make_pkg(tmp_path, "echo", ECHO))
    args = {"text": "héllo", "n": 42, "flag": True, "nested": {"list": [1, 2.5, None]}}
    assert rt.call("echo-echo", args).output == args


def test_state_is_kept_between_calls(rt, tmp_path):
    rt.runtime.add_package(make_pkg(tmp_path, "testskill", TESTSKILL))
    assert [rt.call("testskill-count").output["count"] for _ in range(3)] == [1, 2, 3]


def test_state_survives_a_runtime_restart(tmp_path):
    home = tmp_path / "home"
    pkg = make_pkg(tmp_path / "pkgs", "testskill", TESTSKILL)
    with SyncRuntime.open(home) as rt:
        rt.runtime.add_package(pkg)
        rt.call("testskill-count")
        assert rt.call("testskill-count").output == {"count": 2}
    with SyncRuntime.open(home) as rt:
        rt.runtime.add_package(pkg)
        assert rt.call("testskill-count").output == {"count": 3}


def test_warm_instance_is_reused_and_state_still_comes_from_the_runtime(rt, tmp_path):
    rt.runtime.add_package(make_pkg(tmp_path, "testskill", TESTSKILL, "[options]\nwarm = true\n"))
    assert rt.call("testskill-count").output == {"count": 1}
    transport = rt.runtime.transport("wasm")
    (skill,) = transport._skills.values()
    first = skill.warm
    assert first is not None
    assert rt.call("testskill-count").output == {"count": 2}
    assert skill.warm is first


def test_skill_error_is_reported(rt, tmp_path):
    rt.runtime.add_package(make_pkg(tmp_path, "testskill", TESTSKILL))
    with pytest.raises(SkillError, match="asked to fail"):
        rt.call("testskill-fail")
    assert rt.call("testskill-count").output == {"count": 1}  # state untouched by the failure


def test_stdout_and_stderr_become_log_events(rt, tmp_path):
    rt.runtime.add_package(make_pkg(tmp_path, "testskill", TESTSKILL))
    seen: list[dict] = []
    result = rt.call("testskill-print", sink=seen.append)
    logs = {(e["stream"], e["message"].strip()) for e in result.events if e["kind"] == "log"}
    assert ("stdout", "hello from stdout") in logs
    assert ("stderr", "hello from stderr") in logs
    assert ("log", "hello from log_write") in logs
    assert [e for e in seen if e["kind"] == "log"]


def test_private_callback_cannot_be_called_from_outside(rt, tmp_path):
    rt.runtime.add_package(make_pkg(tmp_path, "testskill", TESTSKILL))
    with pytest.raises((PermissionDenied, Exception)) as err:
        rt.call("testskill-on_result", {})
    assert "testskill-on_result" in str(err.value)


def test_compiled_module_is_cached_on_disk(tmp_path, monkeypatch):
    from skillyard.transports.wasm import engine, transport

    monkeypatch.setenv("SKILLYARD_WASM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(engine, "_modules", {})
    first = transport.load_skill(ECHO)
    assert not first.compiled.cached
    assert list((tmp_path / "cache").glob("*.cwasm"))
    monkeypatch.setattr(engine, "_modules", {})
    second = transport.load_skill(ECHO)
    assert second.compiled.cached
    assert second.compiled.sha256 == first.compiled.sha256


def test_import_skillyard_stays_light():
    import subprocess

    code = "import skillyard, sys; print('wasmtime' in sys.modules, 'msgpack' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# -- limits and hostile guests -------------------------------------------------------------------


def _hostile(rt: SyncRuntime, tmp_path: Path, name: str, limits: str = "", **guest) -> str:
    toml = f"[limits]\n{limits}\n" if limits else ""
    rt.runtime.add_package(make_pkg(tmp_path, name, wat_guest(**guest), toml))
    return f"{name}-run"


def test_infinite_loop_is_stopped_by_the_deadline(rt, tmp_path):
    tool = _hostile(
        rt, tmp_path, "spin", "timeout_sec = 0.3", handle="(loop $l (br $l)) (i64.const 0)"
    )
    t0 = time.monotonic()
    with pytest.raises(SkillTimeout, match="deadline"):
        rt.call(tool)
    assert time.monotonic() - t0 < 3
    _healthy(rt, tmp_path)


def test_fuel_limit_stops_a_loop(rt, tmp_path):
    tool = _hostile(
        rt, tmp_path, "burn", "instructions = 100000", handle="(loop $l (br $l)) (i64.const 0)"
    )
    with pytest.raises(LimitExceeded, match="instruction limit of 100000"):
        rt.call(tool)
    _healthy(rt, tmp_path)


def test_memory_growth_past_the_cap(rt, tmp_path):
    grow = "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable"
    tool = _hostile(rt, tmp_path, "hog", "memory_mb = 4", handle=grow)
    with pytest.raises(LimitExceeded, match="memory limit of 4 MB"):
        rt.call(tool)
    _healthy(rt, tmp_path)


def test_deep_recursion(rt, tmp_path):
    rec = "(func $r (param i32) (result i32) (call $r (i32.add (local.get 0) (i32.const 1))))"
    tool = _hostile(
        rt, tmp_path, "deep", handle="(drop (call $r (i32.const 0))) (i64.const 0)", extra=rec
    )
    with pytest.raises(LimitExceeded, match="stack"):
        rt.call(tool)
    _healthy(rt, tmp_path)


def test_trap(rt, tmp_path):
    tool = _hostile(
        rt,
        tmp_path,
        "trapper",
        handle="(drop (i32.div_u (i32.const 1) (i32.const 0))) (i64.const 0)",
    )
    with pytest.raises(SkillCrashed, match=r"trapped: .*divide by zero"):
        rt.call(tool)
    _healthy(rt, tmp_path)


def test_trap_in_a_warm_instance_drops_it(rt, tmp_path):
    tool = _hostile(rt, tmp_path, "warmtrap", handle="unreachable")
    card = rt.runtime._cards[tool]
    object.__setattr__(card, "options", {"warm": True})
    for _ in range(2):
        with pytest.raises(SkillCrashed, match="unreachable"):
            rt.call(tool)
    (skill,) = rt.runtime.transport("wasm")._skills.values()
    assert skill.warm is None


@pytest.mark.parametrize(
    "packed",
    [
        "(i64.const 0x7fff000000000010)",
        f"(i64.or (i64.shl (i64.const {2 * 65536 - 4}) (i64.const 32)) (i64.const 64))",
    ],
    ids=["far-away", "straddling-the-end"],
)
def test_pointer_outside_memory(rt, tmp_path, packed):
    tool = _hostile(rt, tmp_path, "liar", handle=packed)
    with pytest.raises(ProtocolError, match="outside its"):
        rt.call(tool)
    _healthy(rt, tmp_path)


@pytest.mark.parametrize(
    ("resp", "needle"),
    [
        (b"\xc1\xc1\xc1garbage", "not valid msgpack"),
        (pack([1, 2, 3]), "must be a msgpack map"),
        (response(state=b"\xc1"), "state is not valid msgpack"),
        (response(commands=[{"type": "format_disk"}]), "format_disk"),
        (pack({"version": 1, "payload": b"\xc1"}), "payload is not valid msgpack"),
        (response(b"\xff\xfe"), "not JSON-shaped"),
    ],
    ids=["garbage", "not-a-map", "bad-state", "bad-command", "bad-payload", "bytes-output"],
)
def test_garbage_responses_are_protocol_errors(rt, tmp_path, resp, needle):
    tool = _hostile(rt, tmp_path, "garbage", resp=resp)
    with pytest.raises(ProtocolError, match=needle):
        rt.call(tool)
    _healthy(rt, tmp_path)


def test_output_cap(rt, tmp_path):
    rt.runtime.add_package(make_pkg(tmp_path, "echo", ECHO, "[limits]\nmax_output_bytes = 100\n"))
    assert rt.call("echo-echo", {"text": "short"}).output == {"text": "short"}
    with pytest.raises(OutputTooLarge, match="limit is 100"):
        rt.call("echo-echo", {"text": "x" * 500})


def test_huge_response_length_is_refused_before_reading(rt, tmp_path):
    tool = _hostile(
        rt,
        tmp_path,
        "bloat",
        "max_output_bytes = 1000",
        handle=f"(i64.or (i64.shl (i64.const {8192}) (i64.const 32)) (i64.const 100000))",
    )
    with pytest.raises(OutputTooLarge, match="100000 bytes"):
        rt.call(tool)


def test_host_import_with_a_pointer_outside_memory(rt, tmp_path):
    call = "(drop (call $log (i32.const 0x7ffffff0) (i32.const 64))) (i64.const 0)"
    tool = _hostile(
        rt,
        tmp_path,
        "badptr",
        imports='(import "env" "log_write" (func $log (param i32 i32) (result i64)))',
        handle=call,
    )
    with pytest.raises(ProtocolError, match=r"env\.log_write: request bytes .* outside"):
        rt.call(tool)
    _healthy(rt, tmp_path)


def test_host_import_with_garbage_msgpack(rt, tmp_path):
    call = f"(drop (call $log (i32.const {8192}) (i32.const 3))) (i64.const 0)"
    tool = _hostile(
        rt,
        tmp_path,
        "badreq",
        resp=b"\xc1\xc1\xc1",
        imports='(import "env" "log_write" (func $log (param i32 i32) (result i64)))',
        handle=call,
    )
    with pytest.raises(ProtocolError, match=r"env\.log_write request is not valid msgpack"):
        rt.call(tool)
    _healthy(rt, tmp_path)


def test_example_tally_skill(tmp_path):
    example = Path(__file__).resolve().parents[2] / "examples" / "skills" / "tally"
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(example)
        assert rt.card("tally-count").input_schema["required"] == ["text"]
        out = rt.call("tally-count", {"text": "The cat and the hat.\nThe end, the END!"}).output
        assert out["words"] == 9 and out["lines"] == 2 and out["distinct"] == 5
        assert out["top"][:2] == [{"word": "the", "count": 4}, {"word": "end", "count": 2}]
        rt.call("tally-count", {"text": "héllo wörld héllo"})
        assert rt.call("tally-totals").output == {"documents": 2, "words": 12}
        rt.call("tally-reset")
        assert rt.call("tally-totals").output == {"documents": 0, "words": 0}
        with pytest.raises(InvalidArguments):
            rt.call("tally-count", {})


def test_concurrent_calls_on_worker_threads_keep_one_state_sequence(rt, tmp_path):
    import asyncio

    rt.runtime.add_package(make_pkg(tmp_path, "testskill", TESTSKILL, "[options]\nthread = true\n"))
    assert rt.runtime.transport("wasm").skill_for(rt.card("testskill-count")).threaded

    async def many() -> list[int]:
        results = await asyncio.gather(*(rt.runtime.call("testskill-count") for _ in range(8)))
        return sorted(r.output["count"] for r in results)

    assert rt.run(many()) == list(range(1, 9))


def test_stdout_flood_is_bounded(rt, tmp_path):
    from skillyard.transports.wasm import wasi

    resp = response({"ok": True})
    flood = f"""
    (i32.store (i32.const 32768) (i32.const 40000))
    (i32.store (i32.const 32772) (i32.const 16384))
    (local.set $i (i32.const 0))
    (loop $l
      (drop (call $fd_write (i32.const 1) (i32.const 32768) (i32.const 1) (i32.const 32776)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 640))))
    (i64.or (i64.shl (i64.const 8192) (i64.const 32)) (i64.const {len(resp)}))
    """
    tool = _hostile(
        rt,
        tmp_path,
        "chatty",
        resp=resp,
        imports='(import "wasi_snapshot_preview1" "fd_write" '
        "(func $fd_write (param i32 i32 i32 i32) (result i32)))",
        handle=flood,
        locals="(local $i i32)",
    )
    result = rt.call(tool)  # 10 MiB of stdout
    assert result.output == {"ok": True}
    logged = sum(len(e["message"]) for e in result.events if e["kind"] == "log")
    assert 0 < logged <= 64 * 1024 + 100
    assert not list(wasi.output_dir().glob("*.out"))  # a fresh store's files are gone
