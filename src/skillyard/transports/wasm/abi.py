"""The skill ABI's data: msgpack envelopes, the descriptor, requirements (docs/wasm-abi.md).

Everything here is pure Python over ``msgpack``; nothing touches wasmtime, so the
rules about what a guest may say are testable on their own.
"""

from __future__ import annotations

import fnmatch
import os
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msgpack

ABI_VERSION = 1
MAX_DESCRIPTOR_BYTES = 1024 * 1024
MAX_METHODS = 256
MAX_COMMANDS = 64
MAX_STATE_BYTES = 16 * 1024 * 1024
REQUIREMENT_KINDS = ("fs", "http", "tcp", "ws", "shell", "llm", "env", "invoke")
COMMAND_KINDS = (
    "call_module",
    "batch_invoke",
    "emit_event",
    "subscribe",
    "store_kv",
    "load_kv",
    "schedule",
)
PARAM_TYPES = ("string", "integer", "number", "boolean", "object", "array")
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$")


class AbiViolation(ValueError):
    """The guest sent bytes that are not the ABI; the message says which field and why."""


_local = threading.local()


def pack(value: Any) -> bytes:
    """msgpack with str as str and bytes as bin (the ABI's encoding).

    A ``Packer`` per thread is reused: ``msgpack.packb`` builds one per call,
    which is most of its cost for the small envelopes of the ABI.
    """
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    try:
        return packer.pack(value)
    except BaseException:
        packer.reset()
        raise


_unpackb = msgpack.unpackb


def unpack(data: bytes, what: str) -> Any:
    """Decode one msgpack value, refusing trailing bytes and non-string map keys."""
    try:
        return _unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise AbiViolation(f"{what} is not valid msgpack ({type(exc).__name__}: {exc})") from exc


def _map(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AbiViolation(f"{what} must be a msgpack map, got {type(value).__name__}")
    return value


def _str(d: Mapping[str, Any], key: str, what: str, *, default: str = "") -> str:
    value = d.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise AbiViolation(f"{what}.{key} must be a string, got {type(value).__name__}")
    return value


def _bytes(d: Mapping[str, Any], key: str, what: str) -> bytes:
    value = d.get(key)
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):  # some encoders write bin fields as str
        return value.encode()
    raise AbiViolation(f"{what}.{key} must be bin (bytes), got {type(value).__name__}")


# -- envelopes ---------------------------------------------------------------------------


def encode_request(
    *,
    request_id: str,
    trace_id: str,
    session_id: str,
    method: str,
    skill_id: str,
    caller_id: str,
    state: bytes,
    payload: Any,
    deadline_ns: int,
) -> bytes:
    """An ``InvokeRequest``: the call's identity, the kept state and the msgpack payload."""
    return pack(
        {
            "version": ABI_VERSION,
            "request_id": request_id,
            "trace_id": trace_id,
            "session_id": session_id,
            "method": method,
            "skill_id": skill_id,
            "caller_id": caller_id,
            "state": state,
            "payload": pack(payload),
            "deadline_ns": deadline_ns,
        }
    )


class Response:
    """A decoded ``InvokeResponse``."""

    __slots__ = ("commands", "error", "llm_context", "output", "state")

    def __init__(
        self,
        output: Any,
        state: bytes | None,
        error: str,
        commands: list[dict[str, Any]],
        llm_context: str,
    ) -> None:
        self.output = output
        self.state = state
        self.error = error
        self.commands = commands
        self.llm_context = llm_context


def decode_response(data: bytes) -> Response:
    """Decode and check an ``InvokeResponse`` (state ``None`` means "keep the current state")."""
    d = unpack(data, "InvokeResponse")
    if type(d) is not dict:
        raise AbiViolation(f"InvokeResponse must be a msgpack map, got {type(d).__name__}")
    get = d.get
    version = get("version", ABI_VERSION)
    if version != ABI_VERSION and version != 0:
        raise AbiViolation(f"InvokeResponse.version {version!r} is not supported (expected 1)")
    raw_payload = get("payload")
    if type(raw_payload) is not bytes:
        raw_payload = _bytes(d, "payload", "InvokeResponse")
    output = unpack(raw_payload, "InvokeResponse.payload") if raw_payload else None
    state: bytes | None = None
    if get("state") is not None:
        state = _bytes(d, "state", "InvokeResponse")
        if len(state) > MAX_STATE_BYTES:
            raise AbiViolation(f"state is {len(state)} bytes; the limit is {MAX_STATE_BYTES}")
        if state:
            check_state(state)
    commands: list[dict[str, Any]] = []
    commands_raw = get("commands")
    if commands_raw:
        commands = _commands(commands_raw)
    error = get("error") or ""
    llm_context = get("llm_context") or ""
    if type(error) is not str or type(llm_context) is not str:
        raise AbiViolation("InvokeResponse.error and .llm_context must be strings")
    return Response(output, state, error, commands, llm_context)


