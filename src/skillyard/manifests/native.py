"""skillyard's own manifest, ``skill.toml`` (see docs/skill-format.md)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import orjson

from skillyard.card import ROLES, Card, Limits, Policy
from skillyard.errors import ManifestError, PermissionDenied
from skillyard.manifests import (
    SkillPackage,
    check_skill_id,
    inside,
    package_digest,
    read_limited,
)
from skillyard.schema import schema_problem

RUNTIMES = ("python", "process", "lua", "wasm", "mcp")
PROCESS_MODES = ("json", "lines", "worker")
_PROCESS_OPTION_KEYS = {"mode", "env", "cwd", "concurrency", "spin_us", "handler"}
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
WASM_OPTIONS = ("warm", "thread", "private_callback")
PERMISSION_KINDS = ("fs", "http", "shell", "env", "models", "tools", "invoke", "can_be_invoked_by")
METHOD_RE = re.compile(r"^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$")
MAX_METHODS = 256
MAX_SCHEMA_BYTES = 256 * 1024

_TOP_KEYS = {
    "id",
    "version",
    "description",
    "title",
    "runtime",
    "entry",
    "permissions",
    "limits",
    "policy",
    "options",
    "config",
    "methods",
    "capabilities",
    "help",
}
_METHOD_KEYS = {
    "name",
    "description",
    "title",
    "roles",
    "input_schema",
    "output_schema",
    "policy",
    "limits",
    "hidden",
    "handler",
    "options",
    "capabilities",
}
_CONFIG_KEYS = {"key", "type", "default", "required", "sensitive", "description"}
_CONFIG_TYPES = ("string", "integer", "number", "boolean", "json")


class _Ctx:
    """Where errors point: the manifest file as the user named it."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, field_path: str, message: str) -> ManifestError:
        return ManifestError(message, file=self.file, field=field_path)

    def expect(self, value: Any, kind: type | tuple[type, ...], field_path: str, what: str) -> Any:
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.fail(field_path, f"expected {what}, got a boolean")
        if not isinstance(value, kind):
            raise self.fail(field_path, f"expected {what}, got {type(value).__name__}")
        return value

    def str_list(self, value: Any, field_path: str) -> tuple[str, ...]:
        self.expect(value, list, field_path, "a list of strings")
        for i, item in enumerate(value):
            self.expect(item, str, f"{field_path}[{i}]", "a string")
        return tuple(value)


