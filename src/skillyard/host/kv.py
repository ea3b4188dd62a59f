"""``kv.*`` and ``cache.*``: per-skill key-value state in the runtime's SQLite store.

``kv`` is durable (a TTL is optional); ``cache`` always expires (default 300 s) and
is bounded per skill, oldest entries evicted first. Values are JSON. A skill sees
only its own keys: the skill id is part of every row's primary key.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from skillyard.host.common import arg, arg_int, invalid

if TYPE_CHECKING:
    from skillyard.host.api import Host
    from skillyard.store import Store

MAX_KEY = 512
MAX_VALUE_BYTES = 1024 * 1024
MAX_TTL_SEC = 10 * 365 * 86400
CACHE_DEFAULT_TTL_SEC = 300
CACHE_MAX_ENTRIES = 10_000
MAX_LIST = 10_000

_STEPS = [
    [
        "CREATE TABLE host_kv (skill TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
        "expires REAL, PRIMARY KEY (skill, key)) WITHOUT ROWID",
        "CREATE TABLE host_cache (skill TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
        "expires REAL NOT NULL, PRIMARY KEY (skill, key)) WITHOUT ROWID",
        "CREATE INDEX host_cache_expires ON host_cache (skill, expires)",
    ]
]


class KeyValue:
    """One table of per-skill JSON values with optional expiry."""

    def __init__(
        self,
        store: Store,
        table: str,
        *,
        default_ttl: float | None = None,
        max_entries: int | None = None,
    ) -> None:
        store.migrate("host_kv", _STEPS)
        self.store = store
        self.table = table
        self.default_ttl = default_ttl
        self.max_entries = max_entries

    def _key(self, params: dict[str, Any], method: str) -> str:
        key = arg(params, "key", str, method)
        if not key or len(key) > MAX_KEY or "\0" in key:
            raise invalid(method, f"params.key must be 1-{MAX_KEY} characters without NUL")
        return key

    def get(self, skill: str, params: dict[str, Any], method: str) -> Any:
        key = self._key(params, method)
        rows = self.store.query(
            f"SELECT value, expires FROM {self.table} WHERE skill=? AND key=?", (skill, key)
        )
        if not rows or (rows[0][1] is not None and rows[0][1] <= time.time()):
            return None
        return orjson.loads(rows[0][0])

    def put(self, skill: str, params: dict[str, Any], method: str) -> None:
        key = self._key(params, method)
        if "value" not in params:
            raise invalid(method, "params.value is required (use delete to remove a key)")
        try:
            blob = orjson.dumps(params["value"])
        except TypeError as exc:
            raise invalid(method, f"params.value is not JSON: {exc}") from exc
        if len(blob) > MAX_VALUE_BYTES:
            raise invalid(method, f"value is {len(blob)} bytes; the limit is {MAX_VALUE_BYTES}")
        ttl = params.get("ttl_sec", self.default_ttl)
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL_SEC
        ):
            raise invalid(method, f"params.ttl_sec must be a number in (0, {MAX_TTL_SEC}]")
        now = time.time()
        expires = None if ttl is None else now + ttl
        with self.store.transaction() as c:
            c.execute(
                f"INSERT INTO {self.table} (skill, key, value, expires) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (skill, key) DO UPDATE SET value=excluded.value, "
                "expires=excluded.expires",
                (skill, key, blob, expires),
            )
            c.execute(
                f"DELETE FROM {self.table} WHERE skill=? AND expires IS NOT NULL AND expires<=?",
                (skill, now),
            )
            if self.max_entries is not None:
                c.execute(
                    f"DELETE FROM {self.table} WHERE skill=? AND key IN (SELECT key FROM "
                    f"{self.table} WHERE skill=? ORDER BY expires DESC LIMIT -1 OFFSET ?)",
                    (skill, skill, self.max_entries),
                )
        return None

    def delete(self, skill: str, params: dict[str, Any], method: str) -> None:
        key = self._key(params, method)
        self.store.execute(f"DELETE FROM {self.table} WHERE skill=? AND key=?", (skill, key))
        return None

    def list(self, skill: str, params: dict[str, Any], method: str) -> list[str]:
        prefix = arg(params, "prefix", str, method, default="")
        limit = arg_int(params, "limit", method, default=MAX_LIST, lo=1, hi=MAX_LIST)
        # Prefix by range, not LIKE: keys may contain '%' and '_'.
        rows = self.store.query(
            f"SELECT key FROM {self.table} WHERE skill=? AND key>=? AND key<? "
            "AND (expires IS NULL OR expires>?) ORDER BY key LIMIT ?",
            (skill, prefix, prefix + "\U0010ffff", time.time(), limit),
        )
        return [r[0] for r in rows]


def handlers(table: KeyValue, prefix: str) -> dict[str, Any]:
    """Dispatch handlers ``{prefix}.get|put|delete[|list]`` bound to ``table``."""

    def make(op: str) -> Any:
        method = f"{prefix}.{op}"
        fn = getattr(table, op)

        def handler(host: Host, params: dict[str, Any], permit: Any) -> Any:
            return fn(host.skill, params, method)

        return handler

    ops = ("get", "put", "delete", "list") if prefix == "kv" else ("get", "put", "delete")
    return {f"{prefix}.{op}": make(op) for op in ops}


__all__ = ["KeyValue", "handlers"]