def _commands(commands_raw: Any) -> list[dict[str, Any]]:
    if not isinstance(commands_raw, list):
        raise AbiViolation("InvokeResponse.commands must be an array")
    if len(commands_raw) > MAX_COMMANDS:
        raise AbiViolation(f"{len(commands_raw)} commands; at most {MAX_COMMANDS} per response")
    commands = []
    for i, c in enumerate(commands_raw):
        cm = _map(c, f"commands[{i}]")
        kind = cm.get("type")
        if kind not in COMMAND_KINDS:
            raise AbiViolation(
                f"commands[{i}].type {kind!r} is not one of {', '.join(COMMAND_KINDS)}"
            )
        payload = cm.get("payload") or {}
        commands.append({"type": kind, "payload": _map(payload, f"commands[{i}].payload")})
    return commands


def check_state(state: bytes) -> None:
    """The state must be a ``{schema_version, data}`` envelope."""
    env = _map(unpack(state, "state"), "state")
    sv = env.get("schema_version", 0)
    if isinstance(sv, bool) or not isinstance(sv, int) or sv < 0:
        raise AbiViolation("state.schema_version must be a non-negative integer")
    _bytes(env, "data", "state")


def state_envelope(schema_version: int, data: Any) -> bytes:
    """Build a state envelope (hosts and tests use this to seed state)."""
    return pack({"schema_version": schema_version, "data": pack(data)})


# -- descriptor --------------------------------------------------------------------------


def _param_schema(p: Mapping[str, Any], what: str, depth: int = 0) -> dict[str, Any]:
    if depth > 8:
        raise AbiViolation(f"{what}: parameter types nest too deeply")
    kind = p.get("type", "string")
    if kind not in PARAM_TYPES:
        raise AbiViolation(f"{what}.type {kind!r} is not one of {', '.join(PARAM_TYPES)}")
    schema: dict[str, Any] = {"type": kind}
    desc = _str(p, "description", what)
    if desc:
        schema["description"] = desc
    enum = p.get("enum")
    if enum:
        if not isinstance(enum, list) or not all(isinstance(e, str) for e in enum):
            raise AbiViolation(f"{what}.enum must be an array of strings")
        schema["enum"] = list(enum)
    if kind == "array" and p.get("items") is not None:
        schema["items"] = _param_schema(
            _map(p["items"], f"{what}.items"), f"{what}.items", depth + 1
        )
    return schema


def parse_descriptor(data: bytes) -> dict[str, Any]:
    """Decode and fully check a ``SkillDescriptor``; returns a normalised dict.

    Each method gets a JSON Schema built from its params, and the flags
    ``mcp_hidden`` / ``private_callback``.
    """
    d = _map(unpack(data, "skill_describe()"), "skill_describe()")
    what = "skill_describe()"
    methods_raw = d.get("methods")
    if not isinstance(methods_raw, list):
        raise AbiViolation(f"{what}.methods must be an array of method maps")
    if len(methods_raw) > MAX_METHODS:
        raise AbiViolation(f"{what}: {len(methods_raw)} methods; at most {MAX_METHODS}")
    methods = []
    seen: set[str] = set()
    for i, m in enumerate(methods_raw):
        mw = f"{what}.methods[{i}]"
        mm = _map(m, mw)
        name = _str(mm, "name", mw)
        if not _NAME_RE.match(name) or len(name) > 64:
            raise AbiViolation(
                f"{mw}.name {name!r}: use lower-case letters, digits, '-' and '_' (64 at most)"
            )
        if name in seen:
            raise AbiViolation(f"{mw}.name: method {name!r} is described twice")
        seen.add(name)
        params = mm.get("params") or []
        if not isinstance(params, list):
            raise AbiViolation(f"{mw}.params must be an array")
        props: dict[str, Any] = {}
        required: list[str] = []
        for j, p in enumerate(params):
            pw = f"{mw}.params[{j}]"
            pm = _map(p, pw)
            pname = _str(pm, "name", pw)
            if not pname:
                raise AbiViolation(f"{pw}.name is required")
            props[pname] = _param_schema(pm, pw)
            if pm.get("required"):
                required.append(pname)
        schema: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            schema["required"] = required
        flags = {}
        for flag in ("mcp_hidden", "private_callback"):
            v = mm.get(flag, False)
            if not isinstance(v, bool):
                raise AbiViolation(f"{mw}.{flag} must be true or false")
            flags[flag] = v
        methods.append(
            {
                "name": name,
                "description": _str(mm, "description", mw),
                "input_schema": schema,
                **flags,
            }
        )
    reqs = []
    reqs_raw = d.get("requirements") or []
    if not isinstance(reqs_raw, list):
        raise AbiViolation(f"{what}.requirements must be an array")
    for i, r in enumerate(reqs_raw):
        rw = f"{what}.requirements[{i}]"
        rm = _map(r, rw)
        kind = rm.get("kind")
        if kind not in REQUIREMENT_KINDS:
            raise AbiViolation(f"{rw}.kind {kind!r} is not one of {', '.join(REQUIREMENT_KINDS)}")
        mode = _str(rm, "mode", rw)
        if kind == "fs" and mode not in ("", "ro", "rw"):
            raise AbiViolation(f"{rw}.mode {mode!r} must be ro or rw")
        reqs.append({"kind": kind, "pattern": _str(rm, "pattern", rw), "mode": mode})
    return {
        "version": d.get("version", ABI_VERSION),
        "skill_id": _str(d, "skill_id", what),
        "skill_name": _str(d, "skill_name", what),
        "skill_version": _str(d, "skill_version", what),
        "description": _str(d, "description", what),
        "methods": methods,
        "requirements": reqs,
    }


