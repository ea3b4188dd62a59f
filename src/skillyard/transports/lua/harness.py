"""The Lua side of an isolate: the sandbox harness, as Lua source.

:data:`HARNESS` (the core) runs once in every new ``lupa.lua54`` runtime with the
full standard library still present. It keeps the privileged functions it needs
(``debug.sethook``, ``debug.setupvalue``, binary ``load``) as locals, removes
everything a skill must not reach from the real globals, points string methods
at a table of safe string functions, and returns the entry points Python drives:
``once`` (a fresh isolate's only call: load the entry and run it in one crossing)
and ``extra`` (everything else). Skill code only ever runs inside a coroutine
that carries the instruction/deadline count hook, in a fresh ``_ENV`` per call
whose fallbacks are read-only proxies.

A fresh isolate pays for what its skill uses, because every function and table
the core makes costs every new VM (docs/lua.md has the measurements). The rest
comes in parts loaded on first use, each compiled once per process:
:data:`LIBS` (the read-only library proxies) when a skill first names a library;
:data:`EXTRA` (the protected ``pcall``/``xpcall``/``coroutine``/``load``/
``require``/``print`` wrappers, the guarded pattern functions and ``string.rep``,
warm runners, host answers, error descriptions, runtime sessions) when a skill or
the Python side first needs one of those; then the ``vulcan`` table (vulcan.py)
and the Lua pattern engine (patterns.py). The Python helpers are fetched by name
the first time Lua needs one. A string method reaches the guarded functions
whether or not anything else has loaded: the string metatable's ``__index`` is
the core's safe table, never the real ``string`` table.
"""

from __future__ import annotations

