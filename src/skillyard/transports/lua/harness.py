"""The Lua side of an isolate: the sandbox harness, as Lua source.

:data:`HARNESS` runs once in every new ``lupa.lua54`` runtime with the full
standard library still present. It keeps the privileged functions it needs
(``debug.sethook``, ``debug.setupvalue``, binary ``load``) as upvalues, removes
everything a skill must not reach from the real globals, and returns a small
table of entry points the Python side drives (``call``, ``resume``, ``compile``,
``describe``). Skill code only ever runs inside a coroutine that carries the
instruction/deadline count hook, in a fresh ``_ENV`` per call whose fallbacks
are read-only proxies.

:data:`ENGINE` is a port of Lua 5.4's pattern matcher (lstrlib.c) to Lua, loaded
only when a pattern call looks too expensive to run in C: in Lua the matcher is
subject to the count hook, so a pathological pattern stops at the deadline
instead of running unbounded inside C.
"""

from __future__ import annotations

HARNESS = r"""
local now, ENGINE_SRC, MEMCAP, LIMIT, VULCAN_CODE, py_json_encode, py_json_decode, py_path,
  py_log, py_context, py_module = ...
local PY = {json_encode = py_json_encode, json_decode = py_json_decode, path = py_path,
            log = py_log, context = py_context, module = py_module}
local sethook, setupvalue = debug.sethook, debug.setupvalue
local G = _G
local type, error, select, next, pairs, ipairs = type, error, select, next, pairs, ipairs
local tostring, tonumber, assert = tostring, tonumber, assert
local rawget, rawset, rawequal, rawlen = rawget, rawset, rawequal, rawlen
local setmetatable, getmetatable = setmetatable, getmetatable
local pcall, xpcall, load = pcall, xpcall, load
local co_create, co_resume, co_yield = coroutine.create, coroutine.resume, coroutine.yield
local co_status, co_running, co_isyieldable, co_close =
  coroutine.status, coroutine.running, coroutine.isyieldable, coroutine.close
local collectgarbage = collectgarbage
local concat = table.concat
local sfind, smatch, sgmatch, sgsub = string.find, string.match, string.gmatch, string.gsub
local ssub, sbyte, srep = string.sub, string.byte, string.rep
local huge, mtype = math.huge, math.type
local os_time, os_clock, os_date = os.time, os.clock, os.date
local unpack = table.unpack

-- 1. Take away everything a skill must not reach, from the real globals as well.
string.dump = nil
for _, name in ipairs({"io", "os", "debug", "package", "require", "dofile", "loadfile",
                       "load", "collectgarbage", "python", "warn", "print"}) do
  G[name] = nil
end
setmetatable(G, nil)
getmetatable("").__metatable = false

-- 2. Limits: a count hook on every coroutine that runs skill code.
local MEMERR = "not enough memory"
local QUOTA = setmetatable({}, {__tostring = function() return "stopped by a limit" end,
                                __metatable = false})
local used, budget, deadline, step, tripped = 0, huge, huge, 10000, nil
local function hook()
  if tripped then error(QUOTA, 0) end
  used = used + step
  if used > budget then tripped = "instructions"; error(QUOTA, 0) end
  if now() > deadline then tripped = "timeout"; error(QUOTA, 0) end
end
local function fatal(e)
  if tripped or rawequal(e, QUOTA) then return true end
  if rawequal(e, MEMERR) then tripped = "memory"; return true end
  return false
end
local function newco(f)
  local co = co_create(f)
  sethook(co, hook, "", step)
  return co
end

-- 3. Protected wrappers: nothing may swallow a limit error.
local function after_pcall(ok, ...)
  if not ok and fatal((...)) then error(QUOTA, 0) end
  return ok, ...
end
local function s_pcall(f, ...) return after_pcall(pcall(f, ...)) end
local function s_xpcall(f, h, ...)
  return after_pcall(xpcall(f, function(e)
    if fatal(e) then return e end
    return h(e)
  end, ...))
end
local HOSTREQ = setmetatable({}, {__metatable = false})
local after_resume
local function s_resume(co, ...) return after_resume(co, co_resume(co, ...)) end
after_resume = function(co, ok, a, ...)
  if not ok then
    if fatal(a) then error(QUOTA, 0) end
    return false, a
  end
  if rawequal(a, HOSTREQ) and co_status(co) == "suspended" then
    -- a host call from inside the skill's own coroutine: pass it up to the driver
    return after_resume(co, co_resume(co, co_yield(HOSTREQ, ...)))
  end
  return true, a, ...
end
local function s_create(f)
  if type(f) ~= "function" then error("bad argument #1 to 'create' (function expected)", 2) end
  return newco(f)
end
local function after_wrap(ok, ...)
  if not ok then error((...), 0) end
  return ...
end
local function s_wrap(f)
  local co = s_create(f)
  return function(...) return after_wrap(s_resume(co, ...)) end
end
local function s_close(co) return after_pcall(co_close(co)) end

-- 4. Read-only proxies for everything shared between calls.
local FROZEN = setmetatable({}, {__mode = "k"})
local function readonly(_, k)
  error("cannot modify a read-only table of the sandbox (key " .. tostring(k) .. ")", 2)
end
local function freeze(real)
  local proxy = setmetatable({}, {
    __index = real, __newindex = readonly,
    __pairs = function() return next, real, nil end,
    __len = function() return #real end,
    __metatable = false,
  })
  FROZEN[proxy] = true
  return proxy
end
local function s_rawset(t, k, v)
  if FROZEN[t] then readonly(t, k) end
  return rawset(t, k, v)
end
local function s_setmetatable(t, mt)
  if FROZEN[t] then readonly(t, "metatable") end
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("__gc metamethods are not supported in the sandbox", 2)
  end
  return setmetatable(t, mt)
end
local GC_OK = {count = true, collect = true, step = true, isrunning = true}
local function s_collectgarbage(opt, ...)
  opt = opt or "collect"
  if not GC_OK[opt] then
    error("collectgarbage('" .. tostring(opt) .. "') is not allowed in the sandbox", 2)
  end
  return collectgarbage(opt, ...)
end

-- 5. Pattern functions: run in C when cheap, in the hooked Lua engine when not.
local ENGINE
local function engine()
  if not ENGINE then
    ENGINE = assert(load(ENGINE_SRC, "=skillyard.patterns", "t", {}))(
      sfind, ssub, sbyte, error, type, tostring, tonumber, concat, unpack)
  end
  return ENGINE
end
local function bracket_end(p, i, m)
  -- i is just after '['; returns the index after the closing ']'
  if sbyte(p, i) == 94 then i = i + 1 end
  repeat
    if i > m then return m + 1 end
    local c = sbyte(p, i); i = i + 1
    if c == 37 then i = i + 1 end
  until sbyte(p, i) == 93
  return i + 1
end
local function quantifiers(p, m, start)
  local i, q, last = start, 0, false
  while i <= m do
    local c = sbyte(p, i)
    local j, consuming = i + 1, true
    if c == 37 then
      local d = sbyte(p, i + 1)
      if d == 98 then j = i + 4; q = q + 1
      elseif d == 102 then j = bracket_end(p, i + 3, m); consuming = false
      else j = i + 2 end
    elseif c == 91 then j = bracket_end(p, i + 1, m)
    elseif c == 40 or c == 41 or (c == 36 and i == m) then consuming = false end
    local n = sbyte(p, j)
    if consuming and (n == 42 or n == 43 or n == 45) then
      q = q + 1; last = true; j = j + 1
    elseif consuming then
      last = false
    end
    i = j
  end
  if last then q = q - 1 end
  return q
end
local SPECIALS = "[%^%$%*%+%?%.%(%)%[%]%%%-]"
local function heavy(s, p, plain, anchorable)
  local n, m = #s, #p
  if plain or not sfind(p, SPECIALS) then return n * m > LIMIT end
  local anchored = anchorable and sbyte(p, 1) == 94
  local cost = m * (anchored and 1 or (n + 1))
  if cost > LIMIT then return true end
  for _ = 1, quantifiers(p, m, anchored and 2 or 1) do
    cost = cost * (n + 1)
    if cost > LIMIT then return true end
  end
  return false
end
string.find = function(s, p, init, plain)
  if type(s) == "string" and type(p) == "string" and heavy(s, p, plain, true) then
    return engine().find(s, p, init, plain, true)
  end
  return sfind(s, p, init, plain)
end
string.match = function(s, p, init)
  if type(s) == "string" and type(p) == "string" and heavy(s, p, false, true) then
    return engine().find(s, p, init, false, false)
  end
  return smatch(s, p, init)
end
string.gmatch = function(s, p, init)
  if type(s) == "string" and type(p) == "string" and heavy(s, p, false, false) then
    return engine().gmatch(s, p, init)
  end
  return sgmatch(s, p, init)
end
string.gsub = function(s, p, repl, n)
  if type(s) == "string" and type(p) == "string" and heavy(s, p, false, true) then
    return engine().gsub(s, p, repl, n)
  end
  return sgsub(s, p, repl, n)
end
string.rep = function(s, n, sep)
  if type(s) == "string" and mtype(n) == "integer" and n > 0 then
    local size = (#s + (type(sep) == "string" and #sep or 0)) * n
    if size > MEMCAP then tripped = "memory"; error(QUOTA, 0) end
  end
  return srep(s, n, sep)
end

-- 6. Errors the Python side recognises, logging, and the vulcan table (loaded on first use).
local ERRMT = {__tostring = function(e) return rawget(e, "message") end, __metatable = false}
local OURS = setmetatable({}, {__mode = "k"})
local function mkerr(code, message, id)
  local e = setmetatable({code = code, message = message, id = id}, ERRMT)
  OURS[e] = true
  return e
end
local pylog = PY.log
local function log(level, ...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  pylog(tostring(level), concat(parts, " "))
end
local CTX
local function get_ctx()
  if CTX == nil then CTX = PY.context() end
  return CTX
end
local VULCAN
local function vulcan()
  if VULCAN == nil then
    local env = {setmetatable = setmetatable, rawget = rawget, type = type, error = error,
                 select = select, next = next, pairs = pairs, ipairs = ipairs,
                 tostring = tostring}
    VULCAN = assert(load(VULCAN_CODE, "=skillyard.vulcan", "b", env))(
      PY, HOSTREQ, FROZEN, readonly, mkerr, get_ctx, log, co_yield, co_isyieldable)
  end
  return VULCAN
end

-- 7. The environment every call starts from.
local CUR_ENV, LOADED, MODULES = nil, nil, {}
local function s_load(chunk, name, mode, ...)
  if mode ~= nil and mode ~= "t" then
    error("load: only text chunks are allowed in the sandbox (mode 't')", 2)
  end
  local env = CUR_ENV
  if select("#", ...) > 0 then env = ... end
  return load(chunk, name, "t", env)
end
local pymodule = PY.module
local function s_require(name)
  if type(name) ~= "string" then error("bad argument #1 to 'require' (string expected)", 2) end
  if LOADED == nil then LOADED = {} end
  local hit = LOADED[name]
  if hit ~= nil then return hit end
  local f = MODULES[name]
  if f == nil then
    local ok, code, chunkname = pymodule(name)
    if not ok then error(code, 2) end
    f = assert(load(code, chunkname, "b", CUR_ENV))
    MODULES[name] = f
  end
  setupvalue(f, 1, CUR_ENV)
  local r = f(name)
  if r == nil then r = true end
  LOADED[name] = r
  return r
end
local function s_print(...) log("info", ...) end
local BASE = {
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
  pcall = s_pcall, xpcall = s_xpcall, select = select, tonumber = tonumber,
  tostring = tostring, type = type, rawequal = rawequal, rawget = rawget, rawlen = rawlen,
  rawset = s_rawset, setmetatable = s_setmetatable, getmetatable = getmetatable,
  load = s_load, collectgarbage = s_collectgarbage, require = s_require, print = s_print,
  _VERSION = _VERSION,
  string = freeze(string), table = freeze(table), math = freeze(math), utf8 = freeze(utf8),
  coroutine = freeze({create = s_create, resume = s_resume, yield = co_yield,
                      status = co_status, wrap = s_wrap, running = co_running,
                      isyieldable = co_isyieldable, close = s_close}),
  os = freeze({time = os_time, clock = os_clock, date = os_date}),
}
setmetatable(BASE, {__index = function(_, k) if k == "vulcan" then return vulcan() end end})
local ENV_MT = {__index = BASE, __metatable = false}
G.string, G.table, G.math, G.utf8, G.coroutine = nil, nil, nil, nil, nil

-- 8. The driver: one coroutine serves calls until one fails; host calls come back to
-- Python as yields, results as a DONE yield that leaves the coroutine ready for the next call.
local CO, CO_STEP
local DONE = setmetatable({}, {__metatable = false})
local function body(chunk, key, args)
  local r = chunk()
  if key ~= nil then
    if type(r) ~= "table" then
      error({entry = "the entry file must return a table of functions, got " .. type(r)})
    end
    r = r[key]
  end
  if type(r) ~= "function" then
    error({entry = "the entry did not provide a function" .. (key and (" named " .. key) or "")
      .. ", got " .. type(r)})
  end
  return r(args)
end
local function server(chunk, key, args)
  while true do
    chunk, key, args = co_yield(DONE, body(chunk, key, args))
  end
end
local function finish(ok, a, ...)
  if not ok then
    CO = nil
    if fatal(a) then return "limit", tripped end
    return "error", a
  end
  if rawequal(a, DONE) then return "done", select("#", ...), ... end
  if rawequal(a, HOSTREQ) then return "host", ... end
  CO = nil
  return "error", "coroutine.yield was called outside of a coroutine"
end
local function prepare(b, d, s, env)
  used, budget, deadline, step, tripped = 0, b, d, s, nil
  CUR_ENV, LOADED, CTX = env, nil, nil
end
local H = {}
function H.call(chunk, key, args, b, d, s)
  local env = setmetatable({}, ENV_MT)
  env._G = env
  prepare(b, d, s, env)
  setupvalue(chunk, 1, env)
  if CO == nil or co_status(CO) ~= "suspended" then
    CO, CO_STEP = newco(server), s
  elseif CO_STEP ~= s then
    sethook(CO, hook, "", s)
    CO_STEP = s
  end
  return finish(co_resume(CO, chunk, key, args))
end
function H.resume(ok, v, code, message, id)
  return finish(co_resume(CO, ok, v, code, message, id))
end
-- persistent environments for runtime sessions: globals survive between evals
function H.newenv()
  local env = setmetatable({}, ENV_MT)
  env._G = env
  return env
end
local function run_chunk(chunk, _, args) return DONE, chunk(args) end
function H.eval(env, code, args, b, d, s)
  local chunk, err = load(code, "=eval", "t", env)
  if not chunk then return "error", err end
  prepare(b, d, s, env)
  CO = newco(run_chunk)
  return finish(co_resume(CO, chunk, nil, args))
end
function H.compile(code, chunkname)
  return load(code, chunkname, "b", {})
end
function H.describe(e)
  -- never calls a metamethod: this runs outside the hooked coroutine
  local t = type(e)
  if t == "string" or t == "number" then return nil, tostring(e) end
  if t == "table" then
    if OURS[e] then return rawget(e, "code"), rawget(e, "message"), rawget(e, "id") end
    local entry = rawget(e, "entry")
    if type(entry) == "string" then return "entry", entry end
    local msg = rawget(e, "message")
    if type(msg) == "string" then return nil, msg end
    return nil, "an error object (a table)"
  end
  return nil, "an error value of type " .. t
end
function H.memory() return collectgarbage("count") end
return H
"""

