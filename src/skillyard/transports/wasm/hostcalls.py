"""Host imports from module ``env``: each ``fn(ptr, len) -> u64`` carrying msgpack.

Every import maps onto one method of the host API (docs/host-api.md), so permissions
are checked in the one place that checks them. Wasm runs synchronously, so imports
use ``ctx.host.call_sync``:

* methods that do not wait on I/O (fs, env, kv, config, log) run right where the
  guest is, so a module importing only those runs inline on the event loop;
* a module importing one that waits (http, shell, models, invoke) runs on a worker
  thread, and ``call_sync`` runs that method on the loop while the thread blocks
  (``run_coroutine_threadsafe``; measured in bench/bench_wasm.py);
* ``log_write``, ``time_now`` and ``sys_info`` are answered locally.

A host without ``call_sync`` (a custom ``Host``) is driven through ``dispatch``. The
guest gets the result, or ``{error, code}``, in a buffer it allocated with
``skill_alloc``; it frees it with ``skill_free``.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import os
import platform
import shlex
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import wasmtime

from skillyard.errors import NotSupported, SkillyardError
from skillyard.transports.wasm import abi, engine

if TYPE_CHECKING:
    from skillyard.transports.base import CallContext

MAX_HOST_REQUEST = 4 * 1024 * 1024
MAX_LOG_BYTES = 64 * 1024
Params = dict[str, Any]


def _b64(data: Any) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(bytes(data or b"")).decode()


def _unb64(value: Any) -> bytes:
    return base64.b64decode(value) if isinstance(value, str) else b""


@dataclass(frozen=True)
class ImportSpec:
    """How one ``env`` import reaches the host API."""

    method: str | None  # host API method; None: answered locally
    params: Callable[[Params], Params]
    result: Callable[[Any], Any]


def _same(p: Params) -> Params:
    return p


def _http_result(r: Any) -> Any:
    if not isinstance(r, dict):
        return r
    body = _unb64(r["body_b64"]) if r.get("body_b64") else str(r.get("body") or "").encode()
    return {"status": r.get("status", 0), "headers": r.get("headers", {}), "body": body}


def _shell_params(p: Params) -> Params:
    argv = p.get("argv") or shlex.split(str(p.get("command", "")))
    out: Params = {"argv": argv}
    if p.get("workdir"):
        out["cwd"] = p["workdir"]
    if p.get("timeout_ms"):
        out["timeout_ms"] = p["timeout_ms"]
    if p.get("stdin"):
        out["stdin"] = p["stdin"]
    return out


def _shell_result(r: Any) -> Any:
    if not isinstance(r, dict):
        return r
    return {
        "output": str(r.get("stdout", "")) + str(r.get("stderr", "")),
        "stdout": r.get("stdout", ""),
        "stderr": r.get("stderr", ""),
        "exit_code": r.get("exit_code", 0),
    }


IMPORTS: dict[str, ImportSpec] = {
    "fs_read": ImportSpec(
        "fs.read_bytes",
        lambda p: {"path": p.get("path")},
        lambda r: {"content": _unb64(r.get("data_b64"))},
    ),
    "fs_write": ImportSpec(
        "fs.write_bytes",
        lambda p: {"path": p.get("path"), "data_b64": _b64(p.get("content"))},
        lambda r: r if isinstance(r, dict) else {},
    ),
    "fs_ls": ImportSpec(
        "fs.list",
        lambda p: {"path": p.get("path")},
        lambda r: {
            "entries": [
                {"name": e.get("name"), "size": e.get("size", 0), "is_dir": e.get("type") == "dir"}
                for e in (r or [])
            ]
        },
    ),
    "fs_mkdir": ImportSpec(
        "fs.mkdir", lambda p: {"path": p.get("path"), "parents": True}, lambda r: {}
    ),
    "fs_delete": ImportSpec(
        "fs.remove",
        lambda p: {"path": p.get("path"), "recursive": bool(p.get("recursive"))},
        lambda r: {},
    ),
    "fs_copy": ImportSpec(
        "fs.copy", lambda p: {"src": p.get("src"), "dst": p.get("dst")}, lambda r: {}
    ),
    "fs_glob": ImportSpec(
        "fs.glob",
        lambda p: {
            "pattern": (p.get("patterns") or [p.get("pattern", "*")])[0],
            **({"root": p["path"]} if p.get("path") else {}),
        },
        lambda r: {"entries": [{"path": x} for x in (r or [])]},
    ),
    "fs_grep": ImportSpec(
        "fs.grep",
        lambda p: {k: p[k] for k in ("pattern", "path", "glob", "max_matches") if k in p},
        lambda r: {"matches": r or []},
    ),
    "http_request": ImportSpec(
        "http.request",
        lambda p: {
            "method": p.get("method", "GET"),
            "url": p.get("url"),
            "headers": p.get("headers") or {},
            **({"body_b64": _b64(p["body"])} if p.get("body") else {}),
            **({"timeout_ms": p["timeout_ms"]} if p.get("timeout_ms") else {}),
        },
        _http_result,
    ),
    "http_get": ImportSpec(
        "http.request",
        lambda p: {"method": "GET", "url": p.get("url"), "headers": p.get("headers") or {}},
        _http_result,
    ),
    "http_post": ImportSpec(
        "http.request",
        lambda p: {
            "method": "POST",
            "url": p.get("url"),
            "headers": {"content-type": p.get("content_type", "application/octet-stream")},
            "body_b64": _b64(p.get("body")),
        },
        _http_result,
    ),
    "shell_exec": ImportSpec("shell.exec", _shell_params, _shell_result),
    "env_get": ImportSpec(
        "env.get", lambda p: {"name": p.get("name") or p.get("key")}, lambda r: {"value": r}
    ),
    "prompt_complete": ImportSpec(
        "models.llm",
        lambda p: {
            "system": p.get("system", ""),
            "user": p.get("prompt", ""),
            "options": {
                k: p[k] for k in ("temperature", "max_tokens") if p.get(k) not in (None, 0)
            },
        },
        lambda r: {"content": (r or {}).get("text", "")},
    ),
    "kv_get": ImportSpec("kv.get", lambda p: {"key": p.get("key")}, lambda r: {"value": r}),
    "kv_put": ImportSpec(
        "kv.put", lambda p: {k: p[k] for k in ("key", "value", "ttl_sec") if k in p}, lambda r: {}
    ),
    "invoke": ImportSpec(
        "invoke",
        lambda p: {"tool": p.get("tool"), "args": p.get("args") or {}},
        lambda r: {"result": r},
    ),
    "log_write": ImportSpec(None, _same, _same),
    "time_now": ImportSpec(None, _same, _same),
    "sys_info": ImportSpec(None, _same, _same),
}
LOCAL_IMPORTS = frozenset(name for name, spec in IMPORTS.items() if spec.method is None)
PROVIDED = frozenset(IMPORTS)
# Host methods that wait on I/O: a module importing one of these runs on a worker thread.
WAITING_METHODS = frozenset({"http.request", "shell.exec", "models.llm", "invoke"})
WAITING_IMPORTS = frozenset(n for n, spec in IMPORTS.items() if spec.method in WAITING_METHODS)


class CallState:
    """What host imports need while one guest call runs on this thread."""

    __slots__ = ("ctx", "fatal", "host_calls", "log_bytes", "loop", "pending")

    def __init__(self, ctx: CallContext | None, loop: asyncio.AbstractEventLoop | None) -> None:
        self.ctx = ctx
        self.loop = loop
        self.fatal: BaseException | None = None
        self.host_calls = 0
        self.log_bytes = 0
        self.pending: list[dict[str, str]] = []

    def log(self, stream: str, text: str, level: str = "info") -> None:
        """Append guest output to the call's log events (bounded; may run on any thread)."""
        if self.ctx is None or self.log_bytes >= MAX_LOG_BYTES:
            return
        room = MAX_LOG_BYTES - self.log_bytes
        text = text[:room]
        self.log_bytes += len(text)
        self.pending.append({"stream": stream, "level": level, "message": text})

    def flush(self) -> None:
        """Emit buffered log lines as ``log`` events on the call (on the calling thread)."""
        ctx, pending = self.ctx, self.pending
        if ctx is None or not pending:
            return
        self.pending = []
        merged: dict[str, list[str]] = {}
        for item in pending:
            if item["stream"] == "log":
                ctx.emit("log", stream="log", level=item["level"], message=item["message"])
            else:  # WASI output arrives in arbitrary chunks: one event per stream
                merged.setdefault(item["stream"], []).append(item["message"])
        for stream, parts in merged.items():
            ctx.emit("log", stream=stream, level="info", message="".join(parts))

    def dispatch(self, method: str, params: Params) -> Any:
        """Run one host API method for the guest, from this (synchronous) thread."""
        ctx, loop = self.ctx, self.loop
        if ctx is None:
            raise NotSupported(f"{method}: the host API is not available inside skill_describe()")
        self.host_calls += 1
        host = ctx.host
        call_sync = getattr(host, "call_sync", None)
        if call_sync is not None:
            return call_sync(method, params)
        coro = host.dispatch(method, params)
        if loop is not None and not _on_loop_thread(loop):
            fut = asyncio.run_coroutine_threadsafe(coro, loop)
            try:
                return fut.result(timeout=max(0.001, ctx.remaining))
            except FutureTimeout:
                fut.cancel()
                raise TimeoutError(f"{method} did not finish before the deadline") from None
        # On the loop thread: a host that answers without waiting can still be driven.
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value
        coro.close()
        raise NotSupported(
            f"{method}: this host cannot answer without waiting; set [options] thread = true"
        )


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