HARNESS = r"""
local fetch, MEMCAP, LIMIT = ...
local sethook, setupvalue = debug.sethook, debug.setupvalue
local G, VERSION = _G, _VERSION
local type, error, select, rawequal, rawset = type, error, select, rawequal, rawset
local setmetatable, getmetatable, assert, load = setmetatable, getmetatable, assert, load
local CO, STRING, TABLE, MATH, UTF8, OS = coroutine, string, table, math, utf8, os
local co_create, co_resume, co_yield, co_status = CO.create, CO.resume, CO.yield, CO.status
local collectgarbage, unpack, huge = collectgarbage, TABLE.unpack, MATH.huge

-- 1. Take away everything a skill must not reach, from the real globals as well. String
-- methods reach SAFE (section 3), never the real string table.
STRING.dump = nil
G.io, G.os, G.debug, G.package, G.require, G.dofile, G.loadfile, G.load, G.collectgarbage,
  G.python, G.warn, G.print, G.string, G.table, G.math, G.utf8, G.coroutine = nil
setmetatable(G, nil)
local SMT = getmetatable("")
SMT.__metatable = false

-- 2. Limits: a count hook on every coroutine that runs skill code. The state of the call
-- in flight is in ST, which the lazily loaded parts share: the limits and what tripped,
-- the call's _ENV, require cache and context, whether it is a direct run, and the
-- coroutine serving calls.
local MEMERR = "not enough memory"
local QUOTA = {}  -- the error a limit raises; the wrappers never let a skill keep it
local ST = {used = 0, budget = huge, deadline = huge, step = 10000}
local now
local function hook()
  local st = ST
  if st.tripped then error(QUOTA, 0) end
  local used = st.used + st.step
  st.used = used
  if used > st.budget then st.tripped = "instructions"; error(QUOTA, 0) end
  if now == nil then now = fetch("now") end
  if now() > st.deadline then st.tripped = "timeout"; error(QUOTA, 0) end
end

-- 3. The rest comes in parts loaded on first use, so that a new VM pays only for what its
-- skill touches (each function or table made here costs every fresh isolate; measured in
-- docs/lua.md): ``libs`` (the read-only library proxies) when a skill first names a
-- library, ``extra`` (protected pcall and coroutines, load, require, print, the guarded
-- string functions, vulcan, and the entry points of warm isolates, host answers, error
-- descriptions and sessions) when it first needs one of those. Each part is handed KIT
-- (the end of this chunk); ``extra`` also gets what ``libs`` made.
local PARTS, KIT = {}, nil
local function part(name)
  local p = PARTS[name]
  if p == nil then
    local with = name == "extra" and part("libs") or nil
    p = assert(load(fetch(name), "=skillyard." .. name, "b", {}))(with, unpack(KIT, 1, KIT.n))
    PARTS[name] = p
  end
  return p
end
-- String functions reach skills through SAFE, filled on first use: the pattern functions
-- and rep come guarded (run in C when cheap, in the hooked Lua engine when not), the rest
-- as they are. It is what string methods reach too, never the real string table.
local SAFE = setmetatable({}, {__index = function(safe, k)
  local v
  if k == "find" or k == "match" or k == "gmatch" or k == "gsub" or k == "rep" then
    v = part("extra").guards[k]
  else
    v = STRING[k]
  end
  if v ~= nil then rawset(safe, k, v) end
  return v
end, __metatable = false})
SMT.__index = SAFE

-- 4. The environment every call starts from; libraries and wrappers are made on first use.
local BASE = {
  assert = assert, error = error, ipairs = G.ipairs, next = G.next, pairs = G.pairs,
  select = select, tonumber = G.tonumber, tostring = G.tostring, type = type,
  rawequal = rawequal, rawget = G.rawget, rawlen = G.rawlen, getmetatable = getmetatable,
  _VERSION = VERSION,
}
setmetatable(BASE, {__index = function(base, k)
  local v
  if k == "string" or k == "table" or k == "math" or k == "utf8" or k == "os" then
    v = part("libs").lib(k)
  elseif k == "vulcan" then
    return part("extra").vulcan()
  elseif k == "pcall" or k == "xpcall" or k == "rawset" or k == "setmetatable" or k == "load"
      or k == "collectgarbage" or k == "require" or k == "print" or k == "coroutine" then
    v = part("extra")[k]
  else
    return nil
  end
  rawset(base, k, v)
  return v
end})
local ENV_MT = {__index = BASE, __metatable = false}

-- 5. The driver: one coroutine serves calls until one fails; host calls come back to
-- Python as yields, results as a DONE yield that leaves the coroutine ready for the next
-- call. A result is read as at most four values (content, overflow_mode, template_hint,
-- host_result: all a LuaSkills entry returns).
local DONE, HOSTREQ = {}, {}
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
local function finish(ok, a, ...)
  local st = ST
  if not ok then
    st.co = nil
    if st.tripped or rawequal(a, QUOTA) then return "limit", st.tripped end
    if rawequal(a, MEMERR) then st.tripped = "memory"; return "limit", "memory" end
    return "error", a
  end
  if rawequal(a, DONE) then return "done", select("#", ...), ... end
  if rawequal(a, HOSTREQ) then
    if st.direct then st.co = nil; return "host", false end  -- a direct run defers: drop it
    return "host", ...
  end
  st.co = nil
  return "error", "coroutine.yield was called outside of a coroutine"
end
-- The coroutine for a call of ``chunk`` in a new environment, with these limits.
local function begin(chunk, b, d, s)
  local env = setmetatable({_G = false}, ENV_MT)
  env._G = env
  local st = ST
  st.used, st.budget, st.deadline, st.step, st.tripped = 0, b, d, s, nil
  st.env, st.loaded, st.ctx, st.direct = env, nil, nil, nil
  setupvalue(chunk, 1, env)
  local co = st.co
  if co == nil or co_status(co) ~= "suspended" then
    co = co_create(server)
    sethook(co, hook, "", s)
    st.co, st.costep = co, s
  elseif st.costep ~= s then
    sethook(co, hook, "", s)
    st.costep = s
  end
  return co
end
-- Entry points for Python: a fresh isolate's only call loads and runs its entry in one
-- crossing (once); everything else is in the extra part (``H.extra()``).
-- What a call of a fresh isolate or a warm runner gives back: just the table when the
-- call returned one table, else what finish makes of it.
local function deliver(ok, a, r1, r2, r3, r4)
  if ok and r2 == nil and r3 == nil and r4 == nil and rawequal(a, DONE)
      and type(r1) == "table" then
    return r1
  end
  return finish(ok, a, r1, r2, r3, r4)
end
local H = {}
function H.once(code, chunkname, key, b, d, s, args, direct)
  local chunk, err = load(code, chunkname, "b", {})
  if not chunk then return nil, err end
  local co = begin(chunk, b, d, s)
  ST.direct = direct
  return deliver(co_resume(co, chunk, key, args))
end
function H.extra() return part("extra").H end
KIT = {@KIT@}
return H
"""

