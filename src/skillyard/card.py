"""Cards: the plain-data description of one callable skill entry.

A card says what a tool is (name, schemas, roles), how it runs (transport kind,
operation, options), what it may touch (declared permissions, limits) and how
calls to it are treated (privacy, cache and cassette policy). Cards are frozen
and round-trip losslessly through JSON (:meth:`Card.to_dict` /
:meth:`Card.from_dict`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from skillyard.errors import ManifestError

Role = Literal["tool", "model", "resource", "prompt", "memory", "retriever", "judge", "router"]
Privacy = Literal["metadata-only", "no-raw", "local-only", "allow-raw"]
CacheMode = Literal["disabled", "read-through", "read-only", "write-only", "refresh"]
CassetteMode = Literal["disabled", "record-replay", "replay-only", "record-only"]
RootName = Literal["root", "project", "user", "memory"]

ROLES: tuple[str, ...] = get_args(Role)
PRIVACY_MODES: tuple[str, ...] = get_args(Privacy)
CACHE_MODES: tuple[str, ...] = get_args(CacheMode)
CASSETTE_MODES: tuple[str, ...] = get_args(CassetteMode)
ROOT_NAMES: tuple[str, ...] = get_args(RootName)

DEFAULT_TIMEOUT_SEC = 30.0
DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024


def _fail(where: str, field_path: str, message: str) -> ManifestError:
    return ManifestError(message, file=where or None, field=field_path)


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str, path: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _fail(
            where,
            f"{path}.{unknown[0]}" if path else unknown[0],
            f"unknown key {unknown[0]!r}; allowed keys are {', '.join(sorted(allowed))}",
        )


def _choice(value: Any, allowed: tuple[str, ...], where: str, path: str) -> str:
    if value not in allowed:
        raise _fail(where, path, f"{value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _opt_number(value: Any, where: str, path: str, *, integer: bool = False) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, path, f"expected a number, got {type(value).__name__}")
    if integer and not isinstance(value, int):
        raise _fail(where, path, "expected a whole number")
    if value <= 0:
        raise _fail(where, path, f"expected a positive number, got {value}")
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class Policy:
    """How calls to a card are treated: privacy, caching, cassettes."""

    privacy: Privacy = "allow-raw"
    cache: CacheMode = "disabled"
    cassette: CassetteMode = "disabled"
    idempotent: bool = False
    semantic_key: str | None = None
    cache_ttl_sec: float | None = None
    cache_shared: bool = False

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        where: str = "",
        path: str = "policy",
        base: Policy | None = None,
    ) -> Policy:
        """Build a policy from JSON, rejecting unknown keys; ``base`` supplies defaults."""
        if not isinstance(data, Mapping):
            raise _fail(where, path, f"expected a table, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        _check_keys(data, names, where, path)
        merged = dataclasses.asdict(base) if base else {}
        merged.update(data)
        out = cls()
        kw: dict[str, Any] = {}
        kw["privacy"] = _choice(
            merged.get("privacy", out.privacy), PRIVACY_MODES, where, f"{path}.privacy"
        )
        kw["cache"] = _choice(merged.get("cache", out.cache), CACHE_MODES, where, f"{path}.cache")
        kw["cassette"] = _choice(
            merged.get("cassette", out.cassette), CASSETTE_MODES, where, f"{path}.cassette"
        )
        for flag in ("idempotent", "cache_shared"):
            v = merged.get(flag, getattr(out, flag))
            if not isinstance(v, bool):
                raise _fail(where, f"{path}.{flag}", f"expected true or false, got {v!r}")
            kw[flag] = v
        sk = merged.get("semantic_key")
        if sk is not None and not isinstance(sk, str):
            raise _fail(where, f"{path}.semantic_key", "expected a string")
        kw["semantic_key"] = sk
        kw["cache_ttl_sec"] = _opt_number(
            merged.get("cache_ttl_sec"), where, f"{path}.cache_ttl_sec"
        )
        return cls(**kw)


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """Hard limits for one call; ``None`` means the runtime's default or no limit."""

    timeout_sec: float = DEFAULT_TIMEOUT_SEC
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    memory_mb: int | None = None
    cpu_sec: int | None = None
    open_files: int | None = None
    instructions: int | None = None

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        where: str = "",
        path: str = "limits",
        base: Limits | None = None,
    ) -> Limits:
        """Build limits from JSON, rejecting unknown keys and non-positive values."""
        if not isinstance(data, Mapping):
            raise _fail(where, path, f"expected a table, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        _check_keys(data, names, where, path)
        merged = dataclasses.asdict(base) if base else dataclasses.asdict(cls())
        merged.update(data)
        kw: dict[str, Any] = {}
        for name in names:
            integer = name != "timeout_sec"
            kw[name] = _opt_number(merged.get(name), where, f"{path}.{name}", integer=integer)
        if kw["timeout_sec"] is None or kw["max_output_bytes"] is None:
            raise _fail(where, path, "timeout_sec and max_output_bytes cannot be empty")
        return cls(**kw)


_CARD_FIELDS = (
    "id",
    "name",
    "method",
    "title",
    "description",
    "version",
    "roles",
    "input_schema",
    "output_schema",
    "capabilities",
    "policy",
    "limits",
    "permissions",
    "hidden",
    "transport",
    "operation",
    "options",
    "root",
    "source",
    "digest",
)


@dataclass(frozen=True, kw_only=True)
class Card:
    """One callable entry of a skill package: plain, frozen data."""

    id: str
    name: str
    method: str
    description: str = ""
    title: str = ""
    version: str = "0.0.0"
    roles: tuple[str, ...] = ("tool",)
    input_schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})
    output_schema: Mapping[str, Any] | None = None
    capabilities: tuple[str, ...] = ()
    policy: Policy = field(default_factory=Policy)
    limits: Limits = field(default_factory=Limits)
    permissions: Mapping[str, Any] = field(default_factory=dict)
    hidden: bool = False
    transport: str = "python"
    operation: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    root: str = "memory"
    source: str | None = None
    digest: str = ""

    __hash__ = object.__hash__  # cards are compared by value but keyed by identity

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped form; :meth:`from_dict` rebuilds an equal card."""
        out: dict[str, Any] = {}
        for name in _CARD_FIELDS:
            value = getattr(self, name)
            if isinstance(value, Policy | Limits):
                value = dataclasses.asdict(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "") -> Card:
        """Rebuild a card from :meth:`to_dict` output; unknown keys are rejected."""
        if not isinstance(data, Mapping):
            raise _fail(where, "card", "expected an object")
        _check_keys(data, set(_CARD_FIELDS), where, "")
        for required in ("id", "name", "method"):
            if not isinstance(data.get(required), str) or not data[required]:
                raise _fail(where, required, "required, a non-empty string")
        kw: dict[str, Any] = dict(data)
        kw["policy"] = Policy.from_dict(data.get("policy", {}), where=where)
        kw["limits"] = Limits.from_dict(data.get("limits", {}), where=where)
        roles = tuple(data.get("roles", ("tool",)))
        for i, role in enumerate(roles):
            _choice(role, ROLES, where, f"roles[{i}]")
        kw["roles"] = roles
        kw["capabilities"] = tuple(data.get("capabilities", ()))
        if "root" in data:
            _choice(data["root"], ROOT_NAMES, where, "root")
        return cls(**kw)

    @property
    def read_only(self) -> bool:
        """True when the card declares no way to change anything outside itself."""
        perms = self.permissions
        fs = perms.get("fs") or []
        writes = any(isinstance(e, Mapping) and e.get("mode") == "rw" for e in fs)
        return not (writes or perms.get("shell") or perms.get("http") or perms.get("invoke"))


__all__ = [
    "CACHE_MODES",
    "CASSETTE_MODES",
    "PRIVACY_MODES",
    "ROLES",
    "ROOT_NAMES",
    "CacheMode",
    "Card",
    "CassetteMode",
    "Limits",
    "Policy",
    "Privacy",
    "Role",
]
