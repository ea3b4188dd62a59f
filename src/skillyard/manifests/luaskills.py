"""LuaSkills packages: ``skill.yaml`` + ``runtime/*.lua`` (see docs/lua.md).

::

    name: Notes                    # display title; the directory name is the skill id
    version: 1.0.0
    enable: true                   # false: the package loads with no tools
    debug: false                   # true: vulcan.runtime.log lines are kept at debug level
    description: Keep short notes
    help: {main: help/main.md, topics: [{name: usage, file: help/usage.md}]}
    entries:
      - name: add
        description: Add a note
        lua_entry: runtime/add.lua         # or lua_module: add  (-> runtime/add.lua)
        parameters:                        # or input_schema: {...} | input_schema_file: ...
          - {name: text, type: string, required: true, description: The note}
    config:
      - {name: folder, type: string, default: notes}
    permissions: {fs: [{path: ., mode: rw}]}   # skillyard extension; also limits, policy

Canonical tool names are ``{skill_id}-{entry}``; a second entry that maps to the
same name gets ``-2``, the next ``-3``. Validation is complete before anything
is returned and every error names the file and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from skillyard.card import Card, Limits, Policy
from skillyard.errors import ManifestError
from skillyard.manifests import (
    SkillPackage,
    check_skill_id,
    inside,
    package_digest,
    read_limited,
)
from skillyard.schema import schema_problem

MAX_ENTRIES = 256
MAX_PARAMETERS = 128
MAX_NODES = 20_000
MAX_DEPTH = 64
MAX_YAML_BYTES = 256 * 1024
MAX_SCHEMA_BYTES = 256 * 1024
ENTRY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
PARAM_TYPES = ("string", "integer", "number", "boolean", "array", "object")
CONFIG_TYPES = ("string", "integer", "number", "boolean", "json")

_TOP_KEYS = {
    "name",
    "version",
    "enable",
    "debug",
    "description",
    "help",
    "entries",
    "config",
    "permissions",
    "limits",
    "policy",
}
_ENTRY_KEYS = {
    "name",
    "description",
    "lua_entry",
    "lua_module",
    "parameters",
    "input_schema",
    "input_schema_file",
    "output_schema",
    "hidden",
    "limits",
    "policy",
    "isolation",
    "thread",
}
_PARAM_KEYS = {"name", "type", "description", "required", "default", "enum", "items"}
_CONFIG_KEYS = {"name", "key", "type", "default", "required", "sensitive", "description"}


class _Where:
    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, field: str, message: str) -> ManifestError:
        return ManifestError(message, file=self.file, field=field)

    def expect(self, value: Any, kind: type | tuple[type, ...], field: str, what: str) -> Any:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(field, f"expected {what}, got a boolean")
        if not isinstance(value, kinds):
            raise self.fail(field, f"expected {what}, got {type(value).__name__}")
        return value

    def keys(self, data: dict[str, Any], allowed: set[str], field: str) -> None:
        for key in data:
            if not isinstance(key, str) or key not in allowed:
                where = f"{field}.{key}" if field else str(key)
                raise self.fail(where, f"unknown key; allowed: {', '.join(sorted(allowed))}")


def _prescan(text: str, w: _Where) -> None:
    """Refuse documents nested deeper than MAX_DEPTH before a parser ever sees them."""
    depth = deepest = 0
    for ch in re.sub(r"'[^'\n]*'|\"(?:[^\"\\\n]|\\.)*\"", "", text):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    indent = max((len(line) - len(line.lstrip(" ")) for line in text.splitlines()), default=0)
    if deepest > MAX_DEPTH or indent > 4 * MAX_DEPTH:
        raise w.fail("(syntax)", f"YAML nested too deeply (more than {MAX_DEPTH} levels)")


def _parse_yaml(text: str, w: _Where) -> Any:
    import yaml

    _prescan(text, w)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    # Anchors and aliases let a small file expand into a huge tree; LuaSkills manifests
    # never need them, so they are refused outright, as are very large documents.
    try:
        for nodes, event in enumerate(yaml.parse(text, Loader=loader), 1):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise w.fail("(syntax)", "YAML anchors and aliases are not allowed")
            if nodes > MAX_NODES:
                raise w.fail("(syntax)", f"more than {MAX_NODES} YAML nodes")
        return yaml.load(text, Loader=loader)  # a SafeLoader (C or Python): plain data only
    except yaml.YAMLError as exc:
        raise w.fail("(syntax)", f"not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise w.fail("(syntax)", "YAML nested too deeply") from exc


def _text(value: Any, w: _Where, field: str, default: str = "") -> str:
    if value is None:
        return default
    return str(w.expect(value, str, field, "a string"))


def _flag(value: Any, w: _Where, field: str, default: bool) -> bool:
    if value is None:
        return default
    return bool(w.expect(value, bool, field, "true or false"))


def _version(value: Any, w: _Where) -> str:
    if value is None:
        return "0.0.0"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise w.fail("version", f"expected a version string, got {type(value).__name__}")
    return str(value)


def _schema_file(rel: Any, pkg: Path, w: _Where, field: str) -> dict[str, Any]:
    w.expect(rel, str, field, "a path to a JSON Schema file in the package")
    target = inside(pkg, rel, file=w.file, field_path=field)
    text = read_limited(target, limit=MAX_SCHEMA_BYTES, label=f"{w.file} -> {rel}")
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise w.fail(field, f"{rel!r} is not valid JSON: {exc}") from exc
    return _schema(data, w, field)


def _schema(data: Any, w: _Where, field: str) -> dict[str, Any]:
    w.expect(data, dict, field, "a JSON Schema object")
    problem = schema_problem(data)
    if problem:
        raise w.fail(field, f"not a valid JSON Schema: {problem}")
    return dict(data)


def _parameters(raw: Any, w: _Where, field: str) -> dict[str, Any]:
    w.expect(raw, list, field, "a list of parameters")
    if len(raw) > MAX_PARAMETERS:
        raise w.fail(field, f"{len(raw)} parameters; at most {MAX_PARAMETERS}")
    props: dict[str, Any] = {}
    required: list[str] = []
    for i, p in enumerate(raw):
        pf = f"{field}[{i}]"
        w.expect(p, dict, pf, "a parameter table")
        w.keys(p, _PARAM_KEYS, pf)
        name = w.expect(p.get("name"), str, f"{pf}.name", "a parameter name")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$", name) or name in props:
            raise w.fail(f"{pf}.name", f"{name!r} is not a valid, unique parameter name")
        ptype = p.get("type", "string")
        if ptype not in PARAM_TYPES:
            raise w.fail(f"{pf}.type", f"{ptype!r} is not one of {', '.join(PARAM_TYPES)}")
        prop: dict[str, Any] = {"type": ptype}
        if "description" in p:
            prop["description"] = _text(p["description"], w, f"{pf}.description")
        if "enum" in p:
            prop["enum"] = list(w.expect(p["enum"], list, f"{pf}.enum", "a list of values"))
        if "items" in p:
            prop["items"] = _schema(p["items"], w, f"{pf}.items")
        if "default" in p:
            prop["default"] = p["default"]
        if _flag(p.get("required"), w, f"{pf}.required", False):
            required.append(name)
        props[name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    problem = schema_problem(schema)
    if problem:
        raise w.fail(field, f"the parameters do not form a valid schema: {problem}")
    return schema


def _config(raw: Any, w: _Where) -> tuple[dict[str, Any], ...]:
    w.expect(raw, list, "config", "a list of config declarations")
    out = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        f = f"config[{i}]"
        w.expect(item, dict, f, "a table")
        w.keys(item, _CONFIG_KEYS, f)
        key = item.get("key", item.get("name"))
        w.expect(key, str, f"{f}.name", "a config key")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$", key) or key in seen:
            raise w.fail(f"{f}.name", f"{key!r} is not a valid, unique config key")
        seen.add(key)
        ctype = item.get("type", "string")
        if ctype not in CONFIG_TYPES:
            raise w.fail(f"{f}.type", f"{ctype!r} is not one of {', '.join(CONFIG_TYPES)}")
        out.append(
            {
                "key": key,
                "type": ctype,
                "default": item.get("default"),
                "required": _flag(item.get("required"), w, f"{f}.required", False),
                "sensitive": _flag(item.get("sensitive"), w, f"{f}.sensitive", False),
                "description": _text(item.get("description"), w, f"{f}.description"),
            }
        )
    return tuple(out)


def _help(raw: Any, pkg: Path, w: _Where) -> dict[str, Path]:
    if raw is None:
        return {}
    w.expect(raw, dict, "help", "a table with main and topics")
    w.keys(raw, {"main", "topics"}, "help")
    out: dict[str, Path] = {}
    if raw.get("main") is not None:
        out["main"] = _help_file(raw["main"], pkg, w, "help.main")
    topics = raw.get("topics") or []
    if isinstance(topics, dict):
        topics = [{"name": k, "file": v} for k, v in topics.items()]
    w.expect(topics, list, "help.topics", "a list of {name, file}")
    for i, t in enumerate(topics):
        f = f"help.topics[{i}]"
        w.expect(t, dict, f, "a table")
        w.keys(t, {"name", "file", "description"}, f)
        name = w.expect(t.get("name"), str, f"{f}.name", "a topic name")
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", name) or name in out:
            raise w.fail(f"{f}.name", f"{name!r} is not a valid, unique topic name")
        out[name] = _help_file(t.get("file"), pkg, w, f"{f}.file")
    return out


def _help_file(rel: Any, pkg: Path, w: _Where, field: str) -> Path:
    w.expect(rel, str, field, "a Markdown file in the package")
    target = inside(pkg, rel, file=w.file, field_path=field)
    if target.suffix.lower() != ".md" or not target.is_file():
        raise w.fail(field, f"{rel!r} must be a Markdown (.md) file")
    return target


def _lua_file(entry: dict[str, Any], pkg: Path, w: _Where, field: str) -> str:
    has_entry, has_module = "lua_entry" in entry, "lua_module" in entry
    if has_entry == has_module:
        raise w.fail(field, "give exactly one of lua_entry (a file) or lua_module (a module name)")
    if has_entry:
        rel = w.expect(entry["lua_entry"], str, f"{field}.lua_entry", "a .lua file path")
        target = inside(pkg, rel, file=w.file, field_path=f"{field}.lua_entry")
    else:
        mod = w.expect(entry["lua_module"], str, f"{field}.lua_module", "a module name")
        if not MODULE_RE.match(mod):
            raise w.fail(f"{field}.lua_module", f"{mod!r} is not a Lua module name")
        rel = "runtime/" + mod.replace(".", "/") + ".lua"
        target = inside(pkg, rel, file=w.file, field_path=f"{field}.lua_module")
    if target.suffix != ".lua" or not target.is_file():
        raise w.fail(field, f"{rel!r} must be a .lua file in the package")
    return target.relative_to(pkg.resolve()).as_posix()


def canonical_names(skill_id: str, entries: list[str]) -> list[str]:
    """``{skill_id}-{entry}`` for each entry, with ``-2``, ``-3``... on conflicts."""
    out: list[str] = []
    used: set[str] = set()
    for entry in entries:
        base = f"{skill_id}-{entry.lower().replace(' ', '-')}"
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        out.append(name)
    return out


def load(path: Path, *, root: str = "memory") -> SkillPackage:
    """Load and fully validate a LuaSkills ``skill.yaml`` package directory."""
    file = path / "skill.yaml"
    w = _Where(str(file))
    data = _parse_yaml(read_limited(file, limit=MAX_YAML_BYTES), w)
    w.expect(data, dict, "(document)", "a mapping at the top level")
    w.keys(data, _TOP_KEYS, "")
    skill_id = check_skill_id(path.name, file=w.file, field_path="(directory name)")
    title = _text(data.get("name"), w, "name", skill_id)
    version = _version(data.get("version"), w)
    enabled = _flag(data.get("enable"), w, "enable", True)
    debug = _flag(data.get("debug"), w, "debug", False)
    description = _text(data.get("description"), w, "description")
    help_map = _help(data.get("help"), path, w)
    config = _config(data.get("config") or [], w)
    permissions: dict[str, Any] = {}
    if data.get("permissions") is not None:
        from skillyard.manifests.native import _Ctx, _permissions

        permissions = _permissions(data["permissions"], _Ctx(w.file))
    limits = Limits.from_dict(data.get("limits") or {}, where=w.file)
    policy = Policy.from_dict(data.get("policy") or {}, where=w.file)
    entries = w.expect(data.get("entries"), list, "entries", "a list of entries")
    if not entries:
        raise w.fail("entries", "at least one entry is required")
    if len(entries) > MAX_ENTRIES:
        raise w.fail("entries", f"{len(entries)} entries; at most {MAX_ENTRIES}")

    parsed: list[dict[str, Any]] = []
    for i, e in enumerate(entries):
        f = f"entries[{i}]"
        w.expect(e, dict, f, "an entry table")
        w.keys(e, _ENTRY_KEYS, f)
        name = w.expect(e.get("name"), str, f"{f}.name", "an entry name")
        if not ENTRY_RE.match(name):
            raise w.fail(f"{f}.name", f"{name!r}: use letters, digits, '-', '_' and '.'")
        sources = [k for k in ("parameters", "input_schema", "input_schema_file") if k in e]
        if len(sources) > 1:
            raise w.fail(
                f, f"give only one of parameters, input_schema, input_schema_file; got {sources}"
            )
        if "parameters" in e:
            schema = _parameters(e["parameters"], w, f"{f}.parameters")
        elif "input_schema" in e:
            schema = _schema(e["input_schema"], w, f"{f}.input_schema")
        elif "input_schema_file" in e:
            schema = _schema_file(e["input_schema_file"], path, w, f"{f}.input_schema_file")
        else:
            schema = {"type": "object"}
        if schema.get("type", "object") != "object":
            raise w.fail(f, "the input schema must describe an object")
        isolation = e.get("isolation")
        if isolation is not None and isolation not in ("fresh", "warm"):
            raise w.fail(f"{f}.isolation", f"{isolation!r} is not one of fresh, warm")
        parsed.append(
            {
                "name": name,
                "file": _lua_file(e, path, w, f),
                "description": _text(e.get("description"), w, f"{f}.description"),
                "schema": schema,
                "output_schema": _schema(e["output_schema"], w, f"{f}.output_schema")
                if e.get("output_schema") is not None
                else None,
                "hidden": _flag(e.get("hidden"), w, f"{f}.hidden", False),
                "limits": Limits.from_dict(
                    e.get("limits") or {}, where=w.file, path=f"{f}.limits", base=limits
                ),
                "policy": Policy.from_dict(
                    e.get("policy") or {}, where=w.file, path=f"{f}.policy", base=policy
                ),
                "isolation": isolation,
                "thread": _flag(e.get("thread"), w, f"{f}.thread", False),
            }
        )

    digest = package_digest(path)
    names = canonical_names(skill_id, [p["name"] for p in parsed])
    cards: list[Card] = []
    if enabled:
        for p, tool in zip(parsed, names, strict=True):
            options: dict[str, Any] = {"format": "luaskills"}
            if debug:
                options["debug"] = True
            if p["isolation"]:
                options["isolation"] = p["isolation"]
            if p["thread"]:
                options["thread"] = True
            cards.append(
                Card(
                    id=skill_id,
                    name=tool,
                    method=tool[len(skill_id) + 1 :],
                    title=title,
                    description=p["description"],
                    version=version,
                    input_schema=p["schema"],
                    output_schema=p["output_schema"],
                    policy=p["policy"],
                    limits=p["limits"],
                    permissions=permissions,
                    hidden=p["hidden"],
                    transport="lua",
                    operation=p["file"],
                    options=options,
                    root=root,
                    source=str(path),
                    digest=digest,
                )
            )
    return SkillPackage(
        id=skill_id,
        version=version,
        description=description or title,
        runtime="lua",
        path=path,
        root=root,
        digest=digest,
        format="skill.yaml",
        cards=tuple(cards),
        permissions=permissions,
        config=config,
        help=help_map,
    )


def help_text(package: SkillPackage, topic: str = "main") -> str:
    """The Markdown of one help topic of a package (``main`` by default)."""
    target = package.help.get(topic)
    if target is None:
        known = ", ".join(sorted(package.help)) or "none"
        raise ManifestError(f"no help topic {topic!r}; topics: {known}", file=str(package.path))
    return read_limited(target)


__all__ = ["canonical_names", "help_text", "load"]
