"""The Lua-side pattern engine (used when a match could run long in C) agrees with Lua's own."""

from __future__ import annotations

import lupa.lua54 as lupa
import orjson
import pytest

from skillyard.transports.lua import isolate as isolate_module
from tests.transports.luakit import run_lua

CASES = [
    ("hello world", "o w"),
    ("hello world", "l+"),
    ("hello world", "^h(.-)o"),
    ("hello world", "(%w+) (%w+)"),
    ("hello world", "()ll()"),
    ("hello world", "%s*$"),
    ("  trim me  ", "^%s*(.-)%s*$"),
    ("key = value", "^(%w+)%s*=%s*(%w+)$"),
    ("THE (quick) fox", "%((%a+)%)"),
    ("THE (quick) fox", "%f[%a]%a+"),
    ("x = [[a[b]c]]", "%[(%b[])%]"),
    ("f(a(b)c)d", "%b()"),
    ("aaa", "a-b"),
    ("aaab", "a-b"),
    ("aaab", "a*"),
    ("aaab", "a?a?b"),
    ("abcabc", "(abc)%1"),
    ("2024-01-31", "(%d+)-(%d+)-(%d+)"),
    ("[x]", "[]]"),
    ("a.b.c", "[^.]+"),
    ("tab\there", "[%s]"),
    ("", ".*"),
    ("end$", "%$"),
    ("a$b", "$b"),
    ("one two  three", "%s+"),
    ("hello", ""),
    ("hello", "x*"),
]


def _probe_code(cases: list[tuple[str, str]]) -> str:
    lines = ["local out = {}", "local cases = ..."]
    lines.append(
        """
for i, c in ipairs(cases) do
  local s, p = c[1], c[2]
  local r = {}
  r.find = {string.find(s, p)}
  r.find3 = {string.find(s, p, 3)}
  r.findneg = {string.find(s, p, -4)}
  r.match = {string.match(s, p)}
  local g = {}
  for a, b in string.gmatch(s, p) do g[#g + 1] = {a, b} if #g > 20 then break end end
  r.gmatch = g
  r.gsub = {string.gsub(s, p, "<%0>")}
  r.gsub1 = {string.gsub(s, p, "%%", 1)}
  r.gsubf = {string.gsub(s, p, function(a) return "[" .. tostring(a) .. "]" end)}
  r.gsubt = {string.gsub(s, p, {hello = "HI", a = false})}
  out[i] = r
end
return out
"""
    )
    return "\n".join(lines)


def _normalise(value):
    return orjson.loads(orjson.dumps(value))


def _native(cases):
    rt = lupa.LuaRuntime()
    fn = rt.execute("return function(...) " + _probe_code(cases) + " end")
    table = rt.table_from([rt.table_from(list(c)) for c in cases])

    def to_py(v):
        if lupa.lua_type(v) == "table":
            items = dict(v.items())
            if items and all(isinstance(k, int) for k in items):
                return [to_py(items[k]) for k in sorted(items)]
            return {k: to_py(x) for k, x in items.items()} if items else []
        return v

    return to_py(fn(table))


def _fix_empty(value):
    # empty tables come back as {} from skillyard and [] from the native helper
    if value == {}:
        return []
    if isinstance(value, dict):
        return {k: _fix_empty(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fix_empty(v) for v in value]
    return value


@pytest.mark.parametrize("limit", [0, isolate_module.PATTERN_LIMIT], ids=["lua-engine", "native"])
def test_pattern_functions_match_lua(tmp_path, monkeypatch, limit):
    monkeypatch.setattr(isolate_module, "PATTERN_LIMIT", limit)
    body = "return (load([[" + _probe_code(CASES) + "]]))(args.cases)"
    got = run_lua(tmp_path, body, {"cases": [list(c) for c in CASES]})
    want = _native(CASES)
    got, want = _fix_empty(_normalise(got)), _fix_empty(_normalise(want))
    for i, case in enumerate(CASES):
        assert got[i] == want[i], f"case {case!r}"


@pytest.mark.parametrize(
    "pattern,message",
    [
        ("%", "ends with '%'"),
        ("[a", "missing ']'"),
        ("%b", "missing arguments"),
        ("(%1)", "capture"),
    ],
)
def test_malformed_patterns_fail_like_lua(tmp_path, monkeypatch, pattern, message):
    monkeypatch.setattr(isolate_module, "PATTERN_LIMIT", 0)
    out = run_lua(
        tmp_path,
        "local ok, err = pcall(string.find, 'abc', args.p) return {ok = ok, err = err}",
        {"p": pattern},
    )
    assert out["ok"] is False and message in out["err"]