VULCAN = r"""
local PY, HOSTREQ, FROZEN, readonly, mkerr, get_ctx, log, co_yield, co_isyieldable = ...
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
    __pairs = function() return next, fns, nil end,
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
VNS.json = {encode = localfn("json_encode"), decode = localfn("json_decode")}
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

# A port of lstrlib.c's matcher (Lua 5.4). Single pattern items are still tested
# natively, one character at a time, which is bounded; only the backtracking runs in Lua.
ENGINE = r"""
local sfind, ssub, sbyte, error, type, tostring, tonumber, concat, unpack = ...
local L_ESC, CAP_UNFINISHED, CAP_POSITION, MAXCCALLS = 37, -1, -2, 200
local ANCH = {}

local function class_end(ms, p)
  local c = sbyte(ms.pat, p); p = p + 1
  if c == L_ESC then
    if p >= ms.p_end then error("malformed pattern (ends with '%')", 0) end
    return p + 1
  end
  if c == 91 then
    if sbyte(ms.pat, p) == 94 then p = p + 1 end
    repeat
      if p >= ms.p_end then error("malformed pattern (missing ']')", 0) end
      local cc = sbyte(ms.pat, p); p = p + 1
      if cc == L_ESC and p < ms.p_end then p = p + 1 end
    until sbyte(ms.pat, p) == 93
    return p + 1
  end
  return p
