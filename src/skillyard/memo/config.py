"""The operator's ``[memo]`` section of ``config.toml``, checked completely on install."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from skillyard.errors import ConfigError

RecordMode = Literal["once", "new_episodes", "none", "all", "rewrite"]
RECORD_MODES: tuple[str, ...] = get_args(RecordMode)
CassetteFormat = Literal["json", "yaml"]
PRIVATE_MODES = ("metadata-only", "no-raw")

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_ENTRY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_CASSETTE_BYTES = 64 * 1024 * 1024

_KEYS = {
    "enabled",
    "max_entries",
    "max_bytes",
    "max_entry_bytes",
    "default_ttl_sec",
    "cache_private",
    "cassette_dir",
    "cassette",
    "cassette_mode",
    "cassette_format",
    "cassette_match_on",
    "max_cassette_bytes",
    "record_private",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class MemoConfig:
    """Cache limits, privacy opt-ins and cassette defaults (see docs/memo.md)."""

    enabled: bool = True
    max_entries: int = DEFAULT_MAX_ENTRIES
    max_bytes: int = DEFAULT_MAX_BYTES
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
    default_ttl_sec: float | None = None
    cache_private: frozenset[str] = frozenset()
    cassette_dir: Path | None = None
    cassette: str | None = None
    cassette_mode: RecordMode = "new_episodes"
    cassette_format: CassetteFormat = "json"
    cassette_match_on: tuple[str, ...] = ("tool", "digest", "args")
    max_cassette_bytes: int = DEFAULT_MAX_CASSETTE_BYTES
    record_private: frozenset[str] = frozenset()

    @classmethod
    def from_mapping(cls, data: Any, *, base_dir: Path | None = None) -> MemoConfig:
        """Parse ``[memo]``; every wrong key or value raises ConfigError naming it."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"[memo] must be a table, got {type(data).__name__}")
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ConfigError(
                f"[memo] {unknown[0]}: unknown key; allowed keys are {', '.join(sorted(_KEYS))}"
            )
        kw: dict[str, Any] = {}
        if "enabled" in data:
            kw["enabled"] = _bool(data, "enabled")
        for name in ("max_entries", "max_bytes", "max_entry_bytes", "max_cassette_bytes"):
            if name in data:
                kw[name] = _positive_int(data, name)
        if data.get("default_ttl_sec") is not None:
            v = data["default_ttl_sec"]
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise ConfigError(f"[memo] default_ttl_sec: expected a positive number, got {v!r}")
            kw["default_ttl_sec"] = float(v)
        for name in ("cache_private", "record_private"):
            if name in data:
                kw[name] = _private(data[name], name)
        if data.get("cassette_dir") is not None:
            v = data["cassette_dir"]
            if not isinstance(v, str | Path) or not str(v):
                raise ConfigError(f"[memo] cassette_dir: expected a directory path, got {v!r}")
            p = Path(v).expanduser()
            kw["cassette_dir"] = (base_dir / p) if base_dir and not p.is_absolute() else p
        if data.get("cassette") is not None:
            v = data["cassette"]
            if not isinstance(v, str) or not v:
                raise ConfigError(f"[memo] cassette: expected a cassette name, got {v!r}")
            kw["cassette"] = v
        if "cassette_mode" in data:
            v = data["cassette_mode"]
            if v not in RECORD_MODES:
                raise ConfigError(
                    f"[memo] cassette_mode: {v!r} is not one of {', '.join(RECORD_MODES)}"
                )
            kw["cassette_mode"] = v
        if "cassette_format" in data:
            v = data["cassette_format"]
            if v not in ("json", "yaml"):
                raise ConfigError(f"[memo] cassette_format: {v!r} is not json or yaml")
            kw["cassette_format"] = v
        if "cassette_match_on" in data:
            from skillyard.memo.cassette import MATCHERS

            v = data["cassette_match_on"]
            if not isinstance(v, list) or not v or not all(m in MATCHERS for m in v):
                raise ConfigError(
                    f"[memo] cassette_match_on: expected a list of {', '.join(sorted(MATCHERS))}"
                )
            kw["cassette_match_on"] = tuple(v)
        return cls(**kw)


def _bool(data: Mapping[str, Any], name: str) -> bool:
    v = data[name]
    if not isinstance(v, bool):
        raise ConfigError(f"[memo] {name}: expected true or false, got {v!r}")
    return v


def _positive_int(data: Mapping[str, Any], name: str) -> int:
    v = data[name]
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConfigError(f"[memo] {name}: expected a positive whole number, got {v!r}")
    return v


def _private(value: Any, name: str) -> frozenset[str]:
    """``true`` opts in every private mode; a list opts in the modes it names."""
    if value is True:
        return frozenset(PRIVATE_MODES)
    if value is False:
        return frozenset()
    if isinstance(value, list | tuple | frozenset | set) and all(v in PRIVATE_MODES for v in value):
        return frozenset(value)
    raise ConfigError(
        f"[memo] {name}: expected true, false or a list of {', '.join(PRIVATE_MODES)}, "
        f"got {value!r}"
    )