# -- requirements against permissions -----------------------------------------------------
# ``perms`` is the normalised ``[permissions]`` of a package (skillyard.host.permissions):
# fs = [{path, mode, base}], http = {hosts: [{host}]}, shell = {programs}, env / models /
# invoke = [names]. Plain lists and strings are accepted too (cards built in code).


def _entries(value: Any) -> list[Any]:
    if value is None or value is False:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _names(value: Any, key: str = "") -> list[str]:
    if isinstance(value, Mapping) and key:
        value = value.get(key)
    out = []
    for e in _entries(value):
        if isinstance(e, str):
            out.append(e)
        elif isinstance(e, Mapping):
            for k in ("host", "program", "name", "tool", "pattern"):
                if isinstance(e.get(k), str):
                    out.append(e[k])
                    break
    return out


def _covered(pattern: str, grants: list[str]) -> bool:
    if not pattern:
        return bool(grants)
    return any(g == "*" or g == pattern or fnmatch.fnmatchcase(pattern, g) for g in grants)


def _fs_covered(pattern: str, want_rw: bool, perms: Mapping[str, Any], skill_dir: str) -> bool:
    want = os.path.normpath(os.path.join(skill_dir, pattern)) if pattern else ""
    for e in _entries(perms.get("fs")):
        if isinstance(e, str):
            path, mode, base = e, "ro", "skill"
        elif isinstance(e, Mapping) and isinstance(e.get("path"), str):
            path, mode, base = e["path"], str(e.get("mode", "ro")), str(e.get("base", "skill"))
        else:
            continue
        if want_rw and mode != "rw":
            continue
        if base != "skill":  # workspace and temp grants cover paths only the host resolves
            if not pattern:
                return True
            continue
        granted = os.path.normpath(os.path.join(skill_dir, path))
        if not want or want == granted or want.startswith(granted.rstrip("/") + "/"):
            return True
        if fnmatch.fnmatchcase(want, granted):
            return True
    return False


def _http_host(pattern: str) -> str:
    if "://" in pattern:
        return urlsplit(pattern).hostname or ""
    return pattern.split("/")[0].split(":")[0]


def requirement_problem(
    req: Mapping[str, Any], perms: Mapping[str, Any], *, skill_dir: str = "."
) -> str | None:
    """Why a descriptor requirement is not granted by the package permissions, or ``None``."""
    kind, pattern, mode = req["kind"], req.get("pattern", ""), req.get("mode", "")
    label = f"{kind}{' ' + repr(pattern) if pattern else ''}"
    if kind == "fs":
        if _fs_covered(pattern, mode == "rw", perms, skill_dir):
            return None
        return f"requires fs {mode or 'ro'} access to {pattern or 'a directory'!r}, not granted"
    if kind in ("tcp", "ws"):
        return f"requires {label}; this runtime provides no {kind} access to WASM skills"
    if kind == "llm":
        models = _names(perms.get("models"))
        return None if "llm" in models or "*" in models else "requires models = ['llm']"
    if kind == "shell":
        program = pattern.split()[0] if pattern else ""
        ok = _covered(program, _names(perms.get("shell"), "programs"))
        return None if ok else f"requires {label}, not granted"
    if kind == "http":
        ok = _covered(_http_host(pattern), _names(perms.get("http"), "hosts"))
        return None if ok else f"requires {label}, not granted"
    return None if _covered(pattern, _names(perms.get(kind))) else f"requires {label}, not granted"


def unmet_requirements(
    desc: Mapping[str, Any], perms: Mapping[str, Any], *, skill_dir: str = "."
) -> list[str]:
    """Every requirement of the descriptor that the permissions do not grant."""
    return [
        p
        for r in desc.get("requirements", ())
        if (p := requirement_problem(r, perms, skill_dir=skill_dir))
    ]