end

local function single(ms, s, p, ep)
  if s >= ms.src_end then return false end
  local c = sbyte(ms.pat, p)
  if c == 46 then return true end
  if c == L_ESC or c == 91 then
    local key = ssub(ms.pat, p, ep - 1)
    local anch = ANCH[key]
    if not anch then anch = "^" .. key; ANCH[key] = anch end
    return sfind(ssub(ms.src, s, s), anch) ~= nil
  end
  return sbyte(ms.src, s) == c
end

local match

local function max_expand(ms, s, p, ep)
  local i = 0
  while single(ms, s + i, p, ep) do i = i + 1 end
  while i >= 0 do
    local res = match(ms, s + i, ep + 1)
    if res then return res end
    i = i - 1
  end
  return nil
end

local function min_expand(ms, s, p, ep)
  while true do
    local res = match(ms, s, ep + 1)
    if res then return res end
    if single(ms, s, p, ep) then s = s + 1 else return nil end
  end
end

local function start_capture(ms, s, p, what)
  local level = ms.level + 1
  ms.cinit[level] = s; ms.clen[level] = what; ms.level = level
  local res = match(ms, s, p)
  if not res then ms.level = ms.level - 1 end
  return res
end

local function end_capture(ms, s, p)
  local l
  for i = ms.level, 1, -1 do
    if ms.clen[i] == CAP_UNFINISHED then l = i; break end
  end
  if not l then error("invalid pattern capture", 0) end
  ms.clen[l] = s - ms.cinit[l]
  local res = match(ms, s, p)
  if not res then ms.clen[l] = CAP_UNFINISHED end
  return res
