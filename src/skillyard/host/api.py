"""The host API bound to one call: one dispatch table, the permission check in one place.

``Host.dispatch(method, params)`` is the entry point every binding uses (Python
skills through the typed helpers, process workers through reverse JSON-RPC, Lua
and WASM through their tables and imports). For every method the table names a
*guard*, the permission check, which runs before the handler and hands it what it
resolved (a confined real path, the pinned http limits, the allowed executable...);
there is no way to reach a handler around it. ``Host.call_sync`` is the same path
for bindings that cannot await (Lua, WASM and sync Python skills).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from skillyard.errors import HostError, PermissionDenied, SkillyardError
from skillyard.host import config as config_mod
from skillyard.host import fs, invoke, kv, models, net, shell, tools
from skillyard.host.access import Effective, effective_for
from skillyard.host.common import arg, check_keys, invalid
from skillyard.host.grants import Grants, admit
from skillyard.host.helpers import Helpers
from skillyard.host.permissions import parse_permissions

if TYPE_CHECKING:
    from skillyard.card import Card
    from skillyard.manifests import SkillPackage
    from skillyard.runtime import Runtime
    from skillyard.transports.base import CallContext

Mode = Literal["inline", "thread", "async"]
Guard = Callable[["Host", dict[str, Any]], Any]
Handler = Callable[["Host", dict[str, Any], Any], Any]
LOG_LEVELS = ("debug", "info", "warning", "error")
_skill_log = logging.getLogger("skillyard.skill")


@dataclass(frozen=True, slots=True)
class Method:
    """One host method: its parameters, its permission guard, its handler, how it runs."""

    params: tuple[str, ...]
    guard: Guard | None
    handler: Handler
    mode: Mode = "inline"


def _fs_guard(method: str, *, write: bool = False, follow: bool = True) -> Guard:
    def guard(host: Host, params: dict[str, Any]) -> str:
        return host.perms.fs_resolve(params.get("path"), write=write, method=method, follow=follow)

    return guard


def _fs_pair(method: str, *, src_write: bool, follow: bool) -> Guard:
    def guard(host: Host, params: dict[str, Any]) -> tuple[str, str]:
        perms = host.perms
        src = perms.fs_resolve(params.get("src"), write=src_write, method=method, follow=follow)
        return src, perms.fs_resolve(params.get("dst"), write=True, method=method, follow=follow)

    return guard


def _glob_guard(host: Host, params: dict[str, Any]) -> str | None:
    root = params.get("root")
    if root is None:
        return None  # every granted directory; each match is checked again
    return host.perms.fs_resolve(root, write=False, method="fs.glob")


def _env_guard(host: Host, params: dict[str, Any]) -> str:
    name: str = arg(params, "name", str, "env.get")
    host.perms.env(name)
    return name


def _model_guard(kind: str) -> Guard:
    def guard(host: Host, params: dict[str, Any]) -> None:
        host.perms.model(kind)

    return guard


def _tool_guard(host: Host, params: dict[str, Any]) -> None:
    host.perms.tool(arg(params, "name", str, "tools.call"))


def _env_get(host: Host, params: dict[str, Any], name: str) -> str | None:
    return os.environ.get(name)


def _log(host: Host, params: dict[str, Any], permit: Any) -> None:
    level = arg(params, "level", str, "log", default="info")
    if level not in LOG_LEVELS:
        raise invalid("log", f"params.level must be one of {', '.join(LOG_LEVELS)}")
    message = arg(params, "message", str, "log")[:8192]
    fields = arg(params, "fields", dict, "log", default={})
    host.ctx.emit("log", level=level, message=message, fields=fields)
    _skill_log.log(
        logging.getLevelName(level.upper()),
        "%s [%s] %s",
        host.ctx.tool,
        host.ctx.call_id,
        message,
    )
    return None


def _info(host: Host, params: dict[str, Any], permit: Any) -> dict[str, Any]:
    card = host.ctx.card
    resources = Path(card.source) / "resources" if card.source else None
    return {
        "skill_id": card.id,
        "tool": card.name,
        "entry": card.method,
        "call_id": host.ctx.call_id,
        "cwd": host.perms.bases["skill"],
        "workspace": host.perms.bases["workspace"],
        "temp_dir": host.services.temp_dir(card.id),
        "resources_dir": str(resources) if resources is not None and resources.is_dir() else None,
        "remaining_ms": int(host.ctx.remaining * 1000),
    }


def build_methods(services: HostServices) -> dict[str, Method]:
    """The dispatch table (docs/host-api.md lists the same methods)."""
    m: dict[str, Method] = {
        "fs.read_text": Method(("path", "encoding"), _fs_guard("fs.read_text"), fs.read_text),
        "fs.read_bytes": Method(("path",), _fs_guard("fs.read_bytes"), fs.read_bytes),
        "fs.write_text": Method(
            ("path", "text", "append"), _fs_guard("fs.write_text", write=True), fs.write_text
        ),
        "fs.write_bytes": Method(
            ("path", "data_b64", "append"), _fs_guard("fs.write_bytes", write=True), fs.write_bytes
        ),
        "fs.list": Method(("path",), _fs_guard("fs.list"), fs.list_dir),
        "fs.stat": Method(("path",), _fs_guard("fs.stat", follow=False), fs.stat_path),
        "fs.exists": Method(("path",), _fs_guard("fs.exists", follow=False), fs.exists),
        "fs.mkdir": Method(("path", "parents"), _fs_guard("fs.mkdir", write=True), fs.mkdir),
        "fs.remove": Method(
            ("path", "recursive"), _fs_guard("fs.remove", write=True, follow=False), fs.remove
        ),
        "fs.rename": Method(
            ("src", "dst"), _fs_pair("fs.rename", src_write=True, follow=False), fs.rename
        ),
        "fs.copy": Method(
            ("src", "dst"), _fs_pair("fs.copy", src_write=False, follow=True), fs.copy, "thread"
        ),
        "fs.glob": Method(("pattern", "root"), _glob_guard, fs.glob, "thread"),
        "fs.grep": Method(
            ("pattern", "path", "glob", "max_matches"), _fs_guard("fs.grep"), fs.grep, "thread"
        ),
        "http.request": Method(
            ("method", "url", "headers", "body", "body_b64", "timeout_ms"),
            lambda host, params: net.guard(host.perms, params),
            net.request,
            "async",
        ),
        "shell.exec": Method(
            ("argv", "cwd", "timeout_ms", "stdin"),
            lambda host, params: shell.guard(host.perms, params),
            shell.exec_,
            "async",
        ),
        "env.get": Method(("name",), _env_guard, _env_get),
        "log": Method(("level", "message", "fields"), None, _log),
        "runtime.info": Method((), None, _info),
        "invoke": Method(("tool", "args"), invoke.guard, invoke.invoke, "async"),
    }
    kv_params = ("key", "value", "ttl_sec", "prefix", "limit")
    for name, handler in kv.handlers(services.kv, "kv").items():
        m[name] = Method(kv_params, None, handler)
    for name, handler in kv.handlers(services.cache, "cache").items():
        m[name] = Method(kv_params, None, handler)
    for name, handler in config_mod.handlers(services.config).items():
        m[name] = Method(("key", "value"), None, handler)
    model_handlers = models.handlers(services.models)
    m["models.status"] = Method((), None, model_handlers["models.status"])
    m["models.embed"] = Method(
        ("text",), _model_guard("embed"), model_handlers["models.embed"], "async"
    )
    m["models.llm"] = Method(
        ("system", "user", "options"), _model_guard("llm"), model_handlers["models.llm"], "async"
    )
    tool_handlers = tools.handlers(services.tools)
    m["tools.list"] = Method((), None, tool_handlers["tools.list"])
    m["tools.has"] = Method(("name",), None, tool_handlers["tools.has"])
    m["tools.call"] = Method(("name", "args"), _tool_guard, tool_handlers["tools.call"], "async")
    return m


class HostServices:
    """Runtime-wide parts of the host API: grants, stores, registries, the dispatch table."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        label = str(runtime.home.config_path) if runtime.home is not None else "runtime config"
        self.grants = Grants.from_config(runtime.config.get("grants"), file=label)
        host_cfg = runtime.config.get("host") or {}
        if not isinstance(host_cfg, Mapping):
            raise HostError(f"{label}: [host] must be a table", code="config_invalid")
        workspace = host_cfg.get("workspace")
        if workspace is not None:
            # A relative workspace is relative to the runtime home (like [roots]).
            anchor = str(runtime.home.path) if runtime.home is not None else os.getcwd()
            self.workspace = os.path.realpath(
                os.path.join(anchor, os.path.expanduser(str(workspace)))
            )
        elif runtime.home is not None:
            # The home's own workspace is ours to create; a configured one must exist.
            home_ws = runtime.home.path / "workspace"
            home_ws.mkdir(parents=True, exist_ok=True)
            self.workspace = os.path.realpath(home_ws)
        else:
            self.workspace = os.path.realpath(os.getcwd())
        self.kv = kv.KeyValue(runtime.store, "host_kv")
        self.cache = kv.KeyValue(
            runtime.store,
            "host_cache",
            default_ttl=kv.CACHE_DEFAULT_TTL_SEC,
            max_entries=kv.CACHE_MAX_ENTRIES,
        )
        self.config = config_mod.ConfigStore(runtime.store)
        self.models = models.ModelRegistry()
        self.tools = tools.ToolRegistry()
        self.methods = build_methods(self)
        self.loop: asyncio.AbstractEventLoop | None = None
        # id(card) -> (weak ref to the card, its permissions); identity, not dataclass equality.
        self._effective: dict[int, tuple[weakref.ref[Card], Effective]] = {}
        self._lock = threading.Lock()
        self._temp_root: str | None = None

    def temp_dir(self, skill: str) -> str:
        """A private (0700) temporary directory for one skill, made on first use."""
        with self._lock:
            if self._temp_root is None:
                self._temp_root = tempfile.mkdtemp(prefix="skillyard-host-")
                weakref.finalize(self, shutil.rmtree, self._temp_root, ignore_errors=True)
            path = os.path.join(self._temp_root, skill)
            os.makedirs(path, mode=0o700, exist_ok=True)
            return path

    def declared(self, card: Card) -> dict[str, Any]:
        """The card's permissions in normalised form (cards built in code may carry raw ones)."""
        return parse_permissions(card.permissions, file=card.source or f"tool {card.name}")

    def effective(self, card: Card) -> Effective:
        """The effective permissions of ``card`` (declared, narrowed by grants), cached."""
        hit = self._effective.get(id(card))
        if hit is not None and hit[0]() is card:
            return hit[1]
        declared = self.declared(card)
        uses_temp = any(e.get("base") == "temp" for e in declared.get("fs", ()))
        eff = effective_for(
            card.id,
            declared,
            self.grants.layers_for(card.id),
            skill_dir=card.source,
            workspace=self.workspace,
            temp_dir=self.temp_dir(card.id)
            if uses_temp
            else os.path.join(tempfile.gettempdir(), "skillyard-unused"),
        )
        key = id(card)
        self._effective[key] = (weakref.ref(card, lambda _: self._effective.pop(key, None)), eff)
        return eff

    def admit(self, pkg: SkillPackage) -> None:
        """Refuse a package whose required permissions its grants do not cover."""
        if not pkg.permissions:  # most packages: nothing declared, nothing to refuse
            return
        declared = parse_permissions(pkg.permissions, file=str(pkg.path / pkg.format))
        admit(pkg.id, declared, self.grants, file=str(pkg.path))

    def doctor(self) -> list[dict[str, str]]:
        """``skillyard doctor`` checks: grant rules that match no package (likely typos)."""
        import fnmatch

        ids = set(self.runtime.packages) | {p.skill_id for p in self.runtime.problems if p.skill_id}
        out = []
        for pattern, layer in self.grants.rules:
            if not any(fnmatch.fnmatchcase(i, pattern) for i in ids):
                out.append(
                    {"level": "warning", "message": f"{layer.source} matches no skill package"}
                )
        return out

    def host_for(self, ctx: CallContext) -> Host:
        """The ``runtime.host_factory``: a Host bound to one call."""
        return Host(self, ctx)


