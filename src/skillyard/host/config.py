"""``config.*``: per-skill configuration values, declared in the manifest's ``[[config]]``.

A declared key has a type (string, integer, number, boolean, json), an optional
default, ``required`` and ``sensitive``. Values live in the runtime's SQLite store
keyed by (skill id, key). Sensitive values are returned to the skill that owns them
by ``config.get`` but never listed, printed or put in an error message. A package
that declares no ``[[config]]`` (or a tool registered in code) may use any key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from skillyard.errors import ConfigError, HostError
from skillyard.host.common import arg, invalid

if TYPE_CHECKING:
    from skillyard.host.api import Host
    from skillyard.store import Store

MAX_VALUE_BYTES = 256 * 1024
MASK = "********"
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_STEPS = [
    "CREATE TABLE host_config (skill TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
    "PRIMARY KEY (skill, key)) WITHOUT ROWID"
]
Decls = Mapping[str, Mapping[str, Any]]


def coerce(decl: Mapping[str, Any] | None, value: Any, *, where: str) -> Any:
    """Check ``value`` against a declaration's type (raises ConfigError)."""
    ctype = (decl or {}).get("type", "json")
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "json": True,
    }[ctype]
    if not ok:
        raise ConfigError(f"{where}: expected a value of type {ctype}, got {type(value).__name__}")
    try:
        size = len(orjson.dumps(value))
    except TypeError as exc:
        raise ConfigError(f"{where}: the value is not JSON: {exc}") from exc
    if size > MAX_VALUE_BYTES:
        raise ConfigError(f"{where}: the value is {size} bytes; the limit is {MAX_VALUE_BYTES}")
    return value


def parse_text(decl: Mapping[str, Any] | None, text: str, *, where: str) -> Any:
    """A value typed on the command line, converted by its declared type."""
    ctype = (decl or {}).get("type", "string")
    try:
        if ctype == "string":
            return text
        if ctype == "integer":
            return int(text)
        if ctype == "number":
            return float(text)
        if ctype == "boolean":
            low = text.strip().lower()
            if low in ("true", "yes", "1", "on"):
                return True
            if low in ("false", "no", "0", "off"):
                return False
            raise ValueError("use true or false")
        return orjson.loads(text)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read the value as {ctype}: {exc}") from None


class ConfigStore:
    """Per-skill config values in SQLite, checked against the declarations."""

    def __init__(self, store: Store) -> None:
        store.migrate("host_config", [_STEPS])
        self.store = store

    @staticmethod
    def _decl(skill: str, decls: Decls | None, key: str) -> Mapping[str, Any] | None:
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ConfigError(f"{key!r} is not a valid config key")
        if not decls:
            return None
        decl = decls.get(key)
        if decl is None:
            known = ", ".join(sorted(decls)) or "none"
            raise ConfigError(
                f"{skill}: config key {key!r} is not declared in its [[config]] (declared: {known})"
            )
        return decl

    def has(self, skill: str, decls: Decls | None, key: str) -> bool:
        decl = self._decl(skill, decls, key)
        rows = self.store.query("SELECT 1 FROM host_config WHERE skill=? AND key=?", (skill, key))
        return bool(rows) or (decl is not None and decl.get("default") is not None)

    def get(self, skill: str, decls: Decls | None, key: str) -> Any:
        decl = self._decl(skill, decls, key)
        rows = self.store.query(
            "SELECT value FROM host_config WHERE skill=? AND key=?", (skill, key)
        )
        if rows:
            return orjson.loads(rows[0][0])
        if decl is not None and decl.get("default") is not None:
            return decl["default"]
        if decl is not None and decl.get("required"):
            raise ConfigError(
                f"{skill}: required config {key!r} is not set; "
                f"run `skillyard config set {skill} {key} VALUE`"
            )
        return None

    def set(self, skill: str, decls: Decls | None, key: str, value: Any) -> None:
        decl = self._decl(skill, decls, key)
        coerce(decl, value, where=f"{skill}: config {key!r}")
        self.store.execute(
            "INSERT INTO host_config (skill, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (skill, key) DO UPDATE SET value=excluded.value",
            (skill, key, orjson.dumps(value)),
        )

    def delete(self, skill: str, decls: Decls | None, key: str) -> bool:
        self._decl(skill, decls, key)
        cur = self.store.execute("DELETE FROM host_config WHERE skill=? AND key=?", (skill, key))
        return cur.rowcount > 0

    def entries(self, skill: str, decls: Decls | None) -> list[dict[str, Any]]:
        """Every declared or stored key with its value (sensitive values masked)."""
        stored = {
            k: orjson.loads(v)
            for k, v in self.store.query(
                "SELECT key, value FROM host_config WHERE skill=? ORDER BY key", (skill,)
            )
        }
        out = []
        for key in sorted(set(stored) | set(decls or {})):
            decl = (decls or {}).get(key) or {}
            source = (
                "set"
                if key in stored
                else ("default" if decl.get("default") is not None else "unset")
            )
            value = stored.get(key, decl.get("default"))
            sensitive = bool(decl.get("sensitive"))
            out.append(
                {
                    "key": key,
                    "type": decl.get("type", "json"),
                    "value": MASK if sensitive and source != "unset" else value,
                    "source": source,
                    "required": bool(decl.get("required")),
                    "sensitive": sensitive,
                }
            )
        return out


def decls_of(config: Any) -> dict[str, Mapping[str, Any]]:
    """``SkillPackage.config`` (a tuple of declarations) as a dict by key."""
    return {d["key"]: d for d in config or ()}


def _as_host_error(method: str, exc: ConfigError) -> HostError:
    code = "config_missing" if "is not set" in exc.message else "invalid_argument"
    return HostError(f"{method}: {exc.message}", code=code)


def handlers(store: ConfigStore) -> dict[str, Any]:
    """Dispatch handlers ``config.get|has|set|delete|list``."""

    def run(method: str, host: Host, params: dict[str, Any]) -> Any:
        decls = host.config_decls
        try:
            if method == "config.list":
                return {
                    e["key"]: e["value"]
                    for e in store.entries(host.skill, decls)
                    if not e["sensitive"] and e["source"] != "unset"
                }
            key = arg(params, "key", str, method)
            if method == "config.get":
                return store.get(host.skill, decls, key)
            if method == "config.has":
                return store.has(host.skill, decls, key)
            if method == "config.set":
                if "value" not in params:
                    raise invalid(method, "params.value is required")
                store.set(host.skill, decls, key, params["value"])
                return None
            store.delete(host.skill, decls, key)
            return None
        except ConfigError as exc:
            raise _as_host_error(method, exc) from None

    def make(method: str) -> Any:
        def handler(host: Host, params: dict[str, Any], permit: Any) -> Any:
            return run(method, host, params)

        return handler

    return {
        m: make(m)
        for m in ("config.get", "config.has", "config.set", "config.delete", "config.list")
    }


__all__ = ["MASK", "ConfigStore", "coerce", "decls_of", "handlers", "parse_text"]
