"""The Lua side of an isolate: the sandbox harness, as Lua source.

:data:`HARNESS` runs once in every new ``lupa.lua54`` runtime with the full
standard library still present. It keeps the privileged functions it needs
(``debug.sethook``, ``debug.setupvalue``, binary ``load``) as upvalues, removes
everything a skill must not reach from the real globals, and returns a small
table of entry points the Python side drives (``call``, ``bind``, ``resume``,
``compile``, ``describe``). Skill code only ever runs inside a coroutine that
carries the instruction/deadline count hook, in a fresh ``_ENV`` per call whose
fallbacks are read-only proxies.

A fresh isolate pays for what its skill uses: :data:`EXTRA` (the protected
``pcall``/``xpcall``/``coroutine``/``load``/``require``/``print`` wrappers, the
cost estimate for pattern calls), the ``vulcan`` table (vulcan.py) and the Lua
pattern engine (patterns.py) are separate chunks loaded on first use, and the
Python helpers are fetched by name the first time Lua needs one. What a skill
can reach before any of them loads is already safe: the real ``string`` table's
pattern functions and ``string.rep`` are wrapped in the harness itself.
"""

from __future__ import annotations

HARNESS = r"""
local fetch, MEMCAP, LIMIT = ...
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
local concat, unpack = table.concat, table.unpack
local sfind, smatch, sgmatch, sgsub = string.find, string.match, string.gmatch, string.gsub
local ssub, sbyte, srep = string.sub, string.byte, string.rep
local huge, mtype = math.huge, math.type
local os_time, os_clock, os_date = os.time, os.clock, os.date
local STRING, TABLE, MATH, UTF8, VERSION = string, table, math, utf8, _VERSION

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
local now
local used, budget, deadline, step, tripped = 0, huge, huge, 10000, nil
local function hook()
  if tripped then error(QUOTA, 0) end
  used = used + step
  if used > budget then tripped = "instructions"; error(QUOTA, 0) end
  if now == nil then now = fetch("now") end
  if now() > deadline then tripped = "timeout"; error(QUOTA, 0) end
end
local function defer() tripped = "defer"; error(QUOTA, 0) end
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

-- 3. Read-only proxies for everything shared between calls. A proxy never hands out the
-- table behind it (pairs() iterates it through pnext), or a call could change it for the
-- next one.
local FROZEN = setmetatable({}, {__mode = "k"})  -- proxy -> the table behind it
local function readonly(_, k)
  error("cannot modify a read-only table of the sandbox (key " .. tostring(k) .. ")", 2)
end
local function pnext(proxy, k) return next(FROZEN[proxy], k) end
local function ppairs(proxy) return pnext, proxy, nil end
local function plen(proxy) return #FROZEN[proxy] end
local function freeze(real)
  local proxy = setmetatable({}, {
    __index = real, __newindex = readonly, __pairs = ppairs, __len = plen, __metatable = false,
  })
  FROZEN[proxy] = real
  return proxy
end
local HOSTREQ = setmetatable({}, {__metatable = false})
local OURS = setmetatable({}, {__mode = "k"})  -- error objects made by mkerr (extras)
-- what the extras read of the call in flight: its _ENV, its require cache, its context
local ST = {}

-- 4. The extras chunk, loaded the first time a skill (or a session) needs one of its parts.
-- What it is handed is packed into KIT at the end of this chunk: a closure capturing each
-- of those locals would cost an upvalue apiece in every new VM.
local ENV_MT, DONE, prepare, begin, finish, setco  -- the driver's, defined below
local X, KIT
local function extra()
  if X == nil then
    X = assert(load(fetch("extra"), "=skillyard.extra", "b", {}))(unpack(KIT, 1, KIT.n))
  end
  return X
end

-- 5. Pattern functions: run in C when cheap, in the hooked Lua engine when not. The real
-- string table is reachable through string methods, so these are installed right away.
local heavy
heavy = function(s, p, plain, anchorable)
  heavy = extra().heavy
  return heavy(s, p, plain, anchorable)
end
string.find = function(s, p, init, plain)
  if type(s) == "string" and type(p) == "string" and heavy(s, p, plain, true) then
    return X.engine().find(s, p, init, plain, true)
  end
  return sfind(s, p, init, plain)
end
string.match = function(s, p, init)
  if type(s) == "string" and type(p) == "string" and heavy(s, p, false, true) then
    return X.engine().find(s, p, init, false, false)
  end
  return smatch(s, p, init)
end
string.gmatch = function(s, p, init)
  if type(s) == "string" and type(p) == "string" and heavy(s, p, false, false) then
    return X.engine().gmatch(s, p, init)
  end
  return sgmatch(s, p, init)
end
string.gsub = function(s, p, repl, n)
  if type(s) == "string" and type(p) == "string" and heavy(s, p, false, true) then
    return X.engine().gsub(s, p, repl, n)
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

-- 6. The environment every call starts from; libraries and wrappers are made on first use.
local BASE = {
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
  select = select, tonumber = tonumber, tostring = tostring, type = type,
  rawequal = rawequal, rawget = rawget, rawlen = rawlen, getmetatable = getmetatable,
  _VERSION = VERSION,
}
local LIBS = {string = STRING, table = TABLE, math = MATH, utf8 = UTF8}
local EXTRAS = {pcall = true, xpcall = true, rawset = true, setmetatable = true, load = true,
                collectgarbage = true, require = true, print = true, coroutine = true,
                vulcan = true}
setmetatable(BASE, {__index = function(_, k)
  local v = LIBS[k]
  if v ~= nil then
    v = freeze(v)
  elseif k == "os" then
    v = freeze({time = os_time, clock = os_clock, date = os_date})
  elseif EXTRAS[k] then
    v = extra()[k]
    if k == "vulcan" then return v() end
  else
    return nil
  end
  rawset(BASE, k, v)
  return v
end})
ENV_MT = {__index = BASE, __metatable = false}
G.string, G.table, G.math, G.utf8, G.coroutine = nil, nil, nil, nil, nil

-- 7. The driver: one coroutine serves calls until one fails; host calls come back to
-- Python as yields, results as a DONE yield that leaves the coroutine ready for the next call.
local CO, CO_STEP
DONE = setmetatable({}, {__metatable = false})
local function server(chunk, key, args)
  while true do
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
    chunk, key, args = co_yield(DONE, r(args))
  end
end
finish = function(ok, a, ...)
  if not ok then
    CO = nil
    if fatal(a) then return "limit", tripped end
    return "error", a
  end
  if rawequal(a, DONE) then return "done", select("#", ...), ... end
  if rawequal(a, HOSTREQ) then
    if ST.direct then CO = nil; return "host", false end  -- a direct run defers: drop it
    return "host", ...
  end
  CO = nil
  return "error", "coroutine.yield was called outside of a coroutine"
end
prepare = function(b, d, s, env)
  used, budget, deadline, step, tripped = 0, b, d, s, nil
  ST.env, ST.loaded, ST.ctx, ST.direct = env, nil, nil, nil
end
begin = function(chunk, b, d, s)
  local env = setmetatable({_G = false}, ENV_MT)
  env._G = env
  prepare(b, d, s, env)
  setupvalue(chunk, 1, env)
  if CO == nil or co_status(CO) ~= "suspended" then
    CO, CO_STEP = newco(server), s
  elseif CO_STEP ~= s then
    sethook(CO, hook, "", s)
    CO_STEP = s
  end
  return CO
end
setco = function(co) CO = co end
-- Entry points for Python; the ones only sessions, options.thread and errors in a
-- skill's first load need (call, eval, newenv, compile) come with the extras.
local H = setmetatable({}, {__index = function(_, k) return extra().H[k] end})
-- A call that returned one table gives back just that table (H.once).
local function finish_one(ok, a, ...)
  if ok and rawequal(a, DONE) and select("#", ...) == 1 and type((...)) == "table" then
    return (...)
  end
  return finish(ok, a, ...)
end
-- A runner: one entry's bytecode loaded for it alone, with its key and limits, so a call
-- crosses with two values and gives back just the table when it returned one table.
-- The environment is kept while a call leaves it as it was made (holding nothing but its
-- own _G): nothing of a call can reach the next one through it, and the common call
-- saves making one. ``direct`` marks runs with no call context (Transport.direct): the
-- first log line or context lookup stops one (tripped "defer") so the runtime can redo
-- the call in full. A result is read as at most four values (content, overflow_mode,
-- template_hint, host_result: all a LuaSkills entry returns).
function H.bind(code, chunkname, key, b, s, direct)
  local chunk, err = load(code, chunkname, "b", {})
  if not chunk then return nil, err end
  local env
  return function(d, args)
    if env ~= nil then
      local k, v = next(env)
      if k ~= "_G" or not rawequal(v, env) or next(env, k) ~= nil then env = nil end
    end
    if env == nil then
      env = setmetatable({_G = false}, ENV_MT)
      env._G = env
      setupvalue(chunk, 1, env)
    end
    used, budget, deadline, step, tripped = 0, b, d, s, nil
    ST.env, ST.loaded, ST.ctx, ST.direct = env, nil, nil, direct
    if CO == nil or co_status(CO) ~= "suspended" then
      CO, CO_STEP = newco(server), s
    elseif CO_STEP ~= s then
      sethook(CO, hook, "", s)
      CO_STEP = s
    end
    local ok, a, r1, r2, r3, r4 = co_resume(CO, chunk, key, args)
    if ok and r2 == nil and r3 == nil and r4 == nil and rawequal(a, DONE)
        and type(r1) == "table" then
      return r1
    end
    return finish(ok, a, r1, r2, r3, r4)
  end
end
-- A fresh isolate's only call: load the entry's bytecode and run it in one crossing.
function H.once(code, chunkname, key, b, d, s, args)
  local chunk, err = load(code, chunkname, "b", {})
  if not chunk then return nil, err end
  begin(chunk, b, d, s)
  return finish_one(co_resume(CO, chunk, key, args))
end
function H.resume(ok, v, code, message, id)
  return finish(co_resume(CO, ok, v, code, message, id))
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
KIT = {
  fetch, ST, QUOTA, fatal, newco, FROZEN, readonly, freeze, HOSTREQ, OURS, LIMIT,
  setupvalue, load, pcall, xpcall, error, type, select, next, pairs, ipairs, tostring,
  tonumber, assert, rawget, rawset, setmetatable, co_resume, co_yield, co_status,
  co_running, co_isyieldable, co_close, collectgarbage, concat, unpack, sfind, ssub, sbyte,
  rawequal, ENV_MT, DONE, prepare, begin, finish, setco, defer, n = 47}
return H
"""

