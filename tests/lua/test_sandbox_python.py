"""No path from Lua to Python internals.

Only what the host passes in on purpose reaches a script: a Python function
passed as an argument can be called and printed, nothing else. Its
attributes, its metatable, raw access and iteration are all closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from moonbus.errors import ScriptError

Run = Callable[..., tuple[Any, ...]]

DENIED = "Python attributes are not accessible from Lua"

calls: list[str] = []


def host_function(x: int = 0) -> int:
    """A module-level function: its __globals__ would be this module."""
    calls.append("called")
    return x * 2


@pytest.mark.parametrize(
    "expression",
    [
        "f.__globals__",
        "f.__class__",
        "f.__code__",
        "f.__dict__",
        "f.__closure__",
        "f.__builtins__",
        "f.__self__",
        "f.__module__",
        "f.__call__",
        "f.__getattribute__",
        "f.__reduce_ex__",
        "f.__init_subclass__",
        "f.__name__",
        "f[1]",
        'f["__globals__"]',
        "f.x",
    ],
)
def test_attribute_and_index_access_is_denied(lua: Run, expression: str) -> None:
    with pytest.raises(ScriptError, match=DENIED):
        lua(f"local f = ...; return {expression}", host_function)


@pytest.mark.parametrize("statement", ["f.x = 1", "f.__class__ = 1", "f[1] = 2"])
def test_attribute_assignment_is_denied(lua: Run, statement: str) -> None:
    with pytest.raises(ScriptError, match=DENIED):
        lua(f"local f = ...; {statement}", host_function)
    assert not hasattr(host_function, "x")


def test_python_global_and_eval_are_absent(lua: Run) -> None:
    assert lua("return python, rawget(_ENV, 'python')") == (None, None)
    with pytest.raises(ScriptError, match="attempt to index a nil value"):
        lua("return python.eval('1 + 1')")
    with pytest.raises(ScriptError, match="attempt to index a nil value"):
        lua("return python.builtins.open")


def test_metatable_of_a_python_object_is_sealed(lua: Run) -> None:
    assert lua("local f = ...; return getmetatable(f)", host_function) == ("python object",)
    # The seal is a string: its __gc / __index are string lookups, i.e. nil.
    assert lua(
        "local f = ...; local mt = getmetatable(f); return mt.__gc, mt.__index, mt.__call",
        host_function,
    ) == (None, None, None)


def test_metatable_of_a_python_object_cannot_be_replaced(lua: Run) -> None:
    with pytest.raises(ScriptError, match="table expected"):
        lua("local f = ...; setmetatable(f, {})", host_function)


@pytest.mark.parametrize(
    "source",
    [
        "local f = ...; return rawget(f, '__globals__')",
        "local f = ...; rawset(f, 'x', 1)",
        "local f = ...; return rawlen(f)",
        "local f = ...; for k, v in pairs(f) do end",
        "local f = ...; return next(f)",
        "local f = ...; for i, v in ipairs(f) do end",
        "local f = ...; return #f",
    ],
)
def test_raw_access_and_iteration_fail(lua: Run, source: str) -> None:
    with pytest.raises(ScriptError) as caught:
        lua(source, host_function)
    message = str(caught.value)
    assert (
        "table expected" in message
        or "table or string expected" in message
        or "attempt to get length" in message
        or DENIED in message
    ), message


def test_tostring_and_calling_are_allowed(lua: Run) -> None:
    calls.clear()
    text, doubled = lua("local f = ...; return tostring(f), f(21)", host_function)
    assert text.startswith("<function host_function at 0x")
    assert doubled == 42
    assert calls == ["called"]


def test_metamethods_of_lupas_metatable_cannot_be_called(lua: Run) -> None:
    # Even a script that guesses lupa's metamethod names gets nothing.
    with pytest.raises(ScriptError, match="attempt to call a nil value"):
        lua("local f = ...; getmetatable(f).__gc(f)", host_function)


def test_error_object_of_a_python_exception_is_opaque(lua: Run) -> None:
    def failing() -> None:
        raise ValueError("host said no")

    ok, kind, text = lua(
        "local f = ...; local ok, e = pcall(f); return ok, type(e), tostring(e)", failing
    )
    assert (ok, kind, text) == (False, "userdata", "host said no")
    for attribute in ("__traceback__", "__class__", "args", "with_traceback"):
        with pytest.raises(ScriptError, match=DENIED):
            lua(f"local f = ...; local ok, e = pcall(f); return e.{attribute}", failing)
    with pytest.raises(ScriptError, match=r"not callable|attempt to call"):
        lua("local f = ...; local ok, e = pcall(f); return e()", failing)


def test_python_object_returned_by_a_host_function_is_opaque(lua: Run) -> None:
    # A careless host function that returns a raw dict: lupa indexes objects
    # with __getitem__ by item, bypassing an attribute filter. The script may
    # hold the object, but neither read nor change it.
    data = {"secret": 1}

    def leak() -> dict[str, int]:
        return data

    with pytest.raises(ScriptError, match=DENIED):
        lua("local f = ...; return f().secret", leak)
    with pytest.raises(ScriptError, match=DENIED):
        lua("local f = ...; return f()['secret']", leak)
    with pytest.raises(ScriptError, match=DENIED):
        lua("local f = ...; f().secret = 2", leak)
    with pytest.raises(ScriptError, match=DENIED):
        lua("local f = ...; return f().keys", leak)
    assert data == {"secret": 1}


def test_python_list_returned_by_a_host_function_is_opaque(lua: Run) -> None:
    items = [1, 2, 3]
    with pytest.raises(ScriptError, match=DENIED):
        lua("local f = ...; return f()[0]", lambda: items)
    with pytest.raises(ScriptError, match=DENIED):
        lua("local f = ...; f()[0] = 9", lambda: items)
    assert items == [1, 2, 3]
