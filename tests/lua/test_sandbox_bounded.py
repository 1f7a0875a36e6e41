"""Library functions whose C loops the time limit could not stop (bounded.lua).

Three things per wrapped function: the attack ends (promptly, or in a
timeout), the results are those of the original C function (differential
checks against a raw lupa runtime of the same Lua), and errors still name
the script's line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moonbus.errors import ScriptError, ScriptTimeout
from moonbus.lua.sandbox import SandboxFactory

pytestmark = pytest.mark.timeout(60, method="thread")

Run = Callable[..., tuple[Any, ...]]

MOVE_CHUNK = 4096  # bounded.lua's chunk size: ranges around it take both paths


# -------------------------------------------------------------- string.rep
@pytest.mark.parametrize(
    "source",
    [
        "return string.rep('', math.maxinteger)",
        "return ('').rep('', 1e18)",
        "return (''):rep(math.maxinteger, '')",
        "return string.rep('', '9007199254740992')",
    ],
)
def test_empty_rep_returns_at_once(lua: Run, source: str) -> None:
    start = time.monotonic()
    assert lua(source, limit=0.1) == ("",)
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("return ('ab'):rep(3)", "ababab"),
        ("return string.rep('ab', 3, ',')", "ab,ab,ab"),
        ("return string.rep('', 3, ',')", ",,"),
        ("return string.rep('x', 0)", ""),
        ("return string.rep('x', -5)", ""),
        ("return string.rep(5, 2)", "55"),
        ("return string.rep('x', '3')", "xxx"),
        ("return string.rep('x', 2.0)", "xx"),
        ("return string.rep('', 1)", ""),
    ],
)
def test_rep_results_are_unchanged(lua: Run, source: str, expected: str) -> None:
    assert lua(source) == (expected,)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("local s = string.rep('x')", "bad argument #2 to 'string.rep' (number expected, got nil)"),
        (
            "local s = string.rep('', 1.5)",
            "bad argument #2 to 'string.rep' (number has no integer representation)",
        ),
        (
            "local s = string.rep({}, 2)",
            "bad argument #1 to 'string.rep' (string expected, got table)",
        ),
        ("local s = ('x'):rep(1e12)", "resulting string too large"),
    ],
)
def test_rep_errors_point_at_the_script(lua: Run, source: str, message: str) -> None:
    with pytest.raises(ScriptError) as caught:
        lua("\n" + source)
    assert caught.value.where == "attack.lua:2"
    assert caught.value.message == "attack.lua:2: " + message


def test_huge_rep_is_a_memory_error_not_a_hang(lua: Run) -> None:
    from moonbus.errors import ScriptMemoryError

    with pytest.raises(ScriptMemoryError):
        lua("local s = ('x'):rep(2^30)")


# ---------------------------------------------- differential table checks
TABLE_CASES = """
local mt = ...
local function mk(n) local t = {} for i = 1, n do t[i] = i * 10 end
  if mt then setmetatable(t, {}) end return t end
