"""The local half of the ``vulcan`` table: json, path, log, context, require.

Everything that touches the world (fs, config, cache, models, host tools,
``vulcan.call``) goes through ``ctx.host.dispatch`` as a host request from the
Lua coroutine; these helpers need no permission and run synchronously. Each
returns ``(True, value)`` or ``(False, code, message)`` so no Python exception
ever crosses into Lua.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from skillyard.transports.lua.isolate import API_NAMES, SOURCES, ConversionError

if TYPE_CHECKING:
    from skillyard.card import Card
    from skillyard.transports.base import CallContext
    from skillyard.transports.lua.isolate import Isolate

MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
MAX_LOG_CHARS = 8192
MAX_LOG_LINES = 1000
MAX_KEPT_ERRORS = 64


class CallState:
    """What the local helpers of one isolate need to know about the call in flight."""

    __slots__ = ("card", "ctx", "errors", "logged", "logs", "modules")

    def __init__(
        self,
        card: Card | None = None,
        ctx: CallContext | None = None,
        modules: Callable[[str], tuple[bytes, str]] | None = None,
        logs: list[dict[str, Any]] | None = None,
    ) -> None:
        self.card = card
        self.ctx = ctx
        self.modules = modules
        self.logs = logs
        self.errors: list[BaseException] = []
        self.logged = 0


IDLE = CallState()


def _ok(value: Any) -> tuple[bool, Any]:
    return True, value


def _fail(code: str, message: str) -> tuple[bool, str, str]:
    return False, code, message


class LocalApi:
    """The Python callables the harness binds into ``vulcan`` (one instance per isolate)."""

    def __init__(self) -> None:
        self.iso: Isolate | None = None
        self.state = IDLE
        self.own = CallState()  # reused by each call into this isolate (see ``begin``)

    def begin(
        self,
        card: Card,
        ctx: CallContext | None,
        modules: Callable[[str], tuple[bytes, str]] | None,
    ) -> None:
        """Point the helpers at a new call: same as a fresh ``CallState``, without making one."""
        st = self.own
        st.card, st.ctx, st.modules = card, ctx, modules
        if st.errors:
            st.errors = []
        st.logged = 0
        self.state = st

    def end(self) -> None:
        """No call in flight: the helpers see ``IDLE`` and hold on to nothing of the last one.

        ``own`` is left as a direct run finds it (see transports/lua/direct.py): the card's
        modules, no context, no kept errors."""
        self.state = IDLE
        own = self.own
        own.ctx = None
        if own.errors:
            own.errors = []

    def null_marker(self, marker: Any) -> None:
        """Keep the harness's JSON null marker (called once, as the extra part loads)."""
        assert self.iso is not None
        self.iso._null = marker

    def fetch(self, name: Any) -> Any:
        """What the harness asks for by name the first time it needs it: one of the helpers
        below, or a shared chunk or clock from :data:`~skillyard.transports.lua.isolate.SOURCES`."""
        if name in API_NAMES:
            return getattr(self, name)
        return SOURCES.get(name)

    # The harness is handed the object itself as its fetch function: lupa takes ~4x longer
    # to push a bound method into a new VM than a plain object.
    __call__ = fetch

    # -- json ------------------------------------------------------------------------------

    def json_encode(self, value: Any = None) -> tuple[Any, ...]:
        assert self.iso is not None
        try:
            return _ok(orjson.dumps(self.iso.to_py(value)).decode())
        except (ConversionError, TypeError, UnicodeDecodeError) as exc:
            return _fail("invalid_argument", f"vulcan.json.encode: {exc}")

    def json_decode(self, text: Any = None) -> tuple[Any, ...]:
        assert self.iso is not None
        if not isinstance(text, str | bytes):
            return _fail("invalid_argument", "vulcan.json.decode expects a string")
        try:
            return _ok(self.iso.to_lua(orjson.loads(text)))
        except orjson.JSONDecodeError as exc:
            return _fail("invalid_argument", f"vulcan.json.decode: not valid JSON: {exc}")

    # -- path ------------------------------------------------------------------------------

    def path(self, name: str, *args: Any) -> tuple[Any, ...]:
        if not all(isinstance(a, str) for a in args):
            return _fail("invalid_argument", f"vulcan.path.{name} expects strings")
        try:
            if name == "join":
                return _ok(posixpath.join(*args) if args else "")
            (p,) = args
            if name == "basename":
                return _ok(posixpath.basename(p))
            if name == "dirname":
                return _ok(posixpath.dirname(p))
            if name == "extname":
                return _ok(posixpath.splitext(p)[1])
            if name == "stem":
                return _ok(posixpath.splitext(posixpath.basename(p))[0])
            if name == "normalize":
                return _ok(posixpath.normpath(p))
            if name == "is_absolute":
                return _ok(posixpath.isabs(p))
            if name == "split":
                assert self.iso is not None
                return _ok(self.iso.to_lua([part for part in p.split("/") if part]))
        except ValueError:
            return _fail("invalid_argument", f"vulcan.path.{name}: wrong number of arguments")
        return _fail("not_supported", f"vulcan.path.{name} is not supported by skillyard")

    # -- log, context, require ---------------------------------------------------------

    def log(self, level: Any, message: Any) -> tuple[Any, ...]:
        state = self.state
        card = state.card
        if level == "debug" and not (card is not None and card.options.get("debug")):
            return _ok(None)  # debug lines only for packages with `debug: true`
        state.logged += 1
        if state.logged > MAX_LOG_LINES:
            if state.logged == MAX_LOG_LINES + 1:
                level, message = "warning", f"more than {MAX_LOG_LINES} log lines; the rest dropped"
            else:
                return _ok(None)
        event = {"level": str(level)[:16], "message": str(message)[:MAX_LOG_CHARS]}
        if state.ctx is not None:
            state.ctx.emit("log", **event)
        elif state.logs is not None:
            state.logs.append(event)
        return _ok(None)

    def context(self) -> Any:
        assert self.iso is not None
        state = self.state
        ctx, card = state.ctx, state.card
        info: dict[str, Any] = {}
        if card is not None:
            info.update(skill_id=card.id, tool=card.name, entry=card.method, version=card.version)
        if ctx is not None:
            info.update(
                call_id=ctx.call_id,
                request_id=ctx.call_id,
                principal=ctx.caller.principal,
                authority=ctx.caller.authority,
                session_id=ctx.caller.session_id,
                depth=ctx.depth,
            )
        return self.iso.to_lua(info)

    def module(self, name: Any) -> tuple[Any, ...]:
        if not isinstance(name, str) or not MODULE_RE.match(name):
            return False, f"require: {name!r} is not a module name", ""
        loader = self.state.modules
        if loader is None:
            return False, f"module {name!r} not found: this code has no skill package", ""
        try:
            code, chunkname = loader(name)
        except LookupError as exc:
            return False, str(exc), ""
        return True, code, "@" + chunkname


