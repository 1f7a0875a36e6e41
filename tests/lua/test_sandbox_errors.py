"""Errors: ScriptError carries file:line; Python exceptions become Lua errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import pytest

from moonbus.errors import ScriptError, ScriptSyntaxError, ScriptTimeout
from moonbus.lua.engine import LuaEngine

Run = Callable[..., tuple[Any, ...]]


# -------------------------------------------------------------- where
@pytest.mark.parametrize(
    ("source", "where", "message"),
    [
        ("local x = nil\nreturn x.y", "attack.lua:2", "attempt to index a nil value (local 'x')"),
        ("\n\nerror('boom')", "attack.lua:3", "boom"),
        (
            "local function f()\n  return 1 + {}\nend\nf()",
            "attack.lua:2",
            "attempt to perform arithmetic on a table value",
        ),
        (
            "local t = setmetatable({}, {__index = function()\n error('deep') end})\nlocal v = t.x",
            "attack.lua:2",
            "deep",
        ),
        ("coroutine.wrap(function()\n\n error('in co') end)()", "attack.lua:3", "in co"),
        (
            "local s = ('x'):rep(1, 2, 3) .. nil",
            "attack.lua:1",
            "attempt to concatenate a nil value",
        ),
    ],
)
def test_runtime_error_carries_where(lua: Run, source: str, where: str, message: str) -> None:
    with pytest.raises(ScriptError) as caught:
        lua(source)
    error = caught.value
    assert type(error) is ScriptError
    assert error.where == where
    assert error.message == f"{where}: {message}"
    assert "stack traceback:" in error.lua_traceback


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ("x = = 1", "attack.lua:1"),
        ("local a = 1\n\nfunction f(\n", "attack.lua:4"),
        ("for i = 1 do end", "attack.lua:1"),
        ("goto nowhere", "attack.lua:1"),
        ("local x <const> = 1\nx = 2", "attack.lua:2"),
    ],
)
def test_syntax_error_carries_where(engine: LuaEngine, source: str, where: str) -> None:
    with pytest.raises(ScriptSyntaxError) as caught:
        engine.compile(source, "attack.lua", engine.new_env())
    assert caught.value.where == where
    assert caught.value.message.startswith(where + ":")


def test_error_without_position(lua: Run) -> None:
    with pytest.raises(ScriptError) as caught:
        lua("error('bare', 0)")
    assert (caught.value.message, caught.value.where) == ("bare", None)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{}", "table: 0x"),
        ("nil", "nil"),
        ("42", "42"),
        ("setmetatable({}, {__tostring = function() return 'custom' end})", "custom"),
        (
            "setmetatable({}, {__tostring = function() error('worse') end})",
            "(error object is a table value)",
        ),
        (
            "setmetatable({}, {__tostring = function() return {} end})",
            "(error object is a table value)",
        ),
    ],
)
def test_error_objects_become_messages(lua: Run, value: str, message: str) -> None:
    with pytest.raises(ScriptError) as caught:
        lua(f"error({value})")
    assert not isinstance(caught.value, ScriptTimeout)
    assert caught.value.message.startswith(message)


# ------------------------------------------- Python exceptions inside Lua
def fails(message: str) -> Callable[..., NoReturn]:
    def host_api(*_: object) -> NoReturn:
        raise ValueError(message)

    return host_api


def test_python_exception_is_a_lua_error_the_script_can_catch(lua: Run) -> None:
    assert lua(
        "local f = ...; local ok, e = pcall(f, 1, 2); return ok, tostring(e)", fails("bad move")
    ) == (False, "bad move")


def test_uncaught_python_exception_becomes_script_error(lua: Run) -> None:
    with pytest.raises(ScriptError) as caught:
        lua("local f = ...\nf()", fails("bad move"))
    # Raised in Python, so Lua gave it no position: it gets the script's frame.
    assert caught.value.message == "attack.lua:2: bad move"
    assert caught.value.where == "attack.lua:2"
    assert "attack.lua:2" in caught.value.lua_traceback


def test_script_continues_after_a_python_exception(lua: Run) -> None:
    assert lua(
        """
        local f = ...
        local failures = 0
        for i = 1, 100 do
          if not pcall(f) then failures = failures + 1 end
        end
        return failures
    """,
        fails("again"),
    ) == (100,)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class Huge(Exception):
    def __str__(self) -> str:
        return "x" * 5_000_000


class Weird(Exception):
    def __str__(self) -> str:
        return "nul\0byte \udcff surrogate ✓"


@pytest.mark.parametrize("exc", [Unprintable(), Huge(), Weird(), KeyError("k"), RecursionError()])
def test_odd_exception_messages_do_not_crash_the_host(
    engine: LuaEngine, lua: Run, exc: Exception
) -> None:
    def raiser() -> NoReturn:
        raise exc

    caught_in_lua = lua("local f = ...; local ok, e = pcall(f); return ok, type(e)", raiser)
    assert caught_in_lua == (False, "userdata")
    with pytest.raises(ScriptError) as caught:
        lua("local f = ...; f()", raiser)
    assert isinstance(caught.value.message, str)
    assert lua("return 'still fine'") == ("still fine",)


def test_python_exception_in_a_coroutine(lua: Run) -> None:
    assert lua(
        "local f = ...; local co = coroutine.create(function() f() end);"
        " local ok, e = coroutine.resume(co); return ok, tostring(e)",
        fails("inside"),
    ) == (False, "inside")


def test_python_exception_in_a_metamethod(lua: Run) -> None:
    with pytest.raises(ScriptError) as caught:
        lua(
            "local f = ...; local t = setmetatable({}, {__index = function(_, k) return f(k) end})"
            " return t.x",
            fails("meta"),
        )
    assert caught.value.message == "attack.lua:1: meta"


# ------------------------------------------------ xpcall keeps its contract
def test_xpcall_passes_arguments_and_results(lua: Run) -> None:
    assert lua("return xpcall(function(a, b) return a + b, a * b end, tostring, 3, 4)") == (
        True,
        7,
        12,
    )


def test_xpcall_handler_sees_and_replaces_the_error(lua: Run) -> None:
    assert lua("return xpcall(error, function(e) return 'handled ' .. e end, 'oops', 0)") == (
        False,
        "handled oops",
    )


def test_xpcall_handler_gets_a_traceback_position(lua: Run) -> None:
    ok, message = lua("return xpcall(function()\n error('at two')\nend, function(e) return e end)")
    assert (ok, message) == (False, "attack.lua:2: at two")


def test_xpcall_refuses_a_missing_handler(lua: Run) -> None:
    with pytest.raises(ScriptError, match=r"bad argument #2 to 'xpcall' \(function expected"):
        lua("local ok = xpcall(function() end)")
