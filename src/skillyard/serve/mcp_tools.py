"""What ``skillyard serve mcp`` exposes: options, filters and the wire form of each tool.

Tools are built from the runtime's visible cards (hidden methods never), sorted by
name; annotations are derived from what each card declares (see docs/mcp.md).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from skillyard.errors import ConfigError
from skillyard.transports.base import Caller

if TYPE_CHECKING:
    from skillyard.card import Card
    from skillyard.runtime import Runtime

_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def mcp_name(name: str) -> str:
    """A tool name in MCP's alphabet ``[A-Za-z0-9_.-]{1,128}``."""
    return _NAME_BAD.sub("_", name)[:128] or "_"


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """What ``skillyard serve mcp`` exposes and as whom (``[serve.mcp]`` in config.toml)."""

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    authority: Literal["system", "delegated_tool"] = "delegated_tool"
    principal: str = "mcp"
    mapping: Literal["method", "skill"] = "method"
    page_size: int = 100
    name: str = "skillyard"
    instructions: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> ServeOptions:
        """Read ``[serve.mcp]``; ``overrides`` that are not ``None`` win over the file."""
        section = (config.get("serve") or {}).get("mcp") or {}
        if not isinstance(section, Mapping):
            raise ConfigError("[serve.mcp] must be a table")
        allowed = {"include", "exclude", "authority", "principal", "mapping", "page_size", "name"}
        unknown = sorted(set(section) - allowed - {"instructions"})
        if unknown:
            raise ConfigError(
                f"serve.mcp.{unknown[0]}: unknown key; allowed: {', '.join(sorted(allowed))}"
            )
        merged = {**section, **{k: v for k, v in overrides.items() if v not in (None, ())}}
        kw: dict[str, Any] = {}
        for key in ("include", "exclude"):
            if key in merged:
                value = merged[key]
                value = [value] if isinstance(value, str) else value
                if not isinstance(value, list | tuple) or not all(
                    isinstance(v, str) for v in value
                ):
                    raise ConfigError(f"serve.mcp.{key}: expected a list of glob patterns")
                kw[key] = tuple(value)
        if merged.get("authority", "delegated_tool") not in ("system", "delegated_tool"):
            raise ConfigError("serve.mcp.authority: use 'delegated_tool' or 'system'")
        if merged.get("mapping", "method") not in ("method", "skill"):
            raise ConfigError("serve.mcp.mapping: use 'method' or 'skill'")
        size = merged.get("page_size", 100)
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 10_000:
            raise ConfigError("serve.mcp.page_size: expected a whole number from 1 to 10000")
        for key in ("authority", "mapping", "page_size", "principal", "name", "instructions"):
            if key in merged:
                kw[key] = merged[key]
        return cls(**kw)


@dataclass(frozen=True, slots=True)
class Tool:
    """One listed MCP tool: its wire form and what it runs."""

    name: str
    wire: dict[str, Any]
    card: Card | None  # None for per-skill tools
    methods: dict[str, Card]
    wrap: bool  # structured output goes under {"result": ...}


def _annotations(cards: list[Card]) -> dict[str, Any]:
    """Hints derived from what the cards declare, never from what authors claim.

    A tool imported from another MCP server runs outside skillyard's sandbox, so nothing
    it declares bounds what it does: it gets the protocol's cautious defaults.
    """
    remote = any(c.transport == "mcp" for c in cards)
    read_only = not remote and all(c.read_only for c in cards)
    ann: dict[str, Any] = {
        "readOnlyHint": read_only,
        "idempotentHint": all(c.policy.idempotent for c in cards),
        "openWorldHint": remote or any(bool(c.permissions.get("http")) for c in cards),
    }
    if not read_only:
        destructive = remote
        for c in cards:
            fs = c.permissions.get("fs") or []
            writes = any(isinstance(e, Mapping) and e.get("mode") == "rw" for e in fs)
            destructive = destructive or writes or bool(c.permissions.get("shell"))
        ann["destructiveHint"] = destructive
    return ann