end

local function match_balance(ms, s, p)
  if p + 1 >= ms.p_end then error("malformed pattern (missing arguments to '%b')", 0) end
  if s >= ms.src_end or sbyte(ms.src, s) ~= sbyte(ms.pat, p) then return nil end
  local b, e, cont = sbyte(ms.pat, p), sbyte(ms.pat, p + 1), 1
  s = s + 1
  while s < ms.src_end do
    local c = sbyte(ms.src, s)
    if c == e then
      cont = cont - 1
      if cont == 0 then return s + 1 end
    elseif c == b then
      cont = cont + 1
    end
    s = s + 1
  end
  return nil
end

local function check_capture(ms, c)
  local l = c - 48
  if l < 1 or l > ms.level or ms.clen[l] == CAP_UNFINISHED then
    error("invalid capture index %" .. l .. " in pattern", 0)
  end
  return l
end

local function match_capture(ms, s, c)
  local l = check_capture(ms, c)
  local len = ms.clen[l]
  if ms.src_end - s >= len and
     ssub(ms.src, ms.cinit[l], ms.cinit[l] + len - 1) == ssub(ms.src, s, s + len - 1) then
    return s + len
  end
  return nil
end

match = function(ms, s, p)
  ms.depth = ms.depth - 1
  if ms.depth == 0 then error("pattern too complex", 0) end
  while p < ms.p_end do
    local c = sbyte(ms.pat, p)
    local d = sbyte(ms.pat, p + 1)
    if c == 40 then
      if d == 41 then s = start_capture(ms, s, p + 2, CAP_POSITION)
      else s = start_capture(ms, s, p + 1, CAP_UNFINISHED) end
      break
    elseif c == 41 then
      s = end_capture(ms, s, p + 1)
      break
    elseif c == 36 and p + 1 == ms.p_end then
      if s ~= ms.src_end then s = nil end
      break
    elseif c == L_ESC and d == 98 then
      s = match_balance(ms, s, p + 2)
      if not s then break end
      p = p + 4
    elseif c == L_ESC and d == 102 then
      p = p + 2
      if sbyte(ms.pat, p) ~= 91 then error("missing '[' after '%f' in pattern", 0) end
      local ep = class_end(ms, p)
      local prev = s == 1 and "\0" or ssub(ms.src, s - 1, s - 1)
      local cur = s < ms.src_end and ssub(ms.src, s, s) or "\0"
      local set = "^" .. ssub(ms.pat, p, ep - 1)
      if not sfind(prev, set) and sfind(cur, set) then
        p = ep
      else
        s = nil
        break
      end
    elseif c == L_ESC and d and d >= 48 and d <= 57 then
      s = match_capture(ms, s, d)
      if not s then break end
      p = p + 2
    else
      local ep = class_end(ms, p)
      local e = sbyte(ms.pat, ep)
      if not single(ms, s, p, ep) then
        if e == 42 or e == 63 or e == 45 then
          p = ep + 1
        else
          s = nil
          break
        end
      elseif e == 63 then
        local res = match(ms, s + 1, ep + 1)
        if res then s = res; break end
        p = ep + 1
      elseif e == 43 then s = max_expand(ms, s + 1, p, ep); break
      elseif e == 42 then s = max_expand(ms, s, p, ep); break
      elseif e == 45 then s = min_expand(ms, s, p, ep); break
      else s = s + 1; p = ep end
    end
  end
  ms.depth = ms.depth + 1
  return s