_tls = threading.local()


def current() -> CallState | None:
    return getattr(_tls, "state", None)


def enter(state: CallState) -> CallState | None:
    prev = getattr(_tls, "state", None)
    _tls.state = state
    return prev


def leave(prev: CallState | None) -> None:
    _tls.state = prev


def _local(name: str, params: Params, state: CallState) -> Any:
    if name == "log_write":
        level = str(params.get("level", "info"))
        msg = params.get("msg", params.get("message", ""))
        state.log("log", str(msg), level)
        return {}
    if name == "time_now":
        ns = time.time_ns()
        lt = time.localtime(ns // 1_000_000_000)
        return {
            "unix": ns // 1_000_000_000,
            "unix_nano": ns,
            "rfc3339": time.strftime("%Y-%m-%dT%H:%M:%S%z", lt),
            "timezone": time.strftime("%Z", lt),
            "utc_offset": lt.tm_gmtoff,
        }
    return {  # sys_info: nothing identifying beyond what any program can see
        "os": platform.system().lower(),
        "arch": platform.machine(),
        "num_cpu": os.cpu_count() or 1,
    }


def _answer(name: str, params: Params, state: CallState) -> Any:
    spec = IMPORTS[name]
    if spec.method is None:
        return _local(name, params, state)
    try:
        result = state.dispatch(spec.method, spec.params(params))
    except SkillyardError as exc:
        return {"error": exc.message, "code": exc.code}
    except TimeoutError as exc:
        return {"error": str(exc), "code": "timeout"}
    return spec.result(result)


def make_import(name: str) -> Callable[..., int]:
    """The Python function wasmtime calls for ``env.<name>``."""

    def host_import(caller: wasmtime.Caller, ptr: int, length: int) -> int:
        state = current()
        if state is None:  # called outside a skill call: refuse loudly, never crash
            raise RuntimeError(f"env.{name} called with no skill call in progress")
        try:
            mem = caller.get("memory")
            alloc = caller.get("skill_alloc")
            if not isinstance(mem, wasmtime.Memory) or not isinstance(alloc, wasmtime.Func):
                raise abi.AbiViolation(f"env.{name}: the caller exports no memory or skill_alloc")
            cctx = caller._context()
            base, size = engine.memory_view(cctx, mem)
            ptr &= 0xFFFFFFFF
            length &= 0xFFFFFFFF
            if length > MAX_HOST_REQUEST or ptr + length > size:
                raise abi.AbiViolation(
                    f"env.{name}: request bytes {ptr}..{ptr + length} are outside the "
                    f"{size}-byte memory (or over {MAX_HOST_REQUEST} bytes)"
                )
            raw = ctypes.string_at(base + ptr, length) if length else b""
            params = abi.unpack(raw, f"env.{name} request") if raw else {}
            if not isinstance(params, dict):
                raise abi.AbiViolation(f"env.{name}: the request must be a msgpack map")
            try:
                answer = _answer(name, params, state)
            except abi.AbiViolation:
                raise
            except Exception as exc:  # a host bug is reported to the guest, not raised through it
                answer = {"error": f"{type(exc).__name__}: {exc}", "code": "host_error"}
            out = abi.pack(answer)
            # wasmtime-py's generic Func.__call__ costs more than the rest of the import.
            optr = engine.call_alloc(cctx, alloc, len(out))
            base, size = engine.memory_view(cctx, mem)  # skill_alloc may have grown it
            if optr <= 0 or optr + len(out) > size:
                raise abi.AbiViolation(f"skill_alloc({len(out)}) returned {optr}, outside memory")
            ctypes.memmove(base + optr, out, len(out))
            return (optr << 32) | len(out)
        except BaseException as exc:
            state.fatal = exc
            raise

    host_import.__name__ = f"env_{name}"
    return host_import