def _schema(raw: Any, pkg: Path, cx: _Ctx, field_path: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        target = inside(pkg, raw, file=cx.file, field_path=field_path)
        schemas_dir = (pkg.resolve() / "schemas").resolve()
        if schemas_dir not in target.parents:
            raise cx.fail(field_path, f"{raw!r}: schema files must live under schemas/")
        text = read_limited(target, limit=MAX_SCHEMA_BYTES, label=f"{cx.file} -> {raw}")
        try:
            raw = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise cx.fail(field_path, f"{raw!r} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise cx.fail(field_path, "expected an inline JSON Schema table or a path under schemas/")
    problem = schema_problem(raw)
    if problem:
        raise cx.fail(field_path, f"not a valid JSON Schema: {problem}")
    return raw


def _permissions(raw: Any, cx: _Ctx) -> dict[str, Any]:
    cx.expect(raw, dict, "permissions", "a table")
    for key in raw:
        if key not in PERMISSION_KINDS:
            raise cx.fail(
                f"permissions.{key}",
                f"unknown permission kind; allowed: {', '.join(PERMISSION_KINDS)}",
            )
    try:
        from skillyard.host.permissions import parse_permissions
    except ImportError:  # the host API is an optional layer of the runtime
        return dict(raw)
    return parse_permissions(raw, file=cx.file)


def _config_decls(raw: Any, cx: _Ctx) -> tuple[dict[str, Any], ...]:
    cx.expect(raw, list, "config", "an array of tables ([[config]])")
    out = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        path = f"config[{i}]"
        cx.expect(item, dict, path, "a table")
        unknown = sorted(set(item) - _CONFIG_KEYS)
        if unknown:
            raise cx.fail(
                f"{path}.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(_CONFIG_KEYS))}"
            )
        key = cx.expect(item.get("key"), str, f"{path}.key", "a string")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$", key) or key in seen:
            raise cx.fail(f"{path}.key", f"{key!r} is not a valid, unique config key")
        seen.add(key)
        ctype = item.get("type", "string")
        if ctype not in _CONFIG_TYPES:
            raise cx.fail(f"{path}.type", f"{ctype!r} is not one of {', '.join(_CONFIG_TYPES)}")
        for flag in ("required", "sensitive"):
            cx.expect(item.get(flag, False), bool, f"{path}.{flag}", "true or false")
        out.append(
            {
                "key": key,
                "type": ctype,
                "default": item.get("default"),
                "required": item.get("required", False),
                "sensitive": item.get("sensitive", False),
                "description": item.get("description", ""),
            }
        )
    return tuple(out)


def _entry(runtime: str, raw: Any, pkg: Path, cx: _Ctx) -> str:
    if runtime == "python":
        cx.expect(raw, str, "entry", "a Python file in the package, e.g. 'skill.py'")
        target = inside(pkg, raw, file=cx.file, field_path="entry")
        if target.suffix != ".py" or not target.is_file():
            raise cx.fail("entry", f"{raw!r} must be a .py file in the package")
        return raw
    if runtime == "process":
        if isinstance(raw, str):
            try:
                argv = shlex.split(raw)
            except ValueError as exc:
                raise cx.fail("entry", f"cannot split command: {exc}") from exc
        else:
            argv = list(cx.str_list(raw, "entry"))
        if not argv:
            raise cx.fail("entry", "the command is empty")
        for i, arg in enumerate(argv):
            if "\0" in arg:
                raise cx.fail(f"entry[{i}]", "NUL byte in command")
        # Files the command names inside the package must stay inside it.
        for i, arg in enumerate(argv[:2]):
            if arg.startswith(("./", "../")) or (i == 1 and arg.endswith((".py", ".js", ".sh"))):
                inside(pkg, arg, file=cx.file, field_path=f"entry[{i}]")
        return orjson.dumps(argv).decode()
    if runtime == "lua":
        cx.expect(raw, str, "entry", "a Lua file in the package, e.g. 'skill.lua'")
        target = inside(pkg, raw, file=cx.file, field_path="entry")
        if target.suffix != ".lua" or not target.is_file():
            raise cx.fail("entry", f"{raw!r} must be a .lua file in the package")
        return raw
    if raw is None:
        return ""
    cx.expect(raw, str, "entry", "a string")
    if runtime == "wasm":
        inside(pkg, raw, file=cx.file, field_path="entry")
    return raw


def _options(
    runtime: str, raw: Any, cx: _Ctx, path: str, pkg: Path | None = None
) -> dict[str, Any]:
    cx.expect(raw, dict, path, "a table")
    if runtime == "wasm":
        for key, value in raw.items():
            if key not in WASM_OPTIONS:
                raise cx.fail(
                    f"{path}.{key}", f"unknown wasm option; allowed: {', '.join(WASM_OPTIONS)}"
                )
            cx.expect(value, bool, f"{path}.{key}", "true or false")
    if runtime == "process":
        unknown = sorted(set(raw) - _PROCESS_OPTION_KEYS)
        if unknown:
            raise cx.fail(
                f"{path}.{unknown[0]}",
                f"unknown process option; allowed: {', '.join(sorted(_PROCESS_OPTION_KEYS))}",
            )
        mode = raw.get("mode", "json")
        if mode not in PROCESS_MODES:
            raise cx.fail(f"{path}.mode", f"{mode!r} is not one of {', '.join(PROCESS_MODES)}")
        if "env" in raw:
            for i, name in enumerate(cx.str_list(raw["env"], f"{path}.env")):
                if not ENV_NAME_RE.match(name):
                    raise cx.fail(
                        f"{path}.env[{i}]", f"{name!r} is not an environment variable name"
                    )
        if "cwd" in raw:
            cx.expect(raw["cwd"], str, f"{path}.cwd", "a directory inside the package")
            if pkg is not None:
                target = inside(pkg, raw["cwd"], file=cx.file, field_path=f"{path}.cwd")
                if not target.is_dir():
                    raise cx.fail(f"{path}.cwd", f"{raw['cwd']!r} is not a directory")
        if "concurrency" in raw:
            n = cx.expect(raw["concurrency"], int, f"{path}.concurrency", "a whole number")
            if not 1 <= n <= 1024:
                raise cx.fail(f"{path}.concurrency", f"{n} is not between 1 and 1024")
        if "spin_us" in raw:
            n = cx.expect(raw["spin_us"], int, f"{path}.spin_us", "a whole number of microseconds")
            if not 0 <= n <= 100_000:
                raise cx.fail(f"{path}.spin_us", f"{n} is not between 0 and 100000")
        if "handler" in raw:
            cx.expect(raw["handler"], str, f"{path}.handler", "a method name")
    return dict(raw)


def _wasm_described(
    path: Path, entry: str, permissions: dict[str, Any], cx: _Ctx
) -> dict[str, Any]:
    """Ask the module for its descriptor and check its requirements against the permissions."""
    if not entry:
        raise cx.fail("entry", "a wasm skill needs entry = 'skill.wasm' (a module in the package)")
    try:
        from skillyard.transports.wasm import abi
        from skillyard.transports.wasm import describe as wasm_describe
    except ImportError as exc:
        raise cx.fail(
            "runtime",
            f"wasm skills need wasmtime and msgpack: pip install 'skillyard[wasm]' ({exc})",
        ) from exc
    described = wasm_describe(path / entry)
    unmet = abi.unmet_requirements(described, permissions, skill_dir=str(path.resolve()))
    if unmet:
        raise PermissionDenied(
            f"{cx.file}: not loaded: {entry} {'; '.join(unmet)}; grant it under [permissions] "
            "or remove the requirement from the module"
        )
    return described


def _wasm_methods(described: dict[str, Any]) -> list[dict[str, Any]]:
    """[[methods]] tables built from a wasm descriptor (then validated like written ones)."""
    out = []
    for m in described["methods"]:
        table: dict[str, Any] = {
            "name": m["name"],
            "description": m["description"],
            "input_schema": m["input_schema"],
            "hidden": m["mcp_hidden"] or m["private_callback"],
        }
        if m["private_callback"]:
            table["options"] = {"private_callback": True}
        out.append(table)
    return out


def load(path: Path, *, root: str = "memory") -> SkillPackage:
    """Load and fully validate a ``skill.toml`` package directory."""
    file = path / "skill.toml"
    cx = _Ctx(str(file))
    text = read_limited(file)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise cx.fail("(syntax)", f"not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise cx.fail(unknown[0], f"unknown key; allowed keys are {', '.join(sorted(_TOP_KEYS))}")

    skill_id = check_skill_id(path.name, file=cx.file, field_path="(directory name)")
    if "id" in data and data["id"] != skill_id:
        raise cx.fail("id", f"{data['id']!r} must equal the directory name {skill_id!r}")
    version_given = "version" in data
    version = cx.expect(data.get("version", "0.0.0"), str, "version", "a version string")
    description = cx.expect(data.get("description", ""), str, "description", "a string")
    runtime = data.get("runtime")
    if runtime not in RUNTIMES:
        raise cx.fail("runtime", f"{runtime!r} is not one of {', '.join(RUNTIMES)}")
    entry = _entry(runtime, data.get("entry"), path, cx)
    permissions = _permissions(data.get("permissions", {}), cx)
    limits = Limits.from_dict(data.get("limits", {}), where=cx.file)
    policy = Policy.from_dict(data.get("policy", {}), where=cx.file)
    options = _options(runtime, data.get("options", {}), cx, "options", path)
    capabilities = cx.str_list(data.get("capabilities", []), "capabilities")
    config = _config_decls(data.get("config", []), cx)
    help_map: dict[str, Path] = {}
    help_raw = cx.expect(data.get("help", {}), dict, "help", "a table of topic = 'file.md'")
    for topic, rel in help_raw.items():
        help_map[str(topic)] = inside(path, rel, file=cx.file, field_path=f"help.{topic}")

    methods = cx.expect(
        data.get("methods", []), list, "methods", "an array of tables ([[methods]])"
    )
    if not methods and runtime not in ("wasm", "mcp"):
        raise cx.fail("methods", "at least one [[methods]] entry is required")
    if runtime == "wasm":
        described = _wasm_described(path, entry, permissions, cx)
        if not version_given:
            version = described["skill_version"] or version
        if not description:
            description = described["description"]
        if not methods:
            methods = _wasm_methods(described)
        if not methods:
            raise cx.fail("methods", f"{entry} describes no methods and skill.toml declares none")
    if len(methods) > MAX_METHODS:
        raise cx.fail("methods", f"{len(methods)} methods; at most {MAX_METHODS} are allowed")

    digest = package_digest(path)
    cards: list[Card] = []
    seen: set[str] = set()
    for i, m in enumerate(methods):
        mp = f"methods[{i}]"
        cx.expect(m, dict, mp, "a table")
        bad = sorted(set(m) - _METHOD_KEYS)
        if bad:
            raise cx.fail(
                f"{mp}.{bad[0]}", f"unknown key; allowed keys are {', '.join(sorted(_METHOD_KEYS))}"
            )
        name = cx.expect(m.get("name"), str, f"{mp}.name", "a method name")
        if not METHOD_RE.match(name) or len(name) > 64:
            raise cx.fail(f"{mp}.name", f"{name!r}: use lower-case letters, digits, '-' and '_'")
        if name in seen:
            raise cx.fail(f"{mp}.name", f"method {name!r} is declared twice")
        seen.add(name)
        roles = cx.str_list(m.get("roles", ["tool"]), f"{mp}.roles")
        for j, role in enumerate(roles):
            if role not in ROLES:
                raise cx.fail(f"{mp}.roles[{j}]", f"{role!r} is not one of {', '.join(ROLES)}")
        input_schema = _schema(m.get("input_schema"), path, cx, f"{mp}.input_schema") or {
            "type": "object"
        }
        if input_schema.get("type", "object") != "object":
            raise cx.fail(f"{mp}.input_schema", "the input schema must describe an object")
        output_schema = _schema(m.get("output_schema"), path, cx, f"{mp}.output_schema")
        hidden = cx.expect(m.get("hidden", False), bool, f"{mp}.hidden", "true or false")
        operation = entry
        if runtime in ("python", "lua"):
            handler = cx.expect(
                m.get("handler", name.replace("-", "_")), str, f"{mp}.handler", "a name"
            )
            if not handler.isidentifier():
                raise cx.fail(f"{mp}.handler", f"{handler!r} is not an identifier")
            operation = f"{entry}:{handler}"
        elif "handler" in m and runtime != "process":
            operation = cx.expect(m["handler"], str, f"{mp}.handler", "a string")
        method_options = dict(options)
        if runtime == "process" and "handler" in m:
            # The worker method name to send; the command stays the package's entry.
            method_options["handler"] = cx.expect(m["handler"], str, f"{mp}.handler", "a name")
        method_options.update(_options(runtime, m.get("options", {}), cx, f"{mp}.options", path))
        cards.append(
            Card(
                id=skill_id,
                name=f"{skill_id}-{name}",
                method=name,
                title=cx.expect(m.get("title", ""), str, f"{mp}.title", "a string"),
                description=cx.expect(
                    m.get("description", ""), str, f"{mp}.description", "a string"
                ),
                version=version,
                roles=roles,
                input_schema=input_schema,
                output_schema=output_schema,
                capabilities=capabilities
                + cx.str_list(m.get("capabilities", []), f"{mp}.capabilities"),
                policy=Policy.from_dict(
                    m.get("policy", {}), where=cx.file, path=f"{mp}.policy", base=policy
                ),
                limits=Limits.from_dict(
                    m.get("limits", {}), where=cx.file, path=f"{mp}.limits", base=limits
                ),
                permissions=permissions,
                hidden=hidden,
                transport=runtime,
                operation=operation,
                options=method_options,
                root=root,
                source=str(path),
                digest=digest,
            )
        )
    return SkillPackage(
        id=skill_id,
        version=version,
        description=description,
        runtime=runtime,
        path=path,
        root=root,
        digest=digest,
        format="skill.toml",
        cards=tuple(cards),
        permissions=permissions,
        config=config,
        help=help_map,
    )