class Exposure:
    """The tools, prompts and help documents one server exposes, rebuilt from the runtime."""

    def __init__(self, runtime: Runtime, options: ServeOptions) -> None:
        self.runtime = runtime
        self.options = options
        self.caller = Caller(authority=options.authority, principal=options.principal)
        self._index: dict[str, Tool] | None = None
        self._listing: list[Tool] = []

    def _wanted(self, card: Card) -> bool:
        if card.hidden:
            return False
        name = card.name
        if not any(fnmatch.fnmatchcase(name, p) for p in self.options.include):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in self.options.exclude)

    def cards(self) -> list[Card]:
        """Cards this server exposes, sorted by tool name."""
        return [c for c in self.runtime.list(caller=self.caller) if self._wanted(c)]

    def _build(self) -> dict[str, Tool]:
        tools: list[Tool] = []
        cards = [c for c in self.cards() if "tool" in c.roles]
        if self.options.mapping == "skill":
            by_skill: dict[str, list[Card]] = {}
            for c in cards:
                by_skill.setdefault(c.id, []).append(c)
            for skill_id, group in sorted(by_skill.items()):
                tools.append(self._skill_tool(skill_id, group))
        else:
            for c in cards:
                tools.append(self._method_tool(c))
        index: dict[str, Tool] = {}
        for t in tools:
            index.setdefault(t.name, t)  # a sanitised clash keeps the first, sorted by name
        self._listing = sorted(index.values(), key=lambda t: t.name)
        return index

    def _method_tool(self, card: Card) -> Tool:
        name = mcp_name(card.name)
        wire: dict[str, Any] = {
            "name": name,
            "description": card.description or card.name,
            "inputSchema": dict(card.input_schema),
            "annotations": _annotations([card]),
        }
        if card.title:
            wire["title"] = card.title
            wire["annotations"]["title"] = card.title
        wrap = False
        schema = card.output_schema
        if schema is not None:
            if schema.get("type") == "object":
                wire["outputSchema"] = dict(schema)
            else:
                wrap = True
                wire["outputSchema"] = {
                    "type": "object",
                    "properties": {"result": dict(schema)},
                    "required": ["result"],
                }
        return Tool(name, wire, card, {card.method: card}, wrap)

    def _skill_tool(self, skill_id: str, cards: list[Card]) -> Tool:
        methods = {c.method: c for c in cards}
        lines = [f"- {c.method}: {c.description}".rstrip(": ") for c in cards]
        name = mcp_name(skill_id)
        wire: dict[str, Any] = {
            "name": name,
            "description": f"Skill {skill_id}; methods:\n" + "\n".join(lines),
            "inputSchema": {
                "type": "object",
                "properties": {
                    "method": {"type": "string", "enum": sorted(methods)},
                    "arguments": {"type": "object"},
                },
                "required": ["method"],
                "additionalProperties": False,
            },
            "annotations": _annotations(cards),
        }
        return Tool(name, wire, None, methods, False)

    def tools(self) -> list[Tool]:
        """The listed tools, rebuilt from the runtime's current cards."""
        self._index = self._build()
        return self._listing

    def tool(self, name: str) -> Tool | None:
        index = self._index if self._index is not None else self._build()
        self._index = index
        tool = index.get(name)
        if tool is None:  # cards may have changed since the last listing
            self._index = index = self._build()
            tool = index.get(name)
        return tool

    def prompt_cards(self) -> list[Card]:
        return [c for c in self.cards() if "prompt" in c.roles]

    def help_docs(self) -> list[tuple[str, str, Any]]:
        """``(uri, skill id, path)`` for each help document of an exposed skill."""
        exposed = {c.id for c in self.cards()}
        out = []
        for skill_id in sorted(exposed):
            pkg = self.runtime.packages.get(skill_id)
            if pkg is None:
                continue
            for topic, path in sorted(pkg.help.items()):
                out.append((f"skill://{skill_id}/help/{topic}", skill_id, path))
        return out


__all__ = ["Exposure", "ServeOptions", "Tool", "mcp_name"]
