"""Declared permissions: validate the ``[permissions]`` table of a manifest and normalise it.

The normalised form is JSON-shaped and is what cards carry in ``card.permissions``;
feeding it back through :func:`parse_permissions` gives the same dict, so grants in
the operator's config (which use the same shapes) and cards built in code share one
parser. Every error names the file and the field path::

    skill.toml: permissions.http.hosts[1].host: 'exa mple.com' is not a host name ...

Normalised shape (kinds that are not declared are absent)::

    {
      "fs": [{"path": "data", "mode": "ro", "base": "skill", "optional": False}],
      "http": {"hosts": [{"host": "*.example.com", "methods": ["GET"], "ports": None}],
               "max_response_bytes": 1048576, "timeout_sec": 30.0,
               "allow_private": False, "allow_loopback": False},
      "shell": {"programs": ["git"], "cwd": ["."], "timeout_sec": 30.0,
                "max_output_bytes": 1048576},
      "env": ["LANG"], "models": ["embed"], "tools": ["search.*"],
      "invoke": ["other-skill-*"], "can_be_invoked_by": ["planner"],
      "optional": ["models"],          # kinds whose absence must not refuse the package
    }
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from skillyard.errors import ManifestError

KINDS = ("fs", "http", "shell", "env", "models", "tools", "invoke", "can_be_invoked_by")
FS_MODES = ("ro", "rw")
FS_BASES = ("skill", "workspace", "temp")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MODEL_KINDS = ("embed", "llm")
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
DEFAULT_HTTP_TIMEOUT_SEC = 30.0
DEFAULT_SHELL_TIMEOUT_SEC = 30.0
DEFAULT_SHELL_OUTPUT_BYTES = 1024 * 1024
MAX_HTTP_RESPONSE_BYTES = 1024 * 1024 * 1024
MAX_TIMEOUT_SEC = 3600.0
MAX_SHELL_OUTPUT_BYTES = 64 * 1024 * 1024
MAX_ITEMS = 256

_HOST_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST_RE = re.compile(rf"^(\*|(\*\.)?{_HOST_LABEL}(\.{_HOST_LABEL})*)$")
_PROGRAM_RE = re.compile(r"^[A-Za-z0-9._+-]+$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$|^\*$")
_TOOL_RE = re.compile(r"^[A-Za-z0-9_.:/*?-]{1,128}$")
_SKILL_PATTERN_RE = re.compile(r"^[a-z0-9_*?-]{1,128}$")
_GLOB_CHARS = set("*?[")


class _Where:
    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, field_path: str, message: str) -> ManifestError:
        return ManifestError(message, file=self.file or None, field=field_path)

    def keys(self, data: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
        for key in data:
            if key not in allowed:
                raise self.fail(
                    f"{path}.{key}", f"unknown key; allowed keys are {', '.join(sorted(allowed))}"
                )

    def flag(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {value!r}")
        return value

    def number(self, value: Any, path: str, *, cap: float, integer: bool = False) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, f"expected a number, got {type(value).__name__}")
        if integer and not isinstance(value, int):
            raise self.fail(path, "expected a whole number")
        if value <= 0 or value > cap:
            raise self.fail(path, f"expected a number above 0 and at most {cap:g}, got {value}")
        return int(value) if integer else float(value)

    def str_list(self, value: Any, path: str, what: str) -> list[str]:
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list of {what}, got {type(value).__name__}")
        if len(value) > MAX_ITEMS:
            raise self.fail(path, f"{len(value)} entries; at most {MAX_ITEMS} are allowed")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(f"{path}[{i}]", f"expected {what}, got {type(item).__name__}")
        return list(value)

    def patterns(self, value: Any, path: str, regex: re.Pattern[str], what: str) -> list[str]:
        out: list[str] = []
        for i, item in enumerate(self.str_list(value, path, what)):
            if not regex.match(item):
                raise self.fail(f"{path}[{i}]", f"{item!r} is not {what}")
            if item not in out:
                out.append(item)
        return out


def _unwrap(wh: _Where, raw: Any, path: str, list_key: str) -> tuple[Any, bool]:
    """``kind = [...]`` or ``kind = {<list_key> = [...], optional = true}``."""
    if isinstance(raw, Mapping):
        wh.keys(raw, (list_key, "optional"), path)
        optional = wh.flag(raw.get("optional", False), f"{path}.optional")
        return raw.get(list_key, []), optional
    return raw, False


def check_path(wh: _Where, value: Any, path: str, *, globs: bool) -> str:
    """A declared directory: relative or absolute, no NUL, no ``~``, optional globs."""
    if not isinstance(value, str) or not value:
        raise wh.fail(path, "expected a non-empty path string")
    if "\0" in value or "\n" in value:
        raise wh.fail(path, "a path may not contain NUL or newline characters")
    if value.startswith("~"):
        raise wh.fail(path, f"{value!r}: '~' is not expanded; use a relative or absolute path")
    if len(value) > 4096:
        raise wh.fail(path, "path is longer than 4096 characters")
    if not globs and _GLOB_CHARS & set(value):
        raise wh.fail(path, f"{value!r}: wildcards are not allowed here")
    for part in value.split("/"):
        if "**" in part and part != "**":
            raise wh.fail(path, f"{value!r}: '**' must be a whole path component")
    return value


def _fs_entry(wh: _Where, raw: Any, path: str, mode: str | None = None) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = {"path": raw, "mode": mode or "ro"}
    if not isinstance(raw, Mapping):
        raise wh.fail(path, "expected a path string or a table {path, mode, base, optional}")
    wh.keys(raw, ("path", "mode", "base", "optional"), path)
    value = check_path(wh, raw.get("path"), f"{path}.path", globs=True)
    base = raw.get("base", "skill")
    if value.startswith("workspace:") and "base" not in raw:
        value, base = value[len("workspace:") :] or ".", "workspace"
    if base not in FS_BASES:
        raise wh.fail(f"{path}.base", f"{base!r} is not one of {', '.join(FS_BASES)}")
    m = raw.get("mode", mode or "ro")
    if m not in FS_MODES:
        raise wh.fail(f"{path}.mode", f"{m!r} is not one of ro, rw")
    return {
        "path": value,
        "mode": m,
        "base": base,
        "optional": wh.flag(raw.get("optional", False), f"{path}.optional"),
    }


def _fs(wh: _Where, raw: Any, path: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    if isinstance(raw, Mapping):
        # Shorthand: fs = { ro = ["data"], rw = ["out"] }
        wh.keys(raw, FS_MODES, path)
        for mode in FS_MODES:
            for i, item in enumerate(wh.str_list(raw.get(mode, []), f"{path}.{mode}", "paths")):
                entries.append(_fs_entry(wh, item, f"{path}.{mode}[{i}]", mode))
    elif isinstance(raw, list):
        if len(raw) > MAX_ITEMS:
            raise wh.fail(path, f"{len(raw)} entries; at most {MAX_ITEMS} are allowed")
        for i, item in enumerate(raw):
            entries.append(_fs_entry(wh, item, f"{path}[{i}]"))
    else:
        raise wh.fail(
            path, "expected a list of {path, mode} tables or a table {ro = [...], rw = [...]}"
        )
    return entries


def _host_pattern(wh: _Where, value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise wh.fail(path, "expected a host name, a wildcard like '*.example.com', or an IP")
    host = value.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError as exc:
        raise wh.fail(path, f"{value!r} is not a valid host name") from exc
    if not _HOST_RE.match(host) or len(host) > 253:
        raise wh.fail(
            path,
            f"{value!r} is not a host name; use 'api.example.com', '*.example.com', "
            "an IP address, or '*' for any host",
        )
    return host


def _methods(wh: _Where, raw: Any, path: str) -> list[str]:
    out = []
    for i, m in enumerate(wh.str_list(raw, path, "HTTP methods")):
        upper = m.upper()
        if upper not in HTTP_METHODS:
            raise wh.fail(f"{path}[{i}]", f"{m!r} is not one of {', '.join(HTTP_METHODS)}")
        if upper not in out:
            out.append(upper)
    return out


def _ports(wh: _Where, raw: Any, path: str) -> list[int] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise wh.fail(path, "expected a non-empty list of port numbers")
    for i, p in enumerate(raw):
        if isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536:
            raise wh.fail(f"{path}[{i}]", f"{p!r} is not a port number (1-65535)")
    return sorted(set(raw))


def _http(wh: _Where, raw: Any, path: str) -> tuple[dict[str, Any], bool]:
    if isinstance(raw, list):
        raw = {"hosts": raw}
    if not isinstance(raw, Mapping):
        raise wh.fail(path, "expected a list of hosts or a table {hosts = [...], ...}")
    wh.keys(
        raw,
        (
            "hosts",
            "methods",
            "max_response_bytes",
            "timeout_sec",
            "allow_private",
            "allow_loopback",
            "optional",
        ),
        path,
    )
    default_methods = (
        _methods(wh, raw["methods"], f"{path}.methods") if "methods" in raw else list(HTTP_METHODS)
    )
    hosts_raw = raw.get("hosts", [])
    if not isinstance(hosts_raw, list) or len(hosts_raw) > MAX_ITEMS:
        raise wh.fail(f"{path}.hosts", f"expected a list of at most {MAX_ITEMS} hosts")
    hosts = []
    for i, item in enumerate(hosts_raw):
        hp = f"{path}.hosts[{i}]"
        if isinstance(item, str):
            item = {"host": item}
        if not isinstance(item, Mapping):
            raise wh.fail(hp, "expected a host string or a table {host, methods, ports}")
        wh.keys(item, ("host", "methods", "ports"), hp)
        hosts.append(
            {
                "host": _host_pattern(wh, item.get("host"), f"{hp}.host"),
                "methods": (
                    _methods(wh, item["methods"], f"{hp}.methods")
                    if "methods" in item
                    else list(default_methods)
                ),
                "ports": _ports(wh, item.get("ports"), f"{hp}.ports"),
            }
        )
    out = {
        "hosts": hosts,
        "max_response_bytes": wh.number(
            raw.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES),
            f"{path}.max_response_bytes",
            cap=MAX_HTTP_RESPONSE_BYTES,
            integer=True,
        ),
        "timeout_sec": wh.number(
            raw.get("timeout_sec", DEFAULT_HTTP_TIMEOUT_SEC),
            f"{path}.timeout_sec",
            cap=MAX_TIMEOUT_SEC,
        ),
        "allow_private": wh.flag(raw.get("allow_private", False), f"{path}.allow_private"),
        "allow_loopback": wh.flag(raw.get("allow_loopback", False), f"{path}.allow_loopback"),
    }
    return out, wh.flag(raw.get("optional", False), f"{path}.optional")


def _shell(wh: _Where, raw: Any, path: str) -> tuple[dict[str, Any], bool]:
    if isinstance(raw, list):
        raw = {"programs": raw}
    if not isinstance(raw, Mapping):
        raise wh.fail(path, "expected a list of programs or a table {programs = [...], ...}")
    wh.keys(raw, ("programs", "cwd", "timeout_sec", "max_output_bytes", "optional"), path)
    programs = []
    for i, prog in enumerate(wh.str_list(raw.get("programs", []), f"{path}.programs", "programs")):
        pp = f"{path}.programs[{i}]"
        if prog.startswith("/"):
            check_path(wh, prog, pp, globs=False)
            if "/../" in prog or prog.endswith("/..") or "/./" in prog:
                raise wh.fail(pp, f"{prog!r}: use a normalised absolute path")
        elif not _PROGRAM_RE.match(prog):
            raise wh.fail(
                pp,
                f"{prog!r} is not a program name; give a bare name found on PATH (like 'git') "
                "or an absolute path, never a command line",
            )
        if prog not in programs:
            programs.append(prog)
    cwd = raw.get("cwd", ["."])
    if isinstance(cwd, str):
        cwd = [cwd]
    cwds = [
        check_path(wh, c, f"{path}.cwd[{i}]", globs=False)
        for i, c in enumerate(wh.str_list(cwd, f"{path}.cwd", "directories"))
    ]
    out = {
        "programs": programs,
        "cwd": cwds,
        "timeout_sec": wh.number(
            raw.get("timeout_sec", DEFAULT_SHELL_TIMEOUT_SEC),
            f"{path}.timeout_sec",
            cap=MAX_TIMEOUT_SEC,
        ),
        "max_output_bytes": wh.number(
            raw.get("max_output_bytes", DEFAULT_SHELL_OUTPUT_BYTES),
            f"{path}.max_output_bytes",
            cap=MAX_SHELL_OUTPUT_BYTES,
            integer=True,
        ),
    }
    return out, wh.flag(raw.get("optional", False), f"{path}.optional")


def _models(wh: _Where, raw: Any, path: str) -> tuple[list[str], bool]:
    if isinstance(raw, Mapping):
        wh.keys(raw, ("embed", "llm", "optional"), path)
        kinds = [k for k in MODEL_KINDS if wh.flag(raw.get(k, False), f"{path}.{k}")]
        return kinds, wh.flag(raw.get("optional", False), f"{path}.optional")
    kinds = []
    for i, k in enumerate(wh.str_list(raw, path, "model kinds")):
        if k not in MODEL_KINDS:
            raise wh.fail(f"{path}[{i}]", f"{k!r} is not one of embed, llm")
        if k not in kinds:
            kinds.append(k)
    return kinds, False


def parse_permissions(
    raw: Mapping[str, Any], *, file: str, path: str = "permissions"
) -> dict[str, Any]:
    """Validate a ``[permissions]`` table completely and return its normalised form."""
    wh = _Where(file)
    if not isinstance(raw, Mapping):
        raise wh.fail(path, f"expected a table, got {type(raw).__name__}")
    wh.keys(raw, (*KINDS, "optional"), path)
    out: dict[str, Any] = {}
    optional: list[str] = []
    for kind in wh.str_list(raw.get("optional", []), f"{path}.optional", "permission kinds"):
        if kind not in KINDS or kind == "can_be_invoked_by":
            raise wh.fail(f"{path}.optional", f"{kind!r} is not a permission kind")
        optional.append(kind)
    for kind in KINDS:
        if kind not in raw:
            continue
        value = raw[kind]
        kp = f"{path}.{kind}"
        opt = False
        if kind == "fs":
            out["fs"] = _fs(wh, value, kp)
        elif kind == "http":
            out["http"], opt = _http(wh, value, kp)
        elif kind == "shell":
            out["shell"], opt = _shell(wh, value, kp)
        elif kind == "models":
            out["models"], opt = _models(wh, value, kp)
        elif kind == "env":
            value, opt = _unwrap(wh, value, kp, "names")
            out["env"] = wh.patterns(value, kp, _ENV_RE, "an environment variable name")
        elif kind == "tools":
            value, opt = _unwrap(wh, value, kp, "names")
            out["tools"] = wh.patterns(value, kp, _TOOL_RE, "a host tool name or glob")
        elif kind == "invoke":
            value, opt = _unwrap(wh, value, kp, "tools")
            out["invoke"] = wh.patterns(value, kp, _SKILL_PATTERN_RE, "a tool name or glob")
        else:
            out[kind] = wh.patterns(value, kp, _SKILL_PATTERN_RE, "a skill id or glob")
        if opt and kind not in optional:
            optional.append(kind)
    if optional:
        out["optional"] = sorted(optional)
    return out


__all__ = ["KINDS", "parse_permissions"]
