"""A port of Lua 5.4's pattern matcher (lstrlib.c) to Lua, as Lua source.

Loaded into an isolate only when a pattern call looks too expensive to run in C
(see the harness): in Lua the matcher runs under the count hook, so a
pathological pattern stops at the deadline instead of running unbounded in C.
Checked against Lua's own matcher in tests/transports/test_lua_patterns.py.
"""

from __future__ import annotations

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