# The read-only library proxies, loaded the first time a skill names a library.
LIBS = r"""
local _, @HEADER@ = ...
local next, error, tostring, setmetatable = G.next, G.error, G.tostring, G.setmetatable
local os_time, os_clock, os_date = OS.time, OS.clock, OS.date
-- A proxy never hands out the table behind it (pairs() iterates it through pnext), or a
-- call could change it for the next one.
local FROZEN = setmetatable({}, {__mode = "k"})  -- proxy -> the table behind it
local function readonly(_, k)
  error("cannot modify a read-only table of the sandbox (key " .. tostring(k) .. ")", 2)
end
local function pnext(proxy, k) return next(FROZEN[proxy], k) end
local function ppairs(proxy) return pnext, proxy, nil end
local function plen(proxy) return #FROZEN[proxy] end
local function freeze(real, iterate)
  local proxy = setmetatable({}, {
    __index = real, __newindex = readonly, __pairs = iterate or ppairs, __len = plen,
    __metatable = false,
  })
  FROZEN[proxy] = real
  return proxy
end
local function spairs(proxy)  -- pairs(string): every function, the guarded ones included
  for k in next, STRING do local _ = SAFE[k] end
  return pnext, proxy, nil
end
local L = {FROZEN = FROZEN, readonly = readonly, freeze = freeze}
function L.lib(k)
  if k == "string" then return freeze(SAFE, spairs) end
  if k == "table" then return freeze(TABLE) end
  if k == "math" then return freeze(MATH) end
  if k == "utf8" then return freeze(UTF8) end
  return freeze({time = os_time, clock = os_clock, date = os_date})
end
return L
"""

