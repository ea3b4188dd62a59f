"""The Lua side of an isolate: the sandbox harness, as Lua source.

:data:`HARNESS` runs once in every new ``lupa.lua54`` runtime with the full
standard library still present. It keeps the privileged functions it needs
(``debug.sethook``, ``debug.setupvalue``, binary ``load``) as upvalues, removes
everything a skill must not reach from the real globals, and returns a small
table of entry points the Python side drives (``call``, ``resume``, ``compile``,
``describe``). Skill code only ever runs inside a coroutine that carries the
instruction/deadline count hook, in a fresh ``_ENV`` per call whose fallbacks
are read-only proxies.

The ``vulcan`` table (vulcan.py) and the Lua pattern engine (patterns.py) are
separate chunks the harness loads on first use, so an isolate that needs neither
never pays for them.
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

-- JSON null: one read-only marker table (a nil would leave holes in arrays)
local NULL = setmetatable({["\0skillyard.null"] = true}, {
  __newindex = readonly, __pairs = function() return next, {}, nil end,
  __tostring = function() return "null" end, __metatable = false,
})
FROZEN[NULL] = true

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
      PY, HOSTREQ, FROZEN, readonly, mkerr, get_ctx, log, co_yield, co_isyieldable, NULL)
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
H.null = NULL
return H
"""