end

local function state(src, pat)
  return {src = src, pat = pat, src_end = #src + 1, p_end = #pat + 1, level = 0,
          cinit = {}, clen = {}, depth = MAXCCALLS}
end

local function get_capture(ms, i, s, e)
  if i > ms.level then
    if i ~= 1 then error("invalid capture index %" .. i, 0) end
    return ssub(ms.src, s, e - 1)
  end
  local l = ms.clen[i]
  if l == CAP_UNFINISHED then error("unfinished capture", 0) end
  if l == CAP_POSITION then return ms.cinit[i] end
  return ssub(ms.src, ms.cinit[i], ms.cinit[i] + l - 1)
end

local function captures(ms, s, e, whole)
  local n = (ms.level == 0 and whole) and 1 or ms.level
  local out = {}
  for i = 1, n do out[i] = get_capture(ms, i, s, e) end
  return out, n
end

local function posrelat(pos, len)
  if pos > 0 then return pos end
  if pos == 0 then return 1 end
  if pos < -len then return 1 end
  return len + pos + 1
end

local M = {}

function M.find(s, p, init, plain, find)
  local ls = #s
  init = posrelat(tonumber(init) or 1, ls)
  if init > ls + 1 then return nil end
  if plain then
    local m = #p
    for i = init, ls - m + 1 do
      if ssub(s, i, i + m - 1) == p then return i, i + m - 1 end
    end
    return nil
  end
  local anchor = sbyte(p, 1) == 94
  local ms = state(s, p)
  local s1 = init
  repeat
    ms.level, ms.depth = 0, MAXCCALLS
    local e = match(ms, s1, anchor and 2 or 1)
    if e then
      if find then
        local caps, n = captures(ms, nil, 0, false)
        return s1, e - 1, unpack(caps, 1, n)
      end
      local caps, n = captures(ms, s1, e, true)
      return unpack(caps, 1, n)
    end
    s1 = s1 + 1
  until s1 > ms.src_end or anchor
  return nil
