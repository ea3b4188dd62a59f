"""Helpers for the WASM transport tests: guest packages and WAT guests built in Python."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack

GUESTS = Path(__file__).resolve().parent / "wasm_guests"
DESC_AT, RESP_AT, HEAP_AT = 1024, 8192, 65536


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def response(output: Any = None, **fields: Any) -> bytes:
    """An InvokeResponse as a guest would write it."""
    return pack({"version": 1, "payload": pack(output) if output is not None else b"", **fields})


def descriptor(methods: list[dict[str, Any]] | None = None, **fields: Any) -> bytes:
    return pack(
        {
            "version": 1,
            "skill_id": "wat",
            "methods": [{"name": "run"}] if methods is None else methods,
            **fields,
        }
    )


def _data(b: bytes) -> str:
    return "".join(f"\\{x:02x}" for x in b)


def wat_guest(
    *,
    desc: bytes | None = None,
    resp: bytes | None = None,
    handle: str | None = None,
    describe: str | None = None,
    extra: str = "",
    imports: str = "",
    max_pages: int | None = None,
    locals: str = "",
) -> bytes:
    """A guest in WAT: static descriptor and response, or custom export bodies."""
    import wasmtime

    desc = descriptor() if desc is None else desc
    resp = response({"ok": True}) if resp is None else resp
    assert len(desc) < RESP_AT - DESC_AT and len(resp) < HEAP_AT - RESP_AT
    handle = (
        handle or f"(i64.or (i64.shl (i64.const {RESP_AT}) (i64.const 32)) (i64.const {len(resp)}))"
    )
    describe = describe or (
        f"(i64.or (i64.shl (i64.const {DESC_AT}) (i64.const 32)) (i64.const {len(desc)}))"
    )
    limit = f" {max_pages}" if max_pages else ""
    wat = f"""
(module
  {imports}
  (memory (export "memory") 2{limit})
  (global $heap (mut i32) (i32.const {HEAP_AT}))
  (data (i32.const {DESC_AT}) "{_data(desc)}")
  (data (i32.const {RESP_AT}) "{_data(resp)}")
  (func $alloc (export "skill_alloc") (param $n i32) (result i32)
    (local $p i32) (local $end i32)
    global.get $heap local.set $p
    local.get $p local.get $n i32.add i32.const 7 i32.add i32.const -8 i32.and local.set $end
    (block $ok
      local.get $end memory.size i32.const 16 i32.shl i32.le_u br_if $ok
      local.get $end memory.size i32.const 16 i32.shl i32.sub i32.const 65535 i32.add
      i32.const 16 i32.shr_u memory.grow i32.const -1 i32.ne br_if $ok
      unreachable)
    local.get $end global.set $heap
    local.get $p)
  (func (export "skill_free") (param i32))
  (func (export "skill_describe") (result i64) {describe})
  (func (export "skill_handle") (param $p i32) (param $n i32) (result i64)
    {locals}
    (global.set $heap (i32.const {HEAP_AT}))
    {handle})
  {extra}
)
"""
    return wasmtime.wat2wasm(wat)


def make_pkg(
    root: Path,
    name: str,
    wasm: bytes | Path,
    toml: str = "",
) -> Path:
    """A ``runtime = "wasm"`` package directory holding ``skill.wasm``."""
    pkg = root / name
    pkg.mkdir(parents=True, exist_ok=True)
    data = wasm.read_bytes() if isinstance(wasm, Path) else wasm
    (pkg / "skill.wasm").write_bytes(data)
    (pkg / "skill.toml").write_text(f'runtime = "wasm"\nentry = "skill.wasm"\n{toml}')
    return pkg


def relay_guest(import_name: str, request: Any) -> bytes:
    """A WAT guest whose every call sends ``request`` to ``env.<import_name>`` and returns
    the host's answer as its output (so tests see exactly what the guest received)."""
    req = pack(request)
    prefix = b"\x82\xa7version\x01\xa7payload\xc6"  # then a u32 BE length and the answer
    at = 16384
    handle = f"""
    (local.set $packed (call $host (i32.const {RESP_AT}) (i32.const {len(req)})))
    (local.set $a (i32.wrap_i64 (i64.shr_u (local.get $packed) (i64.const 32))))
    (local.set $n2 (i32.wrap_i64 (local.get $packed)))
    (memory.copy (i32.const {at}) (i32.const {DESC_AT + 512}) (i32.const {len(prefix)}))
    (local.set $o (i32.const {at + len(prefix)}))
    (i32.store8 (local.get $o) (i32.shr_u (local.get $n2) (i32.const 24)))
    (i32.store8 offset=1 (local.get $o) (i32.shr_u (local.get $n2) (i32.const 16)))
    (i32.store8 offset=2 (local.get $o) (i32.shr_u (local.get $n2) (i32.const 8)))
    (i32.store8 offset=3 (local.get $o) (local.get $n2))
    (memory.copy (i32.add (local.get $o) (i32.const 4)) (local.get $a) (local.get $n2))
    (i64.or (i64.shl (i64.const {at}) (i64.const 32))
            (i64.extend_i32_u (i32.add (local.get $n2) (i32.const {len(prefix) + 4}))))
    """
    desc = descriptor()
    assert len(desc) < 512
    return wat_guest(
        desc=desc + b"\x00" * (512 - len(desc)) + prefix,
        resp=req,
        handle=handle,
        describe=f"(i64.or (i64.shl (i64.const {DESC_AT}) (i64.const 32)) (i64.const {len(desc)}))",
        imports=f'(import "env" "{import_name}" (func $host (param i32 i32) (result i64)))',
        locals="(local $packed i64) (local $a i32) (local $n2 i32) (local $o i32)",
    )


CONF_TOML = """
version = "1.0.0"
runtime = "wasm"
entry = "skill.wasm"

[[methods]]
name = "echo"
output_schema = "schemas/echo.json"

[[methods]]
name = "slow"
limits = { timeout_sec = 1 }

[[methods]]
name = "flood"
limits = { max_output_bytes = 2000 }

[[methods]]
name = "fail"

[[methods]]
name = "badout"
output_schema = "schemas/echo.json"
"""


class WasmConformanceSkills:
    """The conformance suite's five tools (conf-echo, -slow, -flood, -fail, -badout) in C."""

    def __init__(self, *, warm: bool = False) -> None:
        self.warm = warm

    def install(self, rt: Any, tmp_path: Path, echo_schema: dict[str, Any]) -> None:
        import json

        pkg = tmp_path / "conf"
        (pkg / "schemas").mkdir(parents=True)
        (pkg / "schemas" / "echo.json").write_text(json.dumps(echo_schema))
        (pkg / "skill.wasm").write_bytes((GUESTS / "conf.wasm").read_bytes())
        options = "[options]\nwarm = true\n" if self.warm else ""
        (pkg / "skill.toml").write_text(CONF_TOML + options)
        rt.runtime.add_package(pkg)