# Loaded into an isolate the first time a skill needs one of these (see section 4 above).
EXTRA = r"""
local L, @HEADER@ = ...
local pcall, xpcall, error, type, select, next, pairs, ipairs, tostring, tonumber =
  G.pcall, G.xpcall, G.error, G.type, G.select, G.next, G.pairs, G.ipairs, G.tostring,
  G.tonumber
local assert, rawget, rawset, rawequal, setmetatable =
  G.assert, G.rawget, G.rawset, G.rawequal, G.setmetatable
local co_create, co_resume, co_yield, co_status, co_running, co_isyieldable, co_close =
  CO.create, CO.resume, CO.yield, CO.status, CO.running, CO.isyieldable, CO.close
local concat, unpack, mtype = TABLE.concat, TABLE.unpack, MATH.type
local sfind, smatch, sgmatch, sgsub, ssub, sbyte, srep =
  STRING.find, STRING.match, STRING.gmatch, STRING.gsub, STRING.sub, STRING.byte, STRING.rep
local FROZEN, readonly, freeze = L.FROZEN, L.readonly, L.freeze
local function fatal(e)  -- as the core's finish reads an error
  if ST.tripped or rawequal(e, QUOTA) then return true end
  if rawequal(e, MEMERR) then ST.tripped = "memory"; return true end
  return false
end
local function newco(f)
  local co = co_create(f)
  sethook(co, hook, "", ST.step)
  return co
end
local OURS = setmetatable({}, {__mode = "k"})  -- error objects made by mkerr
local function defer() ST.tripped = "defer"; error(QUOTA, 0) end
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
PY.null_marker(NULL)  -- Python keeps it: nested nulls it sends become this table

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

-- The string functions that can run away in C, guarded (the core hands them out through
-- its SAFE table, which is also what string methods reach).
local heavy = X.heavy
X.guards = {
  find = function(s, p, init, plain)
    if type(s) == "string" and type(p) == "string" and heavy(s, p, plain, true) then
      return X.engine().find(s, p, init, plain, true)
    end
    return sfind(s, p, init, plain)
  end,
  match = function(s, p, init)
    if type(s) == "string" and type(p) == "string" and heavy(s, p, false, true) then
      return X.engine().find(s, p, init, false, false)
    end
    return smatch(s, p, init)
  end,
  gmatch = function(s, p, init)
    if type(s) == "string" and type(p) == "string" and heavy(s, p, false, false) then
      return X.engine().gmatch(s, p, init)
    end
    return sgmatch(s, p, init)
  end,
  gsub = function(s, p, repl, n)
    if type(s) == "string" and type(p) == "string" and heavy(s, p, false, true) then
      return X.engine().gsub(s, p, repl, n)
    end
    return sgsub(s, p, repl, n)
  end,
  rep = function(s, n, sep)
    if type(s) == "string" and mtype(n) == "integer" and n > 0 then
      local size = (#s + (type(sep) == "string" and #sep or 0)) * n
      if size > MEMCAP then ST.tripped = "memory"; error(QUOTA, 0) end
    end
    return srep(s, n, sep)
  end,
}

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
  local st = ST
  st.used, st.budget, st.deadline, st.step, st.tripped = 0, b, d, s, nil
  st.env, st.loaded, st.ctx, st.direct = env, nil, nil, nil
  local co = newco(run_chunk)
  st.co, st.costep = co, s
  return finish(co_resume(co, chunk, nil, args))
end
-- Answer a host request and go on with the call.
function H.resume(ok, v, code, message, id)
  return finish(co_resume(ST.co, ok, v, code, message, id))
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
-- A runner (warm isolates): one entry's bytecode loaded for it alone, with its key and
-- limits, so a call crosses with two values and gives back just the table when it
-- returned one table. The environment is kept while a call leaves it as it was made
-- (holding nothing but its own _G): nothing of a call can reach the next one through
-- it, and the common call saves making one. ``direct`` marks runs with no call context
-- (Transport.direct): the first log line or context lookup stops one (tripped "defer")
-- so the runtime can redo the call in full.
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
    local st = ST
    st.used, st.budget, st.deadline, st.step, st.tripped = 0, b, d, s, nil
    st.env, st.loaded, st.ctx, st.direct = env, nil, nil, direct
    local co = st.co
    if co == nil or co_status(co) ~= "suspended" then
      co = newco(server)
      st.co, st.costep = co, s
    elseif st.costep ~= s then
      sethook(co, hook, "", s)
      st.costep = s
    end
    return deliver(co_resume(co, chunk, key, args))
  end
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
X.H = H
return X
"""

# What the core hands each part, by position (a table by name would cost every new VM a
# string per name).
KIT_NAMES = tuple(
    """
    fetch ST QUOTA MEMERR HOSTREQ LIMIT MEMCAP setupvalue sethook hook load collectgarbage
    G CO STRING SAFE TABLE MATH UTF8 OS ENV_MT DONE begin finish deliver server
    """.split()  # noqa: SIM905 (a word list, as the Lua side spells them)
)
HARNESS = HARNESS.replace("@KIT@", ", ".join(KIT_NAMES) + f", n = {len(KIT_NAMES)}")
LIBS = LIBS.replace("@HEADER@", ", ".join(KIT_NAMES))
EXTRA = EXTRA.replace("@HEADER@", ", ".join(KIT_NAMES))
