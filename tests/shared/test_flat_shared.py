"""``shared:<kind>(name)`` and an int handle's ops flattened into C closures
(``quick_shared`` / ``quick_method`` in ``_fastconvert.c``, installed by
script_env.lua when quick host calls are bound): the plain case runs no Lua
function between a handler and the cell's GIL-free operation; everything
else calls the Lua code it replaces, so every error and message stays the
Lua path's.

Each runtime test runs on the C path and on the pure-Python path
(``tests.native_paths``) and expects the same lines on both, except where
a C frame is, by design, visible (a tail call: see
test_a_tail_call_keeps_the_calling_line_on_the_c_path).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from moonbus.lua.fastconvert import native_quick_bind
from moonbus.native import load_fast_path
from moonbus.runtime import Runtime
from moonbus.shared import INT_MAX, INT_MIN, SharedStore
from tests.native_paths import both_paths

_FAST_INT = load_fast_path("moonbus.shared._fastint", env=False).module
needs_c = pytest.mark.skipif(_FAST_INT is None, reason="the C int operations are not built")

path = both_paths(load_fast_path("moonbus.shared._fastint").on)


@pytest.fixture
def stepped() -> Iterator[Runtime]:
    rt = Runtime(threaded=False, clock=lambda: 0.0)
    try:
        yield rt
    finally:
        rt.close()


def _run(rt: Runtime, tmp_path: Path, text: str, name: str = "s") -> list[str]:
    """Loads ``text``, emits "go" once, returns the script's log lines."""
    file = tmp_path / f"{name}.lua"
    file.write_text(textwrap.dedent(text), encoding="utf-8")
    host = rt.load(file)
    host.start()
    rt.bus.emit("go")
    assert host.errors == []
    return [line.msg for line in rt.recent_logs if line.script == name]


# Every line of ERRORS is numbered: each case names the line of its try().
ERRORS = """\
local function try(label, f)
  local ok, r = pcall(f)
  logger.info(label .. " | " .. tostring(ok) .. " | " .. tostring(r))
end
events:on("go", function(e)
  try("number", function() local h = shared.int(5) return h end)
  try("nil", function() local h = shared:int(nil) return h end)
  try("none", function() local h = shared.int() return h end)
  try("table", function() local h = shared:int({}) return h end)
  try("self only", function() local h = shared.int(shared) return h end)
  try("self twice", function() local h = shared.int(shared, shared) return h end)
  try("other library", function() local h = shared.int(events, "n") return tostring(h) end)
  try("dot", function() local v = shared.int("n"):increment() return v end)
  try("colon", function() local v = shared:int("n"):increment() return v end)
  try("dot op", function() local v = shared:int("n").increment(5) return v end)
  try("no self", function() local f = shared:int("n").add local v = f() return v end)
  try("add", function() local v = shared:int("n"):add(10) return v end)
  try("float", function() local v = shared:int("n"):add(1.5) return v end)
  try("max", function() local v = shared:int("n"):add(math.maxinteger) return v end)
  try("overflow", function() local v = shared:int("n"):add(1) return v end)
  try("underflow", function() local v = shared:int("n"):subtract(math.mininteger) return v end)
  try("string kind", function() local h = shared:string("n") return h end)
  shared:remove("n")
  shared:string("n"):set("x")
  try("re-set", function() local h = shared:int("n") return h end)
  try("stale op", function() local v = shared:int("m"):increment() return v end)
  local m = shared:int("m")
  shared:remove("m")
  shared:float("m"):set(1.5)
  try("removed op", function() local v = m:increment() return v end)
  try("removed check", function() local h = shared:int("m") return h end)
  try("results", function()
    return select("#", shared:int("k")) .. select("#", shared:int("k"):increment())
  end)
  try("tostring", function() return tostring(shared:int("k")) end)
  try("metatable", function() return getmetatable(shared:int("k")) end)
  try("same", function() return rawequal(shared:int("k"), shared.int("k")) end)
  try("read-only", function() shared:int("k").increment = 1 end)
end)
"""

ERROR_LINES = [
    "number | false | s.lua:6: shared:int: name must be a string, got number",
    "nil | false | s.lua:7: shared:int: name must be a string, got nil",
    "none | false | s.lua:8: shared:int: name must be a string, got nil",
    "table | false | s.lua:9: shared:int: name must be a string, got table",
    "self only | false | s.lua:10: shared:int: name must be a string, got nil",
    "self twice | false | s.lua:11: shared:int: name must be a string, got table",
    "other library | true | shared int n",
    "dot | true | 1",
    "colon | true | 2",
    # a '.' for the ':' (the 5 would be taken for the handle): refused, n unchanged
    "dot op | false | s.lua:15: shared int 'n': 'increment' must be called as a method "
    "(handle:increment(...)), with ':' not '.'",
    "no self | false | s.lua:16: shared int 'n': 'add' must be called as a method "
    "(handle:add(...)), with ':' not '.'",
    "add | true | 12",
    "float | false | s.lua:18: shared int 'n': add needs an integer, got number 1.5",
    f"max | false | s.lua:19: shared int 'n': add({INT_MAX}) would leave the 64-bit range "
    f"[{INT_MIN}, {INT_MAX}] (value is 12); value unchanged",
    "overflow | true | 13",
    f"underflow | false | s.lua:21: shared int 'n': subtract({INT_MIN}) would leave the "
    f"64-bit range [{INT_MIN}, {INT_MAX}] (value is 13); value unchanged",
]