# Loaded into an isolate the first time a skill needs one of these (see section 4 above).
EXTRA = r"""
local fetch, ST, QUOTA, fatal, newco, FROZEN, readonly, freeze, HOSTREQ, OURS, LIMIT,
  setupvalue, load, pcall, xpcall, error, type, select, next, pairs, ipairs, tostring,
  tonumber, assert, rawget, rawset, setmetatable, co_resume, co_yield, co_status,
  co_running, co_isyieldable, co_close, collectgarbage, concat, unpack, sfind, ssub, sbyte,
  rawequal, ENV_MT, DONE, prepare, begin, finish, setco, defer = ...
local X = {}
-- Python helpers, fetched by name on first use
local PY = setmetatable({}, {__index = function(t, k)
  local v = fetch(k)
  rawset(t, k, v)
  return v
end, __metatable = false})
-- JSON null: one read-only marker table (a nil would leave holes in arrays)
local NULL = setmetatable({["\0skillyard.null"] = true}, {
  __newindex = readonly, __pairs = function() return next, {}, nil end,
  __tostring = function() return "null" end, __metatable = false,
})
FROZEN[NULL] = true

-- Protected wrappers: nothing may swallow a limit error.
local function after_pcall(ok, ...)
  if not ok and fatal((...)) then error(QUOTA, 0) end
  return ok, ...
end
function X.pcall(f, ...) return after_pcall(pcall(f, ...)) end
function X.xpcall(f, h, ...)
  return after_pcall(xpcall(f, function(e)
    if fatal(e) then return e end
    return h(e)
  end, ...))
end
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
X.coroutine = freeze({create = s_create, resume = s_resume, yield = co_yield,
                      status = co_status, wrap = s_wrap, running = co_running,
                      isyieldable = co_isyieldable, close = s_close})
function X.rawset(t, k, v)
  if FROZEN[t] then readonly(t, k) end
  return rawset(t, k, v)
end
function X.setmetatable(t, mt)
  if FROZEN[t] then readonly(t, "metatable") end
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("__gc metamethods are not supported in the sandbox", 2)
  end
  return setmetatable(t, mt)
end
local GC_OK = {count = true, collect = true, step = true, isrunning = true}
function X.collectgarbage(opt, ...)
  opt = opt or "collect"
  if not GC_OK[opt] then
    error("collectgarbage('" .. tostring(opt) .. "') is not allowed in the sandbox", 2)
  end
  return collectgarbage(opt, ...)
end

-- The cost estimate for pattern calls, and the hooked Lua engine for the costly ones.
local ENGINE
function X.engine()
  if not ENGINE then
    ENGINE = assert(load(PY.engine, "=skillyard.patterns", "t", {}))(
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
function X.heavy(s, p, plain, anchorable)
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

-- Errors the Python side recognises, logging, and the vulcan table (loaded on first use).
local ERRMT = {__tostring = function(e) return rawget(e, "message") end, __metatable = false}
local function mkerr(code, message, id)
  local e = setmetatable({code = code, message = message, id = id}, ERRMT)
  OURS[e] = true
  return e
end
local function log(level, ...)
  if ST.direct then defer() end
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  PY.log(tostring(level), concat(parts, " "))
end
local function get_ctx()
  if ST.direct then defer() end
  local ctx = ST.ctx
  if ctx == nil then ctx = PY.context(); ST.ctx = ctx end
  return ctx
end
local VULCAN
function X.vulcan()
  if VULCAN == nil then
    local env = {setmetatable = setmetatable, rawget = rawget, type = type, error = error,
                 select = select, next = next, pairs = pairs, ipairs = ipairs,
                 tostring = tostring}
    VULCAN = assert(load(PY.vulcan_code, "=skillyard.vulcan", "b", env))(
      PY, HOSTREQ, FROZEN, readonly, mkerr, get_ctx, log, co_yield, co_isyieldable, NULL)
  end
  return VULCAN
end

-- load (text only, in the call's environment) and require (modules of the package).
function X.load(chunk, name, mode, ...)
  if mode ~= nil and mode ~= "t" then
    error("load: only text chunks are allowed in the sandbox (mode 't')", 2)
  end
  local env = ST.env
  if select("#", ...) > 0 then env = ... end
  return load(chunk, name, "t", env)
end
local MODULES = {}
function X.require(name)
  if type(name) ~= "string" then error("bad argument #1 to 'require' (string expected)", 2) end
  local loaded = ST.loaded
  if loaded == nil then loaded = {}; ST.loaded = loaded end
  local hit = loaded[name]
  if hit ~= nil then return hit end
  local f = MODULES[name]
  if f == nil then
    local ok, code, chunkname = PY.module(name)
    if not ok then error(code, 2) end
    f = assert(load(code, chunkname, "b", ST.env))
    MODULES[name] = f
  end
  setupvalue(f, 1, ST.env)
  local r = f(name)
  if r == nil then r = true end
  loaded[name] = r
  return r
end
function X.print(...) log("info", ...) end

-- The driver's general entry points: the call any path can take, and runtime sessions.
local H = {}
function H.call(chunk, key, args, b, d, s)
  return finish(co_resume(begin(chunk, b, d, s), chunk, key, args))
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
  local co = newco(run_chunk)
  setco(co)
  return finish(co_resume(co, chunk, nil, args))
end
function H.compile(code, chunkname)
  return load(code, chunkname, "b", {})
end
-- A runner for arguments of one shape: ``shape(run, n, k1, ..., kn)`` returns
-- ``f(d, v1, ..., vn)`` that builds ``{[k1] = v1, ...}`` in Lua and calls ``run(d, t)``,
-- which spares the caller a crossing to build the table. The generated source holds
-- parameter names only; the keys, which come from the caller, are upvalues.
local SHAPES = {}
function H.shape(run, n, ...)
  local make = SHAPES[n]
  if make == nil then
    local names, params, fields = {}, {}, {}
    for i = 1, n do
      names[i], params[i], fields[i] = "K" .. i, "a" .. i, "[K" .. i .. "] = a" .. i
    end
    local sep = n > 0 and ", " or ""
    make = assert(load("local run" .. sep .. concat(names, ", ") .. " = ...\nreturn function(d"
      .. sep .. concat(params, ", ") .. ") return run(d, {" .. concat(fields, ", ") .. "}) end",
      "=shape", "t", {}))
    SHAPES[n] = make
  end
  return make(run, ...)
end
H.null = NULL
X.H = H
return X
"""