end

function M.gmatch(s, p, init)
  local ls = #s
  local src = posrelat(tonumber(init) or 1, ls)
  if src > ls + 1 then src = ls + 2 end
  local ms = state(s, p)
  local last = nil
  return function()
    while src <= ms.src_end do
      ms.level, ms.depth = 0, MAXCCALLS
      local e = match(ms, src, 1)
      if e and e ~= last then
        local start = src
        src, last = e, e
        local caps, n = captures(ms, start, e, true)
        return unpack(caps, 1, n)
      end
      src = src + 1
    end
    return nil
  end
end

local function add_value(ms, out, s, e, repl, tr)
  local value
  if tr == "function" then
    local caps, n = captures(ms, s, e, true)
    value = repl(unpack(caps, 1, n))
  elseif tr == "table" then
    value = repl[get_capture(ms, 1, s, e)]
  else
    local r = tostring(repl)
    local parts, i, lr = {}, 1, #r
    while i <= lr do
      local j = sfind(r, "%", i, true)
      if not j then parts[#parts + 1] = ssub(r, i); break end
      parts[#parts + 1] = ssub(r, i, j - 1)
      local c = sbyte(r, j + 1)
      if c == L_ESC then parts[#parts + 1] = "%"
      elseif c == 48 then parts[#parts + 1] = ssub(ms.src, s, e - 1)
      elseif c and c >= 49 and c <= 57 then parts[#parts + 1] = tostring(get_capture(ms, c - 48, s, e))
      else error("invalid use of '%' in replacement string", 0) end
      i = j + 2
    end
    out[#out + 1] = concat(parts)
    return
  end
  if not value then
    out[#out + 1] = ssub(ms.src, s, e - 1)
  elseif type(value) == "string" or type(value) == "number" then
    out[#out + 1] = tostring(value)
  else
    error("invalid replacement value (a " .. type(value) .. ")", 0)
  end
end

function M.gsub(s, p, repl, max_n)
  local tr = type(repl)
  if tr ~= "string" and tr ~= "number" and tr ~= "table" and tr ~= "function" then
    error("bad argument #3 to 'gsub' (string/function/table expected, got " .. tr .. ")", 0)
  end
  local anchor = sbyte(p, 1) == 94
  local ms = state(s, p)
  max_n = tonumber(max_n) or (#s + 1)
  local src, last, n, out = 1, nil, 0, {}
  while n < max_n do
    ms.level, ms.depth = 0, MAXCCALLS
    local e = match(ms, src, anchor and 2 or 1)
    if e and e ~= last then
      n = n + 1
      add_value(ms, out, src, e, repl, tr)
      src, last = e, e
    elseif src < ms.src_end then
      out[#out + 1] = ssub(s, src, src)
      src = src + 1
    else
      break
    end
    if anchor then break end
  end
  out[#out + 1] = ssub(s, src)
  return concat(out), n
end

return M
"""
