"""The bounded pattern functions load on first use (lazy_strings.lua).

A fresh state carries none of the pattern chunks; the first read of
string.find / match / gmatch / gsub / contains / trim / split (through the
library or a string method) loads them, under the limits of the call that
reads. Whatever happens during that load, a script never gets the C matcher.
"""

from __future__ import annotations

import pytest
from tests.lua.conftest import Run, run_in

from moonbus.errors import ScriptError, ScriptMemoryError, ScriptTimeout
from moonbus.lua.engine import LuaEngine

CATASTROPHIC = "return string.find(string.rep('a', 4e4), '.-.-b')"
LAZY = ("find", "match", "gmatch", "gsub", "contains", "trim", "split")


def test_a_fresh_state_does_not_carry_the_pattern_chunks(engine: LuaEngine, lua: Run) -> None:
    fresh = engine.memory_used()
    assert fresh is not None
    lua("collectgarbage() collectgarbage()")
    before = engine.memory_used()
    assert lua("return ('a b'):find('b')") == (3, 3)
    lua("collectgarbage() collectgarbage()")
    after = engine.memory_used()
    assert before is not None and after is not None
    assert after - before > 30 * 1024  # the matcher, its cost bound and the wrappers


@pytest.mark.parametrize("first", [
    "return string.find(string.rep('a', 4e4), '.-.-b')",
    "return (string.rep('a', 4e4)):find('.-.-b')",
    "local m = string.match return m(string.rep('a', 4e4), '.-.-b')",
    "for k, f in pairs(string) do if k == 'find' then "
    "return f(string.rep('a', 4e4), '.-.-b') end end",
])
def test_the_first_read_already_gets_the_bounded_matcher(lua: Run, first: str) -> None:
    with pytest.raises(ScriptTimeout):
        lua(first, limit=0.2)
    assert lua("return ('x'):find('x')") == (1, 1)


def test_every_lazy_name_works_on_first_use(factory) -> None:  # type: ignore[no-untyped-def]
    calls = {
        "find": ("return string.find('abc', 'b')", (2, 2)),
        "match": ("return ('k=v'):match('(%w)=(%w)')", ("k", "v")),
        "gmatch": ("local r = {} for w in string.gmatch('a b', '%a') do r[#r+1] = w end "
                   "return table.concat(r)", ("ab",)),
        "gsub": ("return ('aaa'):gsub('a', 'b')", ("bbb", 3)),
        "contains": ("return ('hello'):contains('ell')", (True,)),
        "trim": ("return string.trim('  x  ')", ("x",)),
        "split": ("return #('a,b,c'):split()", (3,)),
    }
    assert set(calls) == set(LAZY)
    for source, expected in calls.values():
        engine = factory.create("lazy")
        try:
            assert run_in(engine, source) == expected
        finally:
            engine.close()


def test_errors_name_the_function_as_an_eager_load_did(lua: Run) -> None:
    source = "local i = ('x'):find({}) return i"  # not a tail call: the name shows
    with pytest.raises(ScriptError) as first:
        lua(source)
    with pytest.raises(ScriptError) as second:
        lua(source)
    expected = "attack.lua:1: bad argument #1 to 'find' (string expected, got table)"
    assert str(first.value) == expected
    assert str(second.value) == str(first.value)


def test_environments_made_before_and_after_the_load(engine: LuaEngine, lua: Run) -> None:
    early = engine.new_env()
    # Until the load: protected metatable, names not stored in the copy.
    assert lua("return getmetatable(string), rawget(string, 'find')", env=early) == (False, None)
    names = lua("local n = {} for k in pairs(string) do n[#n+1] = k end "
                "table.sort(n) return table.concat(n, ',')", env=early)[0].split(",")
    assert set(LAZY) <= set(names)  # __pairs loaded them first
    assert lua("return type(rawget(string, 'gsub'))", env=early) == ("function",)
    late = engine.new_env()
    assert lua("return getmetatable(string), type(rawget(string, 'find'))", env=late) == (
        None, "function")
    # Each environment keeps its own copy.
    lua("string.find = nil", env=late)
    assert lua("return string.find('ab', 'b')", env=early) == (2, 2)


def test_a_load_that_runs_out_of_memory_leaves_no_c_matcher(engine: LuaEngine, lua: Run) -> None:
    env = engine.new_env()
    run_in(engine, "collectgarbage() collectgarbage()", env=env)
    engine.set_memory_budget(8 * 1024)  # far less than the pattern chunks need
    with pytest.raises(ScriptMemoryError):
        lua("return ('x'):find('x')", env=env)
    engine.set_memory_limit(64 * 1024 * 1024)
    # The failed load left nothing behind: the next read loads the wrappers.
    assert lua("return rawget(string, 'find')", env=env) == (None,)
    with pytest.raises(ScriptTimeout):
        lua(CATASTROPHIC, env=env, limit=0.2)