def test_errors_and_results_are_the_lua_paths(stepped: Runtime, tmp_path: Path,
                                              path: str) -> None:
    """Bad names, dot and colon calls, overflow, a key re-set as another
    kind, a removed key, results and the handle's metatable: the same lines
    on both paths (the C closures call the Lua code for all but the plain
    case; a name error is raised one level further up, past the C frame)."""
    got = _run(stepped, tmp_path, ERRORS)
    assert got[:len(ERROR_LINES)] == ERROR_LINES
    assert got[len(ERROR_LINES):] == [
        "string kind | false | s.lua:22: shared key 'n' holds an int, not a string",
        "re-set | false | s.lua:25: shared key 'n' holds a string, not an int",
        "stale op | true | 1",
        "removed op | false | s.lua:30: shared key 'm' holds a float, not an int",
        "removed check | false | s.lua:31: shared key 'm' holds a float, not an int",
        "results | true | 11",
        "tostring | true | shared int k",
        "metatable | true | shared int",
        "same | true | true",
        "read-only | false | s.lua:38: shared handles are read-only",
    ]


CLOSED = """\
local h = shared:int("n")
local function try(label, f)
  local ok, r = pcall(f)
  logger.info(label .. " | " .. tostring(ok) .. " | " .. tostring(r))
end
events:on("go", function(e) h:increment() shared:int("n") end)
events:on("again", function(e)
  try("op", function() local v = h:increment() return v end)
  try("check", function() local x = shared:int("n") return x end)
  try("new", function() local x = shared:int("other") return x end)
end)
"""


def test_a_closed_store_raises_the_lua_paths_error(stepped: Runtime, tmp_path: Path,
                                                   path: str) -> None:
    """Handle and check cached (on a live cell on the C path), then the
    store closes: the C closures step aside and the Lua code raises."""
    assert _run(stepped, tmp_path, CLOSED) == []
    assert stepped.shared.namespace("s").int("n").get() == 1
    stepped.shared.close()
    stepped.bus.emit("again")
    got = [line.msg for line in stepped.recent_logs if line.script == "s"]
    assert got == [
        "op | false | s.lua:8: the shared store is closed",
        "check | false | s.lua:9: the shared store is closed",
        "new | false | s.lua:10: the shared store is closed",
    ]


TAIL = """\
events:on("go", function(e)
  local ok, r = pcall(function() return shared.int(5) end)
  logger.info(tostring(r))
  ok, r = pcall(function()
    return shared:int("n"):add(1.5)
  end)
  logger.info(tostring(r))
end)
"""


def test_a_tail_call_keeps_the_calling_line_on_the_c_path(stepped: Runtime, tmp_path: Path,
                                                          path: str) -> None:
    """The one visible difference, and the proof that the C closures are
    installed: a Lua function tail-called by the script replaces the
    script's frame, a C function never does. So an error from a tail-called
    ``shared.int`` / ``h:add`` names the line of the ``return`` on the C
    path, and the line of the next script frame up on the Lua path (none
    for the name error, raised at a level: pcall is the C function there;
    the handler's pcall line for a host error, which skips C frames)."""
    got = _run(stepped, tmp_path, TAIL)
    if path == "native":
        assert got == ["s.lua:2: shared:int: name must be a string, got number",
                       "s.lua:5: shared int 'n': add needs an integer, got number 1.5"]
    else:
        assert got == ["shared:int: name must be a string, got number",
                       "s.lua:4: shared int 'n': add needs an integer, got number 1.5"]


# ------------------------------------------------ the closures themselves
UNIT = """
local bind, op, op_address, check, check_address, other, other_address = ...
local calls = {}
local function fallback(...)
  calls[#calls + 1] = table.pack(...)
  return "fallback", ...
end
local m = bind(op, op_address, fallback)
local c = bind(check, check_address, fallback)
local plain = bind(other, other_address, fallback)
local out = {
  debug.getinfo(m, "S").what, debug.getinfo(c, "S").what, tostring(plain),
}
local function add(...)
  local t = table.pack(...)
  for i = 1, t.n do t[i] = tostring(t[i]) end
  out[#out + 1] = table.concat(t, ",")
end
add(m("self"), m("self", 5), m(nil, 2), c())
add(#calls)
add(m("self", 1.5))
add(m())
add(c("self", 1))
add(#calls, calls[1].n, tostring(calls[1][1]), tostring(calls[1][2]))
local selves, library, cache = { [true] = true }, {}, { n = "handle" }
cache.handle = c
local s = bind(selves, library, cache, fallback)
add(debug.getinfo(s, "S").what, s("n"), s(true, "n"), s(library, "n"), select("#", s("n")),
    #calls)
add(s("x"))
add(s(5))
add(s(library, 5))
add(s())
add(s({}, "n"))
-- a name's handle and check never change once cached (get_handle): the
-- closure keeps the last name's, and runs its check on every call
local checked = 0
cache.m, cache.other = "other", function() checked = checked + 1 end
add(s("m"), s("m"), s(library, "m"), checked)
cache.e, cache.failing = "failing", function() error("check failed") end
add(pcall(s, "e"))
add(pcall(s, "e"))
add(s("n"), #calls)
return table.concat(out, "|")
"""


