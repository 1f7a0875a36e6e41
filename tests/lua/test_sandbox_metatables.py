"""Metatables, __gc, _G and the isolation of environments."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from moonbus.errors import ScriptError
from moonbus.lua.engine import LuaEngine
from moonbus.lua.sandbox import SandboxFactory

Run = Callable[..., tuple[Any, ...]]


# ------------------------------------------------------------ string metatable
def test_string_metatable_is_sealed(lua: Run) -> None:
    assert lua('return getmetatable("")') == ("string",)
    assert lua('return getmetatable("abc") == getmetatable(1 .. "")') == (True,)


def test_string_metatable_cannot_be_modified(lua: Run) -> None:
    with pytest.raises(ScriptError, match="attempt to index a string value"):
        lua('getmetatable("").__index = {}')
    with pytest.raises(ScriptError, match="attempt to index a nil value"):
        lua('getmetatable("").__index.upper = nil')
    assert lua('return ("a"):upper()') == ("A",)


def test_string_methods_include_the_helpers(lua: Run) -> None:
    assert lua(
        'return ("a,b"):split(","), (" x "):trim(), ("abc"):contains("b"),'
        ' ("abc"):starts_with("ab"), ("abc"):ends_with("bc")'
    )[1:] == (
        "x",
        True,
        True,
        True,
    )


# ------------------------------------------------------------------ __gc
def test_setmetatable_refuses_gc(lua: Run) -> None:
    with pytest.raises(ScriptError, match="__gc metamethods are not allowed in the sandbox"):
        lua("setmetatable({}, {__gc = function() end})")
    with pytest.raises(ScriptError, match="__gc metamethods are not allowed in the sandbox"):
        lua("setmetatable({}, {__gc = false})")


def test_gc_added_after_setmetatable_never_runs(engine: LuaEngine, lua: Run) -> None:
    ran: list[str] = []
    source = """
        local notify = ...
        for i = 1, 100 do
          local mt = {}
          setmetatable({}, mt)
          mt.__gc = function() notify("finalizer ran") end
        end
        collectgarbage()
        collectgarbage()
    """
    lua(source, ran.append)
    assert ran == []
    engine.close()  # lua_close runs every pending finalizer: there is none
    assert ran == []


def test_gc_in_the_metatable_of_a_metatable_is_not_a_finalizer(lua: Run) -> None:
    ran: list[str] = []
    lua(
        """
        local notify = ...
        local mt = setmetatable({}, {__index = {__gc = function() notify("ran") end}})
        setmetatable({}, mt)
        collectgarbage()
    """,
        ran.append,
    )
    assert ran == []


def test_close_after_a_garbage_heavy_script_is_quick(factory: SandboxFactory) -> None:
    engine = factory.create("garbage")
    engine.call(
        engine.compile(
            """
        keep = {}
        for i = 1, 200000 do
          local t = setmetatable({i}, {__index = keep, __close = function() while true do end end})
          if i % 2 == 0 then keep[i] = t end
        end
    """,
            "garbage.lua",
            engine.new_env(),
        ),
        limit=10.0,
    )
    start = time.monotonic()
    engine.close()
    assert time.monotonic() - start < 5.0
    assert engine.closed


# ------------------------------------------------------------------------- _G
def test_g_is_the_environment_not_the_real_globals(lua: Run) -> None:
    assert lua("return _G == _ENV, rawget(_G, '_G') == _G") == (True, True)
    assert lua("return _G.debug, _G.io, _G.package, _G.python") == (None, None, None, None)


def test_real_globals_are_empty(engine: LuaEngine) -> None:
    # Even the host-side view of the state's globals holds nothing a script could want.
    real = engine._rt.globals()
    assert list(real.keys()) == []


# ----------------------------------------------------------------- isolation
def test_globals_do_not_leak_between_environments(engine: LuaEngine, lua: Run) -> None:
    first, second = engine.new_env(), engine.new_env()
    lua("x = 42; _G.y = 7; rawset(_G, 'z', 1)", env=first)
    assert lua("return x, y, z", env=first) == (42, 7, 1)
    assert lua("return x, y, z", env=second) == (None, None, None)


def test_library_changes_stay_in_their_environment(engine: LuaEngine, lua: Run) -> None:
    first, second = engine.new_env(), engine.new_env()
    lua(
        """
        string.x = function() return "mine" end
        string.upper = nil
        math.pi = 3
        table.insert = nil
        os.time = function() return 0 end
        coroutine.wrap = nil
        pcall = nil
    """,
        env=first,
    )
    assert lua(
        "return string.x, string.upper('a'), math.pi > 3, type(table.insert),"
        " os.time() > 0, type(coroutine.wrap), type(pcall)",
        env=second,
    ) == (
        None,
        "A",
        True,
        "function",
        True,
        "function",
        "function",
    )


def test_string_methods_ignore_environment_changes(engine: LuaEngine, lua: Run) -> None:
    # Method calls on strings use the real (shared, unreachable) string table:
    # one environment's edits change neither its own nor another's methods.
    first, second = engine.new_env(), engine.new_env()
    lua("string.upper = function() return 'hijacked' end string.x = 1", env=first)
    assert lua("return ('a'):upper(), ('a').x", env=first) == ("A", None)
    assert lua("return ('a'):upper(), ('a').x", env=second) == ("A", None)


def test_environments_of_different_engines_are_independent(factory: SandboxFactory) -> None:
    one, two = factory.create("one"), factory.create("two")
    try:
        env_one, env_two = one.new_env(), two.new_env()
        one.call(one.compile("shared_name = 'one'", "a.lua", env_one), limit=1.0)
        assert two.call(two.compile("return shared_name", "b.lua", env_two), limit=1.0) == (None,)
    finally:
        one.close()
        two.close()


# ------------------------------------------------------------ collectgarbage
@pytest.mark.parametrize(
    "option", ["stop", "restart", "incremental", "generational", "setpause", "setstepmul", "bogus"]
)
def test_collectgarbage_harmful_options_are_refused(lua: Run, option: str) -> None:
    with pytest.raises(ScriptError, match=f"collectgarbage\\('{option}'\\) is not allowed"):
        lua(f"collectgarbage('{option}')")
    assert lua("return collectgarbage('isrunning')") == (True,)


def test_collectgarbage_harmless_options_work(lua: Run) -> None:
    count, collected, running = lua(
        "return collectgarbage('count'), collectgarbage(), collectgarbage('isrunning')"
    )
    assert count > 0 and collected == 0 and running is True
    assert lua("return type(collectgarbage('step'))") == ("boolean",)
