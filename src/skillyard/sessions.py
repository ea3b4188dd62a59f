"""Persistent runtime sessions: a Lua VM whose globals survive between evals.

A *lease* binds a session id (``sid``) to one sandboxed Lua isolate for a
time-to-live that each successful eval refreshes. System authority only::

    mgr = runtime.sessions()
    lease = mgr.create("notebook", ttl_sec=600)     # {sid, lease_id, generation, ttl_sec, expires_at}
    await mgr.eval(lease["lease_id"], "x = (x or 0) + 1 return x")   # {"value": 1, ...}
    await mgr.eval(lease["lease_id"], "return x")                    # {"value": 1, ...}
    mgr.close(lease["lease_id"])

What lives where: lease records (sid, generation counter, expiry, state and the
tombstones of closed, expired and replaced leases) are rows in the runtime's
SQLite store, so ids, generations and error codes stay stable across restarts.
The Lua VM itself lives in the memory of the process that created the lease; if
that process exits, the lease cannot be evaluated any more (``lease_expired``).

Error codes (``SessionError.code``): ``lease_exists``, ``lease_busy``,
``lease_limit_exceeded``, ``lease_not_found``, ``lease_closed``,
``lease_expired``, ``lease_replaced``, ``lease_sid_mismatch``,
``lease_generation_mismatch``.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skillyard.card import Card, Limits
from skillyard.errors import InvalidArguments, PermissionDenied, SessionError, SkillyardError
from skillyard.transports.base import SYSTEM, Caller

if TYPE_CHECKING:
    from skillyard.runtime import Runtime
    from skillyard.transports.lua.isolate import Isolate

MIN_TTL, MAX_TTL = 1, 3600
DEFAULT_TTL = 300
DEFAULT_MAX_LEASES = 8
DEFAULT_TIMEOUT_MS = 5_000
MAX_TIMEOUT_MS = 600_000
MAX_CODE_BYTES = 1024 * 1024
SID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")

_MIGRATIONS = [
    [
        "CREATE TABLE session_sids (sid TEXT PRIMARY KEY, generation INTEGER NOT NULL)",
        "CREATE TABLE session_leases ("
        " lease_id TEXT PRIMARY KEY, sid TEXT NOT NULL, generation INTEGER NOT NULL,"
        " ttl_sec INTEGER NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL,"
        " state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', owner TEXT NOT NULL,"
        " ended_at REAL)",
        "CREATE INDEX session_leases_active ON session_leases(state, sid)",
    ]
]
_COLUMNS = "lease_id, sid, generation, ttl_sec, created_at, expires_at, state, reason, owner"
_STATE_CODES = {"closed": "lease_closed", "expired": "lease_expired", "replaced": "lease_replaced"}


def clamp_ttl(ttl_sec: Any) -> int:
    """A TTL in whole seconds, clamped to 1..3600."""
    if isinstance(ttl_sec, bool) or not isinstance(ttl_sec, int | float):
        raise InvalidArguments(f"ttl_sec must be a number of seconds, got {ttl_sec!r}")
    return int(min(MAX_TTL, max(MIN_TTL, ttl_sec)))


@dataclass(eq=False)
class _Vm:
    isolate: Isolate
    env: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


class SessionManager:
    """Creates, runs and ends leases on Lua VMs (system authority only)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        clock: Callable[[], float] = time.time,
        max_leases: int | None = None,
    ) -> None:
        cfg = runtime.config.get("sessions", {})
        self.runtime = runtime
        self.clock = clock
        self.max_leases = int(max_leases or cfg.get("max_leases", DEFAULT_MAX_LEASES))
        self.memory_mb = int(cfg.get("memory_mb", 64))
        self.instructions: int | None = cfg.get("instructions")
        self.owner = os.urandom(8).hex()
        self._vms: dict[str, _Vm] = {}
        self._lock = threading.RLock()
        runtime.store.migrate("sessions", _MIGRATIONS)

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _authorize(caller: Caller) -> None:
        if caller.authority != "system":
            raise PermissionDenied(
                "runtime sessions need system authority; "
                f"{caller.principal!r} calls as {caller.authority}"
            )

    def _row(self, lease_id: str) -> dict[str, Any]:
        if not isinstance(lease_id, str) or not lease_id:
            raise SessionError("lease_id must be a non-empty string", code="lease_not_found")
        rows = self.runtime.store.query(
            f"SELECT {_COLUMNS} FROM session_leases WHERE lease_id=?", (lease_id,)
        )
        if not rows:
            raise SessionError(
                f"no lease {lease_id!r}; create one with create(sid)", code="lease_not_found"
            )
        return dict(zip(_COLUMNS.split(", "), rows[0], strict=True))

    def _public(self, row: dict[str, Any]) -> dict[str, Any]:
        return {
            "sid": row["sid"],
            "lease_id": row["lease_id"],
            "generation": row["generation"],
            "ttl_sec": row["ttl_sec"],
            "expires_at": row["expires_at"],
            "state": row["state"],
            "reason": row["reason"],
            "local": row["owner"] == self.owner and row["lease_id"] in self._vms,
            "busy": self._busy(row["lease_id"]),
        }

    def _busy(self, lease_id: str) -> bool:
        vm = self._vms.get(lease_id)
        return vm is not None and vm.lock.locked()

    def _end(self, lease_id: str, state: str, reason: str) -> None:
        with self.runtime.store.transaction() as c:
            c.execute(
                "UPDATE session_leases SET state=?, reason=?, ended_at=? "
                "WHERE lease_id=? AND state='active'",
                (state, reason, self.clock(), lease_id),
            )
        self._vms.pop(lease_id, None)

    def _live(self, lease_id: str) -> dict[str, Any]:
        """The lease row if it is usable; otherwise the error its tombstone calls for."""
        row = self._row(lease_id)
        if row["state"] == "active" and self.clock() >= row["expires_at"]:
            self._end(lease_id, "expired", "its time-to-live ran out")
            row = self._row(lease_id)
        if row["state"] != "active":
            code = _STATE_CODES.get(row["state"], "lease_closed")
            self._vms.pop(lease_id, None)
            raise SessionError(
                f"lease {lease_id!r} (sid {row['sid']!r}, generation {row['generation']}) is "
                f"{row['state']}: {row['reason']}",
                code=code,
                details={"sid": row["sid"], "generation": row["generation"]},
            )
        return row

    def reap(self) -> int:
        """End every lease whose time-to-live has run out; returns how many."""
        now = self.clock()
        rows = self.runtime.store.query(
            "SELECT lease_id FROM session_leases WHERE state='active' AND expires_at<=?", (now,)
        )
        for (lease_id,) in rows:
            self._end(lease_id, "expired", "its time-to-live ran out")
        return len(rows)

    # -- the API ---------------------------------------------------------------------------

    def create(
        self,
        sid: str,
        ttl_sec: float = DEFAULT_TTL,
        replace: bool = False,
        *,
        caller: Caller = SYSTEM,
    ) -> dict[str, Any]:
        """Start a lease for ``sid``: ``{sid, lease_id, generation, ttl_sec, expires_at}``."""
        self._authorize(caller)
        if not isinstance(sid, str) or not SID_RE.match(sid):
            raise InvalidArguments(
                f"sid {sid!r} is not valid: 1-128 letters, digits, '_', '.', ':' or '-'"
            )
        ttl = clamp_ttl(ttl_sec)
        with self._lock:
            self.reap()
            store = self.runtime.store
            current = store.query(
                "SELECT lease_id FROM session_leases WHERE sid=? AND state='active'", (sid,)
            )
            if current and not replace:
                raise SessionError(
                    f"sid {sid!r} already has an active lease {current[0][0]!r}; "
                    "pass replace=True to replace it",
                    code="lease_exists",
                )
            active = store.query("SELECT COUNT(*) FROM session_leases WHERE state='active'")[0][0]
            if active - len(current) >= self.max_leases:
                raise SessionError(
                    f"{active} leases are active; the limit is {self.max_leases} "
                    "(close one, or raise [sessions] max_leases)",
                    code="lease_limit_exceeded",
                )
            isolate = self._new_isolate()
            env = isolate.new_env()
            lease_id = "lease_" + secrets.token_hex(12)
            now = self.clock()
            with store.transaction() as c:
                for (old,) in current:
                    c.execute(
                        "UPDATE session_leases SET state='replaced', reason=?, ended_at=? "
                        "WHERE lease_id=?",
                        (f"replaced by {lease_id}", now, old),
                    )
                row = c.execute(
                    "SELECT generation FROM session_sids WHERE sid=?", (sid,)
                ).fetchone()
                generation = (row[0] if row else 0) + 1
                c.execute(
                    "INSERT INTO session_sids(sid, generation) VALUES(?, ?) "
                    "ON CONFLICT(sid) DO UPDATE SET generation=excluded.generation",
                    (sid, generation),
                )
                c.execute(
                    f"INSERT INTO session_leases({_COLUMNS}) VALUES(?,?,?,?,?,?,'active','',?)",
                    (lease_id, sid, generation, ttl, now, now + ttl, self.owner),
                )
            for (old,) in current:
                self._vms.pop(old, None)
            self._vms[lease_id] = _Vm(isolate, env)
        return {
            "sid": sid,
            "lease_id": lease_id,
            "generation": generation,
            "ttl_sec": ttl,
            "expires_at": now + ttl,
        }

    async def eval(
        self,
        lease_id: str,
        code: str,
        args: Any = None,
        *,
        sid: str | None = None,
        generation: int | None = None,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        caller: Caller = SYSTEM,
    ) -> dict[str, Any]:
        """Run Lua ``code`` (``...`` is ``args``) in the lease's VM; globals persist."""
        self._authorize(caller)
        if not isinstance(code, str) or len(code.encode()) > MAX_CODE_BYTES:
            raise InvalidArguments(f"code must be a string of at most {MAX_CODE_BYTES} bytes")
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0:
            raise InvalidArguments(f"timeout_ms must be a positive integer, got {timeout_ms!r}")
        row = self._live(lease_id)
        if sid is not None and sid != row["sid"]:
            raise SessionError(
                f"lease {lease_id!r} belongs to sid {row['sid']!r}, not {sid!r}",
                code="lease_sid_mismatch",
            )
        if generation is not None and generation != row["generation"]:
            raise SessionError(
                f"lease {lease_id!r} is generation {row['generation']}, not {generation}",
                code="lease_generation_mismatch",
            )
        vm = self._vms.get(lease_id)
        if vm is None or row["owner"] != self.owner:
            raise SessionError(
                f"lease {lease_id!r} is active but its Lua state lives in another process "
                "(or one that has exited); Lua VM state is kept in memory only",
                code="lease_expired",
            )
        if not vm.lock.acquire(blocking=False):
            raise SessionError(
                f"lease {lease_id!r} is running another eval; wait for it", code="lease_busy"
            )
        try:
            timeout = min(timeout_ms, MAX_TIMEOUT_MS) / 1000
            value, logs = await asyncio.to_thread(self._run, vm, code, args, timeout)
            now = self.clock()
            with self.runtime.store.transaction() as c:
                c.execute(
                    "UPDATE session_leases SET expires_at=? WHERE lease_id=? AND state='active'",
                    (now + row["ttl_sec"], lease_id),
                )
        finally:
            vm.lock.release()
        return {"value": value, "logs": logs, "lease": self.status(lease_id, caller=caller)}

    def _run(self, vm: _Vm, code: str, args: Any, timeout: float) -> tuple[Any, list[Any]]:
        from skillyard.transports.lua import LuaTransport

        transport = self.runtime.transport("lua")
        assert isinstance(transport, LuaTransport)
        card = Card(
            id="session",
            name="session",
            method="eval",
            transport="lua",
            limits=Limits(timeout_sec=timeout, instructions=self.instructions),
        )
        api = vm.isolate.current
        logs: list[dict[str, Any]] = []
        from skillyard.transports.lua.vulcan import IDLE, CallState

        api.state = CallState(card, None, None, logs)
        try:
            values = asyncio.run(
                transport.drive(
                    vm.isolate,
                    card,
                    None,
                    None,
                    None,
                    args,
                    env=vm.env,
                    code=code,
                    deadline=time.monotonic() + timeout,
                )
            )
            value = vm.isolate.to_py(values[0]) if values else None
        except SkillyardError:
            vm.isolate.dead = False  # the VM survives a failed eval; its globals are kept
            raise
        finally:
            api.state = IDLE
        return value, logs

    def status(self, lease_id: str, *, caller: Caller = SYSTEM) -> dict[str, Any]:
        """The lease's public record (raises the lease's error once it has ended)."""
        self._authorize(caller)
        return self._public(self._live(lease_id))

    def list(self, *, include_ended: bool = False, caller: Caller = SYSTEM) -> list[dict[str, Any]]:
        """Active leases (and ended ones, the tombstones, with ``include_ended``)."""
        self._authorize(caller)
        self.reap()
        where = "" if include_ended else "WHERE state='active'"
        rows = self.runtime.store.query(
            f"SELECT {_COLUMNS} FROM session_leases {where} ORDER BY created_at, lease_id"
        )
        return [self._public(dict(zip(_COLUMNS.split(", "), r, strict=True))) for r in rows]

    def close(self, lease_id: str, *, caller: Caller = SYSTEM) -> dict[str, Any]:
        """End a lease; later calls with its id fail with ``lease_closed``."""
        self._authorize(caller)
        row = self._live(lease_id)
        if self._busy(lease_id):
            raise SessionError(f"lease {lease_id!r} is running an eval", code="lease_busy")
        self._end(lease_id, "closed", "closed by its owner")
        out = self._public(self._row(lease_id))
        out["generation"] = row["generation"]
        return out

    def create_handle(
        self,
        sid: str,
        ttl_sec: float = DEFAULT_TTL,
        replace: bool = False,
        *,
        caller: Caller = SYSTEM,
    ) -> SessionHandle:
        """Create a lease and return a handle with ``eval``, ``status`` and ``close``."""
        lease = self.create(sid, ttl_sec, replace, caller=caller)
        return SessionHandle(self, lease, caller)

    def _new_isolate(self) -> Isolate:
        from skillyard.transports.lua import LuaTransport

        transport = self.runtime.transport("lua")
        assert isinstance(transport, LuaTransport)
        return transport.new_isolate(self.memory_mb * 1024 * 1024)


class SessionHandle:
    """One lease, bound to its sid and generation so stale handles fail loudly."""

    def __init__(self, manager: SessionManager, lease: dict[str, Any], caller: Caller) -> None:
        self.manager = manager
        self.lease = lease
        self.caller = caller

    @property
    def lease_id(self) -> str:
        return str(self.lease["lease_id"])

    async def eval(
        self, code: str, args: Any = None, *, timeout_ms: int = DEFAULT_TIMEOUT_MS
    ) -> Any:
        """Run ``code`` and return its value."""
        out = await self.manager.eval(
            self.lease_id,
            code,
            args,
            sid=self.lease["sid"],
            generation=self.lease["generation"],
            timeout_ms=timeout_ms,
            caller=self.caller,
        )
        return out["value"]

    def status(self) -> dict[str, Any]:
        return self.manager.status(self.lease_id, caller=self.caller)

    def close(self) -> dict[str, Any]:
        return self.manager.close(self.lease_id, caller=self.caller)


__all__ = ["SessionHandle", "SessionManager", "clamp_ttl"]