@needs_c
def test_the_closures_do_the_plain_case_and_hand_the_rest_over(path: str) -> None:
    """In a bare lupa state (with debug): bind with a fallback makes a C
    function for a cell user's quick and nothing for another object; the
    plain case calls no fallback, anything else calls it with every
    argument, self included, and returns what it returns; the shared
    closure answers a cached handle after its check, and hands the rest
    over (its results only, never an upvalue)."""
    if path != "native":
        pytest.skip("C closures only")
    import lupa.lua54 as lua

    assert _FAST_INT is not None
    store = SharedStore()
    op = store.int("n").native_ops()["increment"]  # type: ignore[attr-defined]
    check = store.int("n").native_check(lambda: None)  # type: ignore[attr-defined]
    quick_op, quick_check = op.quick, check.quick
    assert quick_op() == 1 and quick_check() is True  # both have the cell now

    def other() -> None:
        return None

    runtime = lua.LuaRuntime()
    state = int(runtime.execute('return string.format("%p", coroutine.running())'), 16)
    bind = native_quick_bind(lua, runtime, state)
    assert bind is not None
    got = runtime.execute(UNIT, bind, quick_op, id(quick_op), quick_check, id(quick_check),
                          other, id(other))
    assert re.sub(r"table: 0x[0-9a-f]+", "table", got).split("|") == [
        "C", "C", "nil",
        "2,7,9,true",  # self ignored; 1 by default; the check on a live cell
        "0",
        "fallback,self,1.5",
        "10",  # no self, no operand: still the plain case (as the Lua closure)
        "fallback,self,1",  # a check given operands: the Lua closure's business
        "2,2,self,1.5",
        "C,handle,handle,handle,1,2",  # no self, a selves member, its own library
        "fallback,x",
        "fallback,5",
        "fallback,table,5",  # a bad name after its library: the Lua code's error
        "fallback",
        "fallback,table,n",  # a table that is no library: the Lua code decides
        "other,other,other,3",  # the last name's check runs on every call
        "false,[string \"<python>\"]:40: check failed",
        "false,[string \"<python>\"]:40: check failed",
        "handle,7",
    ], got
    assert store.int("n").get() == 10


def test_bind_refuses_bad_shared_arguments(path: str) -> None:
    """bind's four-argument form checks its arguments like the others."""
    if path != "native" or _FAST_INT is None:
        pytest.skip("C closures only")
    import lupa.lua54 as lua

    runtime = lua.LuaRuntime()
    state = int(runtime.execute('return string.format("%p", coroutine.running())'), 16)
    bind = native_quick_bind(lua, runtime, state)
    bad = runtime.eval("function(bind, ...) return pcall(bind, ...) end")
    ok, message = bad(bind, runtime.table(), runtime.table(), runtime.table(), 1)
    assert ok is False and "expected selves, library, cache, fallback" in message
    ok, message = bad(bind, 1, 2, bad)
    assert ok is False and "expected a host object and its address" in message


def test_script_env_sets_a_names_cached_handle_only_once() -> None:
    """quick_shared keeps the last name it found with that name's handle
    and check (its upvalues), which is right only while script_env.lua never
    changes or removes a cached name or check: the kinds' caches are
    written at exactly two places, both in get_handle's first use of a name,
    and reached from nowhere else than get_handle and the C closure."""
    import moonbus.host

    source = Path(moonbus.host.__file__).with_name("script_env.lua").read_text(encoding="utf-8")
    code = "\n".join(line.split("--", 1)[0] for line in source.splitlines())
    writes = re.findall(r"\bhandles\[(\w+)\]\s*=(?!=)", code)
    assert writes == ["h", "name"], writes
    start = code.index("local function get_handle(")
    first_use = code.index("if h == nil then", start)
    branch_end = code.index("else", first_use)
    for target in ("handles[h] =", "handles[name] ="):
        assert first_use < code.index(target) < branch_end, target
    uses = [m.start() for m in re.finditer(r"\bhandle_cache\b", code)]
    body_end = code.index("\nend\n", start)
    known = re.compile(r"handle_cache( = \{\}|\[kind\] = \{\}|\[kind\], function)")
    outside = [code[max(0, u - 40):u + 40] for u in uses
               if not start <= u < body_end and not known.match(code, u)]
    assert outside == [], outside
