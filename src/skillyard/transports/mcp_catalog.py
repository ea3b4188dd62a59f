"""MCP servers as skills: where their specs come from, and how their tools become cards.

A server is named by a ``skill.toml`` with ``runtime = "mcp"`` (``[options]``:
``command`` + ``args`` for stdio, or ``url`` for streamable HTTP; ``env`` and
``headers`` whose values may say ``${config:KEY}`` or ``${env:NAME}``) or by a
runtime config entry ``[mcp.servers.NAME]`` with the same keys.

Discovery: a server's tool list is cached in the runtime store (table
``mcp_tools``), keyed by the spec (never by secret values). Loading a runtime
reads the cache; a server with no cached list is listed once, in a worker
thread, when it is registered. ``skillyard mcp list --refresh`` (and a server's
``notifications/tools/list_changed``) list it again and replace its cards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from skillyard.card import Card, Limits, Policy
from skillyard.errors import ConfigError, SkillyardError

if TYPE_CHECKING:
    from skillyard.manifests import SkillPackage
    from skillyard.runtime import Runtime

_PLACEHOLDER = re.compile(r"\$\{(config|env):([A-Za-z_][A-Za-z0-9_.-]*)\}")
_TOOL_BAD = re.compile(r"[^A-Za-z0-9_.-]")
_SPEC_KEYS = {"command", "args", "url", "env", "headers", "cwd", "timeout_sec", "startup_sec"}
DISCOVERY_TIMEOUT_SEC = 60.0


@dataclass(frozen=True, kw_only=True)
class ServerSpec:
    """How to reach one MCP server; ``env``/``headers`` hold unresolved templates."""

    name: str
    command: tuple[str, ...] = ()
    url: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    startup_sec: float = 30.0
    config: Any = field(default_factory=dict)  # ``.get(key)``: values for ${config:KEY}
    where: str = ""

    @classmethod
    def parse(
        cls, name: str, raw: Mapping[str, Any], *, where: str, config: Any = None
    ) -> ServerSpec:
        """Validate a server table (package ``[options]`` or ``[mcp.servers.NAME]``)."""
        unknown = sorted(set(raw) - _SPEC_KEYS)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_SPEC_KEYS))}"
            )
        command = raw.get("command")
        url = raw.get("url")
        if (command is None) == (url is None):
            raise ConfigError(
                f"{where}: give exactly one of command (a stdio server) or url (streamable HTTP)"
            )
        argv: list[str] = []
        if command is not None:
            if isinstance(command, str):
                argv = shlex.split(command)
            elif isinstance(command, list) and all(isinstance(a, str) for a in command):
                argv = list(command)
            else:
                raise ConfigError(f"{where}: command must be a string or a list of strings")
            args = raw.get("args", [])
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                raise ConfigError(f"{where}: args must be a list of strings")
            argv += args
            if not argv or any("\0" in a for a in argv):
                raise ConfigError(f"{where}: command is empty or holds a NUL byte")
        elif not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: url must be an http:// or https:// URL")
        tables: dict[str, dict[str, str]] = {}
        for key in ("env", "headers"):
            table = raw.get(key, {})
            if not isinstance(table, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in table.items()
            ):
                raise ConfigError(f"{where}: {key} must be a table of string values")
            tables[key] = dict(table)
        cwd = raw.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise ConfigError(f"{where}: cwd must be a path")
        startup = raw.get("startup_sec", 30.0)
        if isinstance(startup, bool) or not isinstance(startup, int | float) or startup <= 0:
            raise ConfigError(f"{where}: startup_sec must be a positive number")
        return cls(
            name=name,
            command=tuple(argv),
            url=url,
            env=tables["env"],
            headers=tables["headers"],
            cwd=cwd,
            startup_sec=float(startup),
            config=config if config is not None else {},
            where=where,
        )

    def key(self, digest: str = "") -> str:
        """A cache key over what identifies the server (no env or header values)."""
        ident = [self.command, self.url, self.cwd, sorted(self.env), sorted(self.headers), digest]
        return hashlib.sha256(orjson.dumps(ident)).hexdigest()[:32]

    def resolve(self, values: Mapping[str, str]) -> dict[str, str]:
        """Fill ``${config:KEY}`` / ``${env:NAME}`` placeholders (errors name keys, never values)."""
        out = {}
        for name, template in values.items():

            def sub(m: re.Match[str], name: str = name) -> str:
                kind, key = m.group(1), m.group(2)
                value = os.environ.get(key) if kind == "env" else self.config.get(key)
                if value is None:
                    raise ConfigError(
                        f"{self.where}: {name} needs {kind} value {key!r}, which is not set"
                        + (
                            f"; set it with `skillyard config set {self.name} {key} ...`"
                            if kind == "config"
                            else ""
                        )
                    )
                return str(value)

            out[name] = _PLACEHOLDER.sub(sub, template)
        return out


class ConfigView:
    """Per-skill config values, read when a placeholder needs one (never cached, never logged).

    Order: ``skillyard config set`` (the host API's store), then ``[skills.ID.config]`` in
    config.toml, then the package's ``[[config]]`` default.
    """

    def __init__(self, runtime: Runtime, skill_id: str, pkg: SkillPackage | None) -> None:
        self._runtime = runtime
        self._skill = skill_id
        self._decls = {d["key"]: d for d in pkg.config} if pkg is not None else {}

    def get(self, key: str) -> Any:
        try:
            from skillyard.host.config import ConfigStore
        except ImportError:  # the host API is an optional layer
            stored = None
        else:
            try:
                stored = ConfigStore(self._runtime.store).get(self._skill, self._decls or None, key)
            except SkillyardError:
                stored = None
        if stored is not None:
            return stored
        section = ((self._runtime.config.get("skills") or {}).get(self._skill) or {}).get(
            "config"
        ) or {}
        if isinstance(section, Mapping) and section.get(key) is not None:
            return section[key]
        return (self._decls.get(key) or {}).get("default")


def config_values(runtime: Runtime, skill_id: str, pkg: SkillPackage | None) -> ConfigView:
    """The config values ``${config:KEY}`` placeholders of ``skill_id`` read from."""
    return ConfigView(runtime, skill_id, pkg)


def spec_for(runtime: Runtime, skill_id: str) -> ServerSpec:
    """The server spec behind a skill id: its package first, then ``[mcp.servers]``."""
    pkg = runtime.packages.get(skill_id)
    if pkg is not None and pkg.runtime == "mcp":
        return ServerSpec.parse(
            skill_id,
            _package_options(pkg),
            where=f"{pkg.path / 'skill.toml'}: options",
            config=config_values(runtime, skill_id, pkg),
        )
    servers = (runtime.config.get("mcp") or {}).get("servers") or {}
    raw = servers.get(skill_id) if isinstance(servers, Mapping) else None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"no MCP server is configured for {skill_id!r}")
    return ServerSpec.parse(
        skill_id,
        raw,
        where=f"config [mcp.servers.{skill_id}]",
        config=config_values(runtime, skill_id, None),
    )


def _package_options(pkg: SkillPackage) -> dict[str, Any]:
    import tomllib

    data = tomllib.loads((pkg.path / "skill.toml").read_text(encoding="utf-8"))
    options = data.get("options", {})
    return dict(options) if isinstance(options, Mapping) else {}


# -- the cache -------------------------------------------------------------------------

_MIGRATIONS = [
    "CREATE TABLE mcp_tools (server TEXT PRIMARY KEY, spec_key TEXT NOT NULL, "
    "tools TEXT NOT NULL, fetched_at REAL NOT NULL)"
]


def cached_tools(runtime: Runtime, server: str, spec_key: str) -> list[dict[str, Any]] | None:
    runtime.store.migrate("mcp", _MIGRATIONS)
    rows = runtime.store.query(
        "SELECT tools FROM mcp_tools WHERE server=? AND spec_key=?", (server, spec_key)
    )
    if not rows:
        return None
    tools: list[dict[str, Any]] = orjson.loads(rows[0][0])
    return tools


def store_tools(runtime: Runtime, server: str, spec_key: str, tools: list[dict[str, Any]]) -> None:
    runtime.store.migrate("mcp", _MIGRATIONS)
    with runtime.store.transaction() as c:
        c.execute(
            "INSERT INTO mcp_tools(server, spec_key, tools, fetched_at) VALUES(?, ?, ?, ?) "
            "ON CONFLICT(server) DO UPDATE SET spec_key=excluded.spec_key, "
            "tools=excluded.tools, fetched_at=excluded.fetched_at",
            (server, spec_key, orjson.dumps(tools).decode(), time.time()),
        )


# -- tools -> cards ----------------------------------------------------------------------


def card_name(skill_id: str, tool: str) -> str:
    return f"{skill_id}-{_TOOL_BAD.sub('_', tool)}"


def make_cards(
    skill_id: str, tools: list[dict[str, Any]], pkg: SkillPackage | None, root: str
) -> tuple[Card, ...]:
    """Cards ``{skill_id}-{tool}`` from a server's tool list (schemas and annotations kept)."""
    base_limits = Limits()
    base_policy = Policy()
    version, digest, source, permissions = "0.0.0", "", None, {}
    if pkg is not None:
        template = next(iter(pkg.cards), None)
        version, digest, source = pkg.version, pkg.digest, str(pkg.path)
        permissions = dict(pkg.permissions)
        base_limits, base_policy = _package_defaults(pkg)
        if template is not None:
            base_limits, base_policy = template.limits, template.policy
    cards = []
    for tool in sorted(tools, key=lambda t: str(t.get("name"))):
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            continue
        schema = tool.get("inputSchema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            schema = {"type": "object"}
        out = tool.get("outputSchema")
        annotations = tool.get("annotations") if isinstance(tool.get("annotations"), dict) else {}
        cards.append(
            Card(
                id=skill_id,
                name=card_name(skill_id, name),
                method=name,
                title=str(tool.get("title") or (annotations or {}).get("title") or ""),
                description=str(tool.get("description") or ""),
                version=version,
                input_schema=schema,
                output_schema=out if isinstance(out, dict) else None,
                policy=base_policy,
                limits=base_limits,
                permissions=permissions,
                transport="mcp",
                operation=name,
                options={"server": skill_id, "annotations": dict(annotations or {})},
                root=root,
                source=source,
                digest=digest,
            )
        )
    return tuple(cards)


def _package_defaults(pkg: SkillPackage) -> tuple[Limits, Policy]:
    import tomllib

    data = tomllib.loads((pkg.path / "skill.toml").read_text(encoding="utf-8"))
    where = str(pkg.path / "skill.toml")
    return (
        Limits.from_dict(data.get("limits", {}), where=where),
        Policy.from_dict(data.get("policy", {}), where=where),
    )


def apply_tools(runtime: Runtime, skill_id: str, tools: list[dict[str, Any]]) -> tuple[Card, ...]:
    """Replace the cards of ``skill_id`` with cards for ``tools`` (package or config server)."""
    pkg = runtime.packages.get(skill_id)
    if pkg is not None and pkg.runtime == "mcp":
        cards = make_cards(skill_id, tools, pkg, pkg.root)
        for old in pkg.cards:
            runtime.remove_card(old.name)
        runtime.packages[skill_id] = dataclasses.replace(pkg, cards=cards)
        for card in cards:
            runtime.add_card(card)
        return cards
    for old in runtime.list(caller=_system(), include_hidden=True):
        if old.id == skill_id and old.transport == "mcp":
            runtime.remove_card(old.name)
    cards = make_cards(skill_id, tools, None, "user")
    for card in cards:
        runtime.add_card(card)
    return cards


def _system() -> Any:
    from skillyard.transports.base import SYSTEM

    return SYSTEM


def list_server_tools(
    spec: ServerSpec, timeout: float = DISCOVERY_TIMEOUT_SEC
) -> list[dict[str, Any]]:
    """Connect once, list every tool (all pages), disconnect; runs in its own thread and loop."""
    import asyncio
    import concurrent.futures

    from skillyard.transports.mcp import open_link

    async def go() -> list[dict[str, Any]]:
        link = await open_link(spec)
        try:
            return await link.list_tools()
        finally:
            await link.aclose()

    def run() -> list[dict[str, Any]]:
        return asyncio.run(asyncio.wait_for(go(), timeout))

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            return pool.submit(run).result()
        except TimeoutError as exc:
            raise ConfigError(
                f"MCP server {spec.name!r} did not list its tools in {timeout:g}s"
            ) from exc


def refresh(runtime: Runtime, skill_id: str) -> tuple[Card, ...]:
    """List a server's tools now, cache them, and replace its cards."""
    spec = spec_for(runtime, skill_id)
    pkg = runtime.packages.get(skill_id)
    key = spec.key(pkg.digest if pkg is not None else "")
    tools = list_server_tools(spec)
    store_tools(runtime, skill_id, key, tools)
    return apply_tools(runtime, skill_id, tools)


def _expand(runtime: Runtime, pkg: SkillPackage) -> SkillPackage:
    """Package hook: an ``mcp`` package without methods gets cards from its tool list."""
    if pkg.runtime != "mcp" or pkg.cards:
        return pkg
    try:
        spec = ServerSpec.parse(
            pkg.id,
            _package_options(pkg),
            where=f"{pkg.path / 'skill.toml'}: options",
            config=config_values(runtime, pkg.id, pkg),
        )
        key = spec.key(pkg.digest)
        tools = cached_tools(runtime, pkg.id, key)
        if tools is None:
            tools = list_server_tools(spec)
            store_tools(runtime, pkg.id, key, tools)
    except SkillyardError as exc:
        _problem(runtime, pkg, str(exc))
        return pkg
    except Exception as exc:  # a server that will not start must not stop the runtime
        _problem(runtime, pkg, f"listing its tools failed: {type(exc).__name__}: {exc}")
        return pkg
    return dataclasses.replace(pkg, cards=make_cards(pkg.id, tools, pkg, pkg.root))


def _problem(runtime: Runtime, pkg: SkillPackage, message: str) -> None:
    from skillyard.roots import Problem

    runtime.problems.append(Problem(str(pkg.path), pkg.root, "broken", message, pkg.id))


def install(runtime: Runtime) -> None:
    """Runtime extension: expand ``mcp`` packages and register ``[mcp.servers]`` entries."""
    runtime.package_hooks.append(_expand)
    servers = (runtime.config.get("mcp") or {}).get("servers") or {}
    if not isinstance(servers, Mapping):
        raise ConfigError("[mcp.servers] must be a table of NAME = {command = ..., ...}")
    for name in sorted(servers):
        try:
            spec = spec_for(runtime, name)
            key = spec.key()
            tools = cached_tools(runtime, name, key)
            if tools is None:
                tools = list_server_tools(spec)
                store_tools(runtime, name, key, tools)
            apply_tools(runtime, name, tools)
        except Exception as exc:
            from skillyard.roots import Problem

            runtime.problems.append(
                Problem(f"config [mcp.servers.{name}]", "user", "broken", str(exc), name)
            )