local out = {}
local function dump(t, n) local r = {} for i = 1, n do r[#r + 1] = tostring(t[i]) end
  return table.concat(r, ",") end
local function try(name, f)
  local ok, err = pcall(f)
  local text = tostring(err):gsub("^.-:%d+: ", ""):gsub("'table%.", "'")
  out[#out + 1] = name .. "=" .. (ok and "ok" or text)
end
local t = mk(5) table.insert(t, 1, 0) out[#out + 1] = dump(t, 7)
local t = mk(5) table.insert(t, 6, 0) out[#out + 1] = dump(t, 7)
local t = mk(5) table.insert(t, 3, 0) out[#out + 1] = dump(t, 7)
local t = mk(5) table.insert(t, 99) out[#out + 1] = dump(t, 7)
local t = mk(0) table.insert(t, "a") out[#out + 1] = dump(t, 2)
try("insert too far", function() table.insert(mk(5), 8, 1) end)
try("insert at 0", function() table.insert(mk(5), 0, 1) end)
try("insert float", function() table.insert(mk(5), 1.5, 1) end)
try("insert string pos", function() table.insert(mk(5), "x", 1) end)
try("insert numeric string pos", function()
  local t = mk(2) table.insert(t, "1", 5) assert(t[1] == 5) end)
try("insert 4 args", function() table.insert(mk(5), 1, 2, 3) end)
try("insert 1 arg", function() table.insert(mk(5)) end)
local t = mk(5) out[#out + 1] = tostring(table.remove(t)) .. ":" .. dump(t, 6)
local t = mk(5) out[#out + 1] = tostring(table.remove(t, 1)) .. ":" .. dump(t, 6)
local t = mk(5) out[#out + 1] = tostring(table.remove(t, 3)) .. ":" .. dump(t, 6)
local t = mk(5) out[#out + 1] = tostring(table.remove(t, 6)) .. ":" .. dump(t, 6)
local t = mk(0) out[#out + 1] = tostring(table.remove(t)) .. ":" .. dump(t, 2)
local t = mk(0) out[#out + 1] = tostring(table.remove(t, 0)) .. ":" .. dump(t, 2)
local t = mk(5) out[#out + 1] = tostring(table.remove(t, nil)) .. ":" .. dump(t, 6)
try("remove too far", function() table.remove(mk(5), 8) end)
try("remove at -1", function() table.remove(mk(5), -1) end)
local t = mk(6) t[2], t[5] = 99, -1 table.sort(t) out[#out + 1] = dump(t, 6)
local t = mk(6) table.sort(t, function(a, b) return a > b end) out[#out + 1] = dump(t, 6)
local t = mk(1) table.sort(t, 42) out[#out + 1] = dump(t, 1)
try("sort bad comparator", function() table.sort(mk(5), 3) end)
try("sort with nils", function() local t = mk(5) t[3] = nil t[5] = nil
  table.sort(setmetatable(t, {__len = function() return 5 end})) end)
try("sort mixed", function() local t = mk(3) t[2] = "x" table.sort(t) end)
try("sort error in comparator", function() table.sort(mk(3), function() error("cmp", 0) end) end)
out[#out + 1] = table.concat(mk(4), "-", 2, 3) .. "|" .. table.concat(mk(4)) .. "|"
  .. table.concat(mk(4), 1) .. "|" .. table.concat(mk(4), ",", 3) .. "|"
  .. table.concat(mk(4), ",", 5)
try("concat bad value", function() local t = mk(4) t[2] = {} table.concat(t) end)
try("concat nil value", function() table.concat(mk(4), ",", 1, 6) end)
try("concat bad sep", function() table.concat(mk(4), {}) end)
try("concat bad i", function() table.concat(mk(4), ",", "x") end)
local t = mk(5) table.move(t, 1, 3, 3) out[#out + 1] = dump(t, 6)
local t = mk(5) table.move(t, 2, 5, 1) out[#out + 1] = dump(t, 6)
local t = mk(5) local d = table.move(t, 1, 5, 2, {}) out[#out + 1] = dump(d, 6)
local t = mk(5) out[#out + 1] = tostring(table.move(t, 3, 1, 1) == t)
try("move too many", function() table.move({}, -1, math.maxinteger, 1) end)
try("move wrap", function() table.move({}, 1, 10, math.maxinteger - 2) end)
try("move no table", function() table.move(nil, 1, 2, 3) end)
return table.concat(out, "\\n")
"""


@pytest.fixture(scope="module")
def raw_results(factory: SandboxFactory) -> dict[bool, list[str]]:
    raw = factory.lua_module.LuaRuntime(register_eval=False, register_builtins=False)
    return {mt: raw.execute(TABLE_CASES, mt).split("\n") for mt in (False, True)}


@pytest.mark.parametrize("with_metatable", [False, True], ids=["plain", "metatable"])
def test_table_functions_match_the_originals(
    lua: Run, raw_results: dict[bool, list[str]], with_metatable: bool
) -> None:
    # Plain tables take the C functions through the wrappers; tables with a
    # metatable take the Lua versions. Both must agree with plain Lua.
    ours = lua(TABLE_CASES, with_metatable)[0].split("\n")
    assert ours == raw_results[with_metatable]


MOVE_CHECK = """
local n, f, e, t, same = ...
local a = {}
for i = 1, n do a[i] = i end
local dest = same and a or {}
local r = table.move(a, f, e, t, not same and dest or nil)
assert(r == dest)
local out = {}
for i = 1, n + (e - f) + t + 1 do
  local v = dest[i]
  if v ~= nil then out[#out + 1] = i .. "=" .. v end
end
return table.concat(out, ",")
"""


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(MOVE_CHUNK - 10, 3 * MOVE_CHUNK),
    f=st.integers(1, 50),
    span=st.integers(MOVE_CHUNK - 2, 2 * MOVE_CHUNK + 3),
    t=st.integers(1, 3 * MOVE_CHUNK),
    same=st.booleans(),
)
def test_chunked_move_matches_the_original(
    factory: SandboxFactory, n: int, f: int, span: int, t: int, same: bool
) -> None:
    raw = factory.lua_module.LuaRuntime(register_eval=False, register_builtins=False)
    engine = factory.create("mover")
    try:
        e = f + span
        expected = raw.execute(MOVE_CHECK, n, f, e, t, same)
        env = engine.new_env()
        got = engine.call(engine.compile(MOVE_CHECK, "move.lua", env), n, f, e, t, same, limit=10.0)
        assert got == (expected,)
    finally:
        engine.close()


def test_move_through_metamethods_keeps_order(lua: Run, factory: SandboxFactory) -> None:
    # Overlapping move in one proxied table: every read and write goes through
    # __index/__newindex, in the same order as plain Lua's.
    source = """
        local log, store = {}, {}
        for i = 1, 10000 do store[i] = i end
        local t = setmetatable({}, {
          __index = function(_, k) return store[k] end,
          __newindex = function(_, k, v) store[k] = v log[#log + 1] = k end,
        })
        table.move(t, 1, 9000, 500)
        return store[500] .. " " .. store[9499] .. " " .. #log .. " " .. log[1] .. " " .. log[#log]
    """
    raw = factory.lua_module.LuaRuntime(register_eval=False, register_builtins=False)
    assert lua(source) == (raw.execute(source),)


# ----------------------------------------------- errors and the time limit
@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("table.insert(nil, 1)", "bad argument #1 to 'table.insert' (table expected, got nil)"),
        ("table.insert({}, 5, 1)", "bad argument #2 to 'table.insert' (position out of bounds)"),
        (
            "table.insert(setmetatable({}, {}), 5, 1)",
            "bad argument #2 to 'table.insert' (position out of bounds)",
        ),
        ("table.remove({}, 5)", "bad argument #2 to 'table.remove' (position out of bounds)"),
        (
            "table.sort(setmetatable({3, 1}, {}), 1)",
            "bad argument #2 to 'table.sort' (function expected, got number)",
        ),
        ("table.concat({{}})", "invalid value (table) at index 1 in table for 'concat'"),
        (
            "table.concat(setmetatable({{}}, {}))",
            "invalid value (table) at index 1 in table for 'concat'",
        ),
        ("table.move(nil, 1, 2, 3)", "bad argument #1 to 'table.move' (table expected, got nil)"),
        (
            "table.move({}, 1, 10000, 3, 5)",
            "bad argument #5 to 'table.move' (table expected, got number)",
        ),
        (
            "table.insert(setmetatable({}, {__len = function() return 1.5 end}), 1)",
            "object length is not an integer",
        ),
    ],
)
def test_wrapped_errors_name_the_script_line(lua: Run, source: str, message: str) -> None:
    with pytest.raises(ScriptError) as caught:
        lua("local x = 1\n" + source + "\n")
    assert caught.value.where == "attack.lua:2", caught.value.message
    assert caught.value.message == "attack.lua:2: " + message


def test_errors_from_metamethods_pass_through_unchanged(lua: Run) -> None:
    with pytest.raises(ScriptError) as caught:
        lua(
            "local t = setmetatable({1, 2}, {__index = function() error('from index') end})\n"
            "table.concat(t, ',', 1, 3)"
        )
    assert caught.value.message == "attack.lua:1: from index"


def test_comparator_timeout_in_a_plain_sort_is_a_timeout(lua: Run) -> None:
    with pytest.raises(ScriptTimeout):
        lua(
            "local t = {} for i = 1, 50 do t[i] = 50 - i end"
            " table.sort(t, function(a, b) while true do end end)",
            limit=0.1,
        )


def test_plain_tables_still_use_the_c_speed_path(lua: Run) -> None:
    # A large plain sort, insert at the front and concat finish quickly.
    result = lua(
        """
        local t = {}
        for i = 1, 200000 do t[i] = (i * 7919) % 200003 end
        table.sort(t)
        for i = 1, 50 do table.insert(t, 1, -i) end
        local s = table.concat(t, ",", 1, 1000)
        return t[1], t[51] <= t[52], #s > 0
    """,
        limit=10.0,
    )
    assert result == (-50, True, True)