class Host(Helpers):
    """The host API for one call: card, caller, call id and effective permissions."""

    __slots__ = ("ctx", "perms", "services", "skill")

    def __init__(self, services: HostServices, ctx: CallContext) -> None:
        self.services = services
        self.ctx = ctx
        self.skill = ctx.card.id
        self.perms = services.effective(ctx.card)
        try:
            services.loop = asyncio.get_running_loop()
        except RuntimeError:
            pass
        super().__init__(self.dispatch)

    @property
    def runtime(self) -> Runtime:
        return self.ctx.runtime

    @property
    def config_decls(self) -> dict[str, Any] | None:
        pkg = self.runtime.packages.get(self.skill)
        if pkg is None or self.ctx.card.source != str(pkg.path):
            return None
        return config_mod.decls_of(pkg.config) or None

    def effective(self, card: Card) -> Effective:
        return self.services.effective(card)

    def _prepare(self, method: str, params: Any) -> tuple[Method, dict[str, Any], Any]:
        spec = self.services.methods.get(method) if isinstance(method, str) else None
        if spec is None:
            raise HostError(
                f"unknown host method {method!r}; see docs/host-api.md", code="unknown_method"
            )
        if params is None:
            params = {}
        elif not isinstance(params, dict):
            raise invalid(method, f"params must be an object, got {type(params).__name__}")
        check_keys(params, spec.params, method)
        # THE permission check: every method passes its guard before its handler runs.
        permit = spec.guard(self, params) if spec.guard is not None else None
        return spec, params, permit

    def _tag(self, exc: SkillyardError, method: str) -> None:
        if exc.tool is None:
            exc.tool = self.ctx.tool
        if exc.call_id is None:
            exc.call_id = self.ctx.call_id
        if isinstance(exc, PermissionDenied):
            self.ctx.emit("host.denied", method=method, message=exc.message)

    async def dispatch(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Run one host method (``await``-able); raises PermissionDenied or HostError."""
        try:
            spec, params, permit = self._prepare(method, params)
            if spec.mode == "async":
                return await spec.handler(self, params, permit)
            if spec.mode == "thread":
                return await asyncio.to_thread(spec.handler, self, params, permit)
            return spec.handler(self, params, permit)
        except SkillyardError as exc:
            self._tag(exc, method)
            raise

    def call_sync(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Run one host method from code that cannot await (Lua, WASM, sync Python skills).

        Sync methods run right here. Methods that wait on I/O (http, shell, models,
        host tools, invoke) run on the runtime's loop when called from a worker thread;
        on the loop's own thread they cannot wait and raise ``not_supported``.
        """
        try:
            spec, params, permit = self._prepare(method, params)
            if spec.mode != "async":
                return spec.handler(self, params, permit)
            try:
                asyncio.get_running_loop()
                on_loop = True
            except RuntimeError:
                on_loop = False
            if on_loop:
                raise HostError(
                    f"{method}: a synchronous skill running on the event loop cannot wait for "
                    "it; make the skill function async, or set options.thread = true",
                    code="not_supported",
                )
            coro = spec.handler(self, params, permit)
            loop = self.services.loop
            if loop is not None and loop.is_running():
                return asyncio.run_coroutine_threadsafe(coro, loop).result(self.ctx.remaining + 5)
            return asyncio.run(coro)
        except SkillyardError as exc:
            self._tag(exc, method)
            raise

    @property
    def sync(self) -> Helpers:
        """The same typed helpers, blocking: ``ctx.host.sync.fs.read_text(path)``."""
        return Helpers(self.call_sync)


__all__ = ["Host", "HostServices", "Method", "build_methods"]
