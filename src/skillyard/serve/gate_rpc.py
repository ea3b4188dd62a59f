"""``skillyard runtime gate``: the Lodestar-compatible governance sidecar.

Newline-delimited JSON-RPC on stdin/stdout, as spoken by ``lodestar-runtime-client``
(``GateClient(config, launcher=["skillyard"])``)::

    gate  -> {"type": "ready", "session_id", "project_id"}
    hook  -> {"type": "register_tool", "id", "name"}        <- {"type": "registered", "id", "name"}
    hook  -> {"type": "govern", "id", "tool", "args"}       <- {"type": "govern_result", "id", "phase",
                                                                "action_id", "request_id", "deadline",
                                                                "output", "documents", "reason", "kind"}
    hook  -> {"type": "resume", "id", "action_id", "request_id", "wait_ms"?}  <- govern_result
    gate  -> {"type": "run_tool", "id", "tool", "args", "action_id"}
    hook  -> {"type": "tool_result", "id", "output", "documents"} | {"type": "tool_error", "id", "message"}
    hook  -> {"type": "shutdown"}
    gate  -> {"type": "error", "id"?, "message"}            (a malformed or unknown message)

Tools registered by the hook are cards of transport kind ``lodestar`` (skill id
``lodestar``): the same policy, approvals and ledger govern them and skillyard's
own skills, which are callable through ``govern`` by their tool names. A tool that
is neither is refused (``unregistered_tool``). A hook tool body runs only inside
the gate's execute phase, through the ``run_tool`` callback.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

import orjson

from skillyard.card import Card, Limits
from skillyard.errors import (
    CallFailed,
    ConfigError,
    InvalidArguments,
    PolicyDenied,
    SkillError,
    SkillNotFound,
    SkillTimeout,
    SkillyardError,
)
from skillyard.gate.canon import digest_bytes, iso
from skillyard.transports.base import CallContext, Caller, CallResult, RawResult

MAX_LINE = 8 * 1024 * 1024
TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_ID_RE = re.compile(rb'"id"\s*:\s*(-?\d+|"[^"\\]{0,200}")')
CONFIG_KEYS = {"home", "project_id", "principal", "tool_exec_timeout_ms", "roots", "gate"}


def log(message: str) -> None:
    """Diagnostics go to stderr (stdout is the protocol channel)."""
    sys.stderr.write(f"[runtime-gate] {message}\n")
    sys.stderr.flush()


class SidecarConfig:
    """The sidecar's config file (JSON or TOML); relative paths are relative to the file."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path).expanduser().absolute()
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"config {p} cannot be read: {exc.strerror or exc}") from exc
        try:
            data = tomllib.loads(raw.decode()) if p.suffix == ".toml" else orjson.loads(raw)
        except (orjson.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config {p}: cannot parse: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config {p}: expected an object")
        unknown = sorted(set(data) - CONFIG_KEYS)
        if unknown:
            raise ConfigError(
                f"config {p}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(CONFIG_KEYS))}"
            )
        for key in ("home", "project_id", "principal"):
            if key in data and (not isinstance(data[key], str) or not data[key]):
                raise ConfigError(f"config {p}: {key} must be a non-empty string")
        base = p.parent
        self.path = p
        self.home = (base / data.get("home", ".skillyard")).absolute()
        self.project_id = data.get("project_id", "skillyard")
        self.principal = data.get("principal", "lodestar")
        timeout = data.get("tool_exec_timeout_ms", 30_000)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
            raise ConfigError(f"config {p}: tool_exec_timeout_ms must be a positive integer")
        self.exec_timeout = timeout / 1000
        gate = data.get("gate")
        if not isinstance(gate, dict) or "policy" not in gate:
            raise ConfigError(
                f"config {p}: a 'gate' table with a 'policy' is required; the sidecar never "
                "runs ungoverned"
            )
        gate = dict(gate)
        for key in ("policy", "inbox"):
            if isinstance(gate.get(key), str):
                gate[key] = str((base / gate[key]).absolute())
        self.runtime_config: dict[str, Any] = {"gate": gate}
        roots = data.get("roots")
        if roots is not None:
            if not isinstance(roots, dict):
                raise ConfigError(f"config {p}: roots must be a table of layer = [paths]")
            self.runtime_config["roots"] = {
                layer: [str((base / d).absolute()) for d in ([v] if isinstance(v, str) else v)]
                for layer, v in roots.items()
            }


class LodestarTransport:
    """Runs hook-registered tools by calling back into the hook (``run_tool``)."""

    kind = "lodestar"

    def __init__(self) -> None:
        self.server: GateServer | None = None

    async def call(self, card: Card, args: dict[str, Any], ctx: CallContext) -> RawResult:
        if self.server is None:
            raise SkillError(f"{card.name}: no hook is connected to run it")
        reply = await self.server.run_tool(
            card.name, args, ctx.notes.get("gate.action_id"), timeout=ctx.remaining
        )
        docs = reply.get("documents") or []
        events = ({"kind": "documents", "documents": docs},) if docs else ()
        return RawResult(output=reply.get("output"), events=events)

    async def health(self) -> dict[str, Any]:
        return {"ok": self.server is not None}

    async def aclose(self) -> None:
        return None


class GateServer:
    """One sidecar session: reads requests, answers them, calls tools back."""

    def __init__(self, runtime: Any, config: SidecarConfig, *, out: Any = None) -> None:
        self.runtime = runtime
        self.config = config
        self.session_id = "ses_" + os.urandom(10).hex()
        self.caller = Caller(principal=config.principal, session_id=self.session_id)
        self.hook_tools: set[str] = set()
        self._out = out or sys.stdout.buffer
        self._write_lock = threading.Lock()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- output --------------------------------------------------------------------------

    def send(self, msg: dict[str, Any]) -> None:
        try:
            line = json.dumps(msg, allow_nan=False, separators=(",", ":"), default=repr)
        except ValueError:
            # A tool produced NaN/Infinity: that is not JSON, so say so instead.
            line = json.dumps(
                {
                    "type": "error" if msg.get("type") != "govern_result" else "govern_result",
                    "id": msg.get("id"),
                    "phase": "failed",
                    "kind": "execution_failed",
                    "reason": "the result holds NaN or Infinity, which JSON cannot carry",
                    "message": "the result holds NaN or Infinity, which JSON cannot carry",
                }
            )
        with self._write_lock:
            self._out.write(line.encode() + b"\n")
            self._out.flush()

    def error(self, rid: Any, message: str) -> None:
        msg: dict[str, Any] = {"type": "error", "message": message}
        if rid is not None:
            msg["id"] = rid
        self.send(msg)

    # -- input ---------------------------------------------------------------------------

    def handle_line(self, raw: bytes) -> bool:
        """Dispatch one line; returns False on shutdown."""
        raw = raw.strip()
        if not raw:
            return True
        if len(raw) > MAX_LINE:
            self.error(_guess_id(raw[:4096]), f"message larger than {MAX_LINE} bytes; refused")
            return True
        try:
            msg = orjson.loads(raw)  # strict: NaN and Infinity are refused here
        except orjson.JSONDecodeError as exc:
            self.error(_guess_id(raw), f"malformed JSON ({exc.msg}); NaN/Infinity are not JSON")
            return True
        if not isinstance(msg, dict):
            self.error(None, "each line must be a JSON object with a 'type'")
            return True
        kind = msg.get("type")
        rid = msg.get("id")
        if kind == "shutdown":
            return False
        if kind in ("tool_result", "tool_error"):
            fut = self._pending.pop(str(rid), None)
            if fut is None or fut.done():
                self.error(rid, f"{kind} for unknown run_tool id {rid!r}")
            else:
                fut.set_result(msg)
            return True
        if kind not in ("register_tool", "govern", "resume"):
            self.error(rid, f"unknown message type {kind!r}")
            return True
        if not isinstance(rid, int | str) or isinstance(rid, bool):
            self.error(None, f"{kind}: 'id' must be an integer or a string")
            return True
        task = asyncio.get_running_loop().create_task(self._request(kind, rid, msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _request(self, kind: str, rid: Any, msg: dict[str, Any]) -> None:
        try:
            if kind == "register_tool":
                self.send(self.register(rid, msg))
            elif kind == "govern":
                self.send(await self.govern(rid, msg))
            else:
                self.send(await self.resume(rid, msg))
        except _BadRequest as exc:
            self.error(rid, str(exc))
        except Exception as exc:  # never leave a caller waiting
            log(f"internal error handling {kind}: {type(exc).__name__}: {exc}")
            self.error(rid, f"internal error handling {kind}: {type(exc).__name__}")

    # -- requests ------------------------------------------------------------------------

    def register(self, rid: Any, msg: dict[str, Any]) -> dict[str, Any]:
        name = msg.get("name")
        if not isinstance(name, str) or not TOOL_NAME_RE.match(name):
            raise _BadRequest(
                f"register_tool: name must match {TOOL_NAME_RE.pattern}, got {name!r}"
            )
        existing = self.runtime._cards.get(name)
        if existing is not None and existing.transport != "lodestar":
            raise _BadRequest(
                f"register_tool: {name!r} is already a skillyard skill; govern it by that name "
                "or register the hook tool under another name"
            )
        self.runtime.add_card(
            Card(
                id="lodestar",
                name=name,
                method=name,
                description=f"tool registered by a Lodestar runtime hook ({self.session_id})",
                transport="lodestar",
                operation=name,
                root="memory",
                source="lodestar-runtime-client",
                digest=digest_bytes(b"lodestar-tool:" + name.encode()),
                limits=Limits(timeout_sec=self.config.exec_timeout),
            )
        )
        self.hook_tools.add(name)
        return {"type": "registered", "id": rid, "name": name}

    async def govern(self, rid: Any, msg: dict[str, Any]) -> dict[str, Any]:
        tool, args = msg.get("tool"), msg.get("args", {})
        if not isinstance(tool, str) or not tool:
            raise _BadRequest("govern: 'tool' must be a non-empty string")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise _BadRequest("govern: 'args' must be a JSON object")
        try:
            result = await self.runtime.call(tool, args, caller=self.caller)
        except BaseException as exc:
            return self._failure(rid, exc)
        return self._result(rid, result)

    async def resume(self, rid: Any, msg: dict[str, Any]) -> dict[str, Any]:
        from skillyard.gate import actions

        action_id, request_id = msg.get("action_id"), msg.get("request_id")
        wait_ms = msg.get("wait_ms", 0)
        if not isinstance(action_id, str) or not isinstance(request_id, str):
            raise _BadRequest("resume: 'action_id' and 'request_id' must be strings")
        if isinstance(wait_ms, bool) or not isinstance(wait_ms, int) or wait_ms < 0:
            raise _BadRequest("resume: 'wait_ms' must be a non-negative integer")
        action = actions.get(self.runtime.store, action_id)
        if action is None or action.request_id != request_id:
            return self._rejected(
                rid,
                "precondition_failed",
                f"no held action {action_id!r} with request {request_id!r}",
                action_id=action_id,
                request_id=request_id,
            )
        try:
            result = await self.runtime.resume(action_id, wait_ms=wait_ms, caller=self.caller)
        except BaseException as exc:
            out = self._failure(rid, exc)
            out.setdefault("action_id", action_id)
            out["request_id"] = out.get("request_id") or request_id
            return out
        return self._result(rid, result)

    def _result(self, rid: Any, result: CallResult) -> dict[str, Any]:
        d = result.decision
        out: dict[str, Any] = {
            "type": "govern_result",
            "id": rid,
            "phase": d.phase,
            "action_id": d.action_id,
            "request_id": d.request_id,
            "deadline": iso(d.deadline) if d.deadline else None,
            "output": None,
            "reason": d.reason,
            "kind": d.kind,
        }
        if d.phase == "completed":
            out["output"] = result.output
            docs = [e.get("documents", []) for e in result.events if e.get("kind") == "documents"]
            out["documents"] = [doc for group in docs for doc in group]
            out["source"] = result.source
        return out

    def _rejected(self, rid: Any, kind: str, reason: str, **extra: Any) -> dict[str, Any]:
        out = {
            "type": "govern_result",
            "id": rid,
            "phase": "rejected",
            "action_id": None,
            "request_id": None,
            "deadline": None,
            "output": None,
            "reason": reason,
            "kind": kind,
        }
        out.update(extra)
        return out

    def _failure(self, rid: Any, exc: BaseException) -> dict[str, Any]:
        details = exc.details if isinstance(exc, SkillyardError) else {}
        extra = {k: details[k] for k in ("action_id", "request_id") if details.get(k)}
        if isinstance(exc, PolicyDenied):
            return self._rejected(rid, str(details.get("kind") or exc.code), exc.message, **extra)
        if isinstance(exc, SkillNotFound):
            return self._rejected(
                rid, "unregistered_tool", f"{exc.message} (unregistered tools are refused)", **extra
            )
        if isinstance(exc, InvalidArguments):
            return self._rejected(rid, "precondition_failed", exc.message, **extra)
        out = self._rejected(rid, "internal_error", "internal error", **extra)
        out["phase"] = "failed"
        if isinstance(exc, CallFailed):
            out["kind"] = str(details.get("kind") or "execution_failed")
            out["reason"] = exc.message
        elif isinstance(exc, SkillyardError):
            out["reason"] = exc.message
            if exc.code == "invalid_output":
                out["kind"] = "execution_failed"
        else:
            log(f"internal error: {type(exc).__name__}: {exc}")
            if not isinstance(exc, Exception):
                raise exc
        return out

    # -- callbacks -----------------------------------------------------------------------

    async def run_tool(
        self, tool: str, args: dict[str, Any], action_id: str | None, *, timeout: float
    ) -> dict[str, Any]:
        corr = f"rt-{next(self._ids)}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[corr] = fut
        self.send(
            {"type": "run_tool", "id": corr, "tool": tool, "args": args, "action_id": action_id}
        )
        try:
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise SkillTimeout(f"{tool}: the hook did not return within {timeout:.1f}s") from None
        finally:
            self._pending.pop(corr, None)
        if reply.get("type") == "tool_error":
            message = reply.get("message")
            raise SkillError(f"{tool}: {message if isinstance(message, str) else 'tool failed'}")
        return reply

    def fail_pending(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(SkillError("the hook closed the connection"))
        self._pending.clear()


class _BadRequest(Exception):
    pass


def _guess_id(raw: bytes) -> Any:
    """The request id of a line that is not valid JSON, so its caller still gets an answer."""
    m = _ID_RE.search(raw)
    if not m:
        return None
    try:
        return json.loads(m.group(1))
    except ValueError:
        return None


async def serve(config: SidecarConfig) -> int:
    """Run one sidecar session on stdin/stdout until shutdown or end of input."""
    from skillyard.runtime import Runtime

    transport = LodestarTransport()
    runtime = Runtime.open(
        config.home, config=config.runtime_config, transports={"lodestar": transport}
    )
    from skillyard.gate import find

    if find(runtime) is None:
        await runtime.aclose()
        raise ConfigError("the gate is not installed; refusing to serve ungoverned")
    server = GateServer(runtime, config)
    transport.server = server
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes | None] = asyncio.Queue()

    def reader() -> None:
        # os.read, not sys.stdin: a daemon thread blocked in a buffered read would abort
        # interpreter shutdown. Over-long lines are cut into MAX_LINE+1 pieces and refused.
        fd = sys.stdin.fileno()
        buf = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                if buf:
                    loop.call_soon_threadsafe(lines.put_nowait, buf)
                loop.call_soon_threadsafe(lines.put_nowait, None)
                return
            buf += chunk
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > MAX_LINE:
                        loop.call_soon_threadsafe(lines.put_nowait, buf)
                        buf = b""
                    break
                line, buf = buf[: nl + 1], buf[nl + 1 :]
                loop.call_soon_threadsafe(lines.put_nowait, line)

    threading.Thread(target=reader, name="gate-rpc-stdin", daemon=True).start()
    server.send({"type": "ready", "session_id": server.session_id, "project_id": config.project_id})
    log(f"ready: session {server.session_id}, policy {find(runtime).policy_version}")  # type: ignore[union-attr]
    try:
        while True:
            line = await lines.get()
            if line is None or not server.handle_line(line):
                break
        # The hook is gone or said goodbye: tool bodies can no longer answer, so calls
        # waiting on one fail (and are recorded so); then let the answers be written.
        server.fail_pending()
        if server._tasks:
            _, late = await asyncio.wait(list(server._tasks), timeout=2)
            for task in late:
                task.cancel()
    finally:
        server.fail_pending()
        await runtime.aclose()
    return 0


def main(config_path: str) -> int:
    """Entry point of ``skillyard runtime gate --config FILE``."""
    try:
        config = SidecarConfig(config_path)
        return asyncio.run(serve(config))
    except SkillyardError as exc:
        log(f"error [{exc.code}]: {exc.message}")
        return 2
    except KeyboardInterrupt:
        return 130