# The Lua half: the ``vulcan`` table itself, compiled once and loaded into an isolate the
# first time a skill touches ``vulcan``. Host functions yield to the transport (HOSTREQ);
# the local ones call the LocalApi methods above.
VULCAN = r"""
local PY, HOSTREQ, FROZEN, readonly, mkerr, get_ctx, log, co_yield, co_isyieldable, NULL = ...
local function after_host(ok, v, code, message, id)
  if ok then return v end
  error(mkerr(code, message, id), 0)
end
local function host(name, method, params)
  if not co_isyieldable() then
    error(mkerr("not_supported", "vulcan." .. name .. " cannot be called from inside a C "
      .. "callback (string.gsub, table.sort, a __tostring metamethod); call it outside"), 2)
  end
  return after_host(co_yield(HOSTREQ, method, params))
end
local function after_local(ok, v, message)
  if ok then return v end
  error(mkerr(v, message), 0)
end
local function names(...)
  local list, n = {...}, select("#", ...)
  return function(...)
    local t = {}
    for i = 1, n do t[list[i]] = (select(i, ...)) end
    return t
  end
end
local function hostfn(name, method, params)
  return function(...) return host(name, method, params(...)) end
end
local function localfn(name)
  local f = PY[name]
  return function(...) return after_local(f(...)) end
end
local NS = {
  config = {get = {"config.get", names("key")}, has = {"config.has", names("key")},
            set = {"config.set", names("key", "value")}, delete = {"config.delete", names("key")},
            list = {"config.list", names()}},
  fs = {read = {"fs.read_text", names("path")}, read_text = {"fs.read_text", names("path", "encoding")},
        read_bytes = {"fs.read_bytes", names("path")},
        write = {"fs.write_text", names("path", "text")},
        write_text = {"fs.write_text", names("path", "text", "append")},
        append = {"fs.write_text", function(path, text) return {path = path, text = text, append = true} end},
        write_bytes = {"fs.write_bytes", names("path", "data_b64")},
        list = {"fs.list", names("path")}, stat = {"fs.stat", names("path")},
        exists = {"fs.exists", names("path")}, mkdir = {"fs.mkdir", names("path", "parents")},
        remove = {"fs.remove", names("path", "recursive")}, rename = {"fs.rename", names("src", "dst")},
        copy = {"fs.copy", names("src", "dst")}, glob = {"fs.glob", names("pattern", "root")},
        grep = {"fs.grep", names("pattern", "path", "glob", "max_matches")}},
  cache = {put = {"cache.put", names("key", "value", "ttl_sec")}, get = {"cache.get", names("key")},
           delete = {"cache.delete", names("key")}},
  models = {status = {"models.status", names()}, embed = {"models.embed", names("text")},
            llm = {"models.llm", names("system", "user", "options")}},
  host = {list = {"tools.list", names()}, has = {"tools.has", names("name")},
          call = {"tools.call", names("name", "args")}},
}
local function unsupported(full)
  return function()
    error(mkerr("not_supported", full .. " is not supported by skillyard"), 2)
  end
end
local function namespace(prefix, fns)
  local proxy = setmetatable({}, {
    __index = function(_, k)
      local f = fns[k]
      if f ~= nil then return f end
      if type(k) ~= "string" then return nil end
      return unsupported(prefix .. "." .. k)
    end,
    __newindex = readonly,
    __call = function()
      error(mkerr("not_supported", prefix .. " is not supported by skillyard"), 2)
    end,
    __pairs = function() return function(_, k) return next(fns, k) end, nil, nil end,
    __metatable = false,
  })
  FROZEN[proxy] = true
  return proxy
end
local VNS = {}
for ns, spec in pairs(NS) do
  local fns = {}
  for fname, s in pairs(spec) do fns[fname] = hostfn(ns .. "." .. fname, s[1], s[2]) end
  VNS[ns] = fns
end
VNS.models.has = function(kind)
  local status = host("models.has", "models.status", {})
  return type(status) == "table" and status[kind] == true
end
VNS.json = {encode = localfn("json_encode"), decode = localfn("json_decode"), null = NULL}
VNS.path = {}
for _, f in ipairs({"join", "basename", "dirname", "extname", "normalize", "is_absolute",
                    "split", "stem"}) do
  local py = PY.path
  VNS.path[f] = function(...) return after_local(py(f, ...)) end
end
VNS.runtime = {}
for _, f in ipairs({"cwd", "temp_dir", "resources_dir", "workspace"}) do
  VNS.runtime[f] = function() return host("runtime." .. f, "runtime.info", {})[f] end
end
VNS.runtime.skill_dir = VNS.runtime.cwd
VNS.runtime.info = function() return host("runtime.info", "runtime.info", {}) end
VNS.runtime.log = log
local VCALL = hostfn("call", "invoke", names("tool", "args"))
local PROXIES = {}
for ns, fns in pairs(VNS) do PROXIES[ns] = namespace("vulcan." .. ns, fns) end
local VULCAN = setmetatable({}, {
  __index = function(_, k)
    if k == "context" then return get_ctx() end
    if k == "call" then return VCALL end
    local p = PROXIES[k]
    if p ~= nil then return p end
    if type(k) ~= "string" then return nil end
    return namespace("vulcan." .. k, {})
  end,
  __newindex = readonly,
  __pairs = function()
    local all = {call = VCALL}
    for ns, p in pairs(PROXIES) do all[ns] = p end
    return next, all, nil
  end,
  __metatable = false,
})
FROZEN[VULCAN] = true
return VULCAN
"""


__all__ = ["VULCAN", "CallState", "LocalApi"]
