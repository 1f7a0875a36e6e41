"""Proxies for @lua_api objects: exposed methods only, and no way back to Python."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from moonbus.errors import ScriptError
from moonbus.lua.engine import LuaEngine
from moonbus.lua.exposure import lua_api

Run = Callable[..., tuple[Any, ...]]


@lua_api
class Player:
    species = "human"  # a public class attribute, not a method: not exposed

    def __init__(self) -> None:
        self.token = "s3cret"
        self.calls: list[str] = []

    def name(self) -> str:
        self.calls.append("name")
        return "bob"

    def greet(self, other: str) -> str:
        return f"hi {other}"

    def friend(self) -> Player:
        return Player()

    def raw(self) -> object:
        return object()

    def _hidden(self) -> str:
        return "hidden"


@lua_api
class Bank:
    """Its `name` is a public attribute holding a callable: never exposed."""

    def __init__(self) -> None:
        self.robbed = False

        def name() -> str:
            self.robbed = True
            return "stolen"

        self.name = name

    def balance(self) -> int:
        return 5


@pytest.fixture
def player() -> Player:
    return Player()


def proxy(engine: LuaEngine, obj: object) -> Any:
    return engine.converter.to_lua(obj)


def test_exposed_methods_are_callable(engine: LuaEngine, lua: Run, player: Player) -> None:
    assert lua("local p = ...; return p:name(), p:greet('ann')", proxy(engine, player)) == (
        "bob",
        "hi ann",
    )
    assert player.calls == ["name"]


@pytest.mark.parametrize(
    "field",
    [
        "_hidden",
        "token",
        "calls",
        "species",
        "__class__",
        "__dict__",
        "__init__",
        "__module__",
        "__globals__",
        "__getattribute__",
        "__reduce__",
        "__weakref__",
        "__index",
        "__metatable",
    ],
)
def test_everything_else_is_absent(engine: LuaEngine, lua: Run, player: Player, field: str) -> None:
    assert lua(f"local p = ...; return p.{field}, rawget(p, '{field}')", proxy(engine, player)) == (
        None,
        None,
    )


def test_metatable_is_sealed(engine: LuaEngine, lua: Run, player: Player) -> None:
    assert lua("return getmetatable(...)", proxy(engine, player)) == ("Player",)
    with pytest.raises(ScriptError, match="cannot change a protected metatable"):
        lua("setmetatable(..., {})", proxy(engine, player))


def test_proxy_is_an_empty_table(engine: LuaEngine, lua: Run, player: Player) -> None:
    assert lua(
        "local p = ...; local n = 0 for k in pairs(p) do n = n + 1 end return n, next(p), #p",
        proxy(engine, player),
    ) == (0, None, 0)


def test_tostring_and_equality(engine: LuaEngine, lua: Run, player: Player) -> None:
    assert lua(
        "local a, b, c = ...; return tostring(a), a == b, a == c",
        proxy(engine, player),
        proxy(engine, player),
        proxy(engine, Player()),
    ) == (
        "Player",
        True,
        False,
    )


def test_method_with_fake_self_errors_cleanly(engine: LuaEngine, lua: Run, player: Player) -> None:
    for fake in ("{}", "nil", "42", "'bob'", "setmetatable({}, {__index = p})"):
        with pytest.raises(ScriptError, match=r"'name' must be called as a method \(obj:name"):
            lua(f"local p = ...; local fake = {fake}; return p.name(fake)", proxy(engine, player))
    assert player.calls == []


def test_method_with_another_class_as_self_is_refused(engine: LuaEngine, lua: Run) -> None:
    bank = Bank()
    with pytest.raises(ScriptError, match="must be called as a method"):
        lua("local p, b = ...; return p.name(b)", proxy(engine, Player()), proxy(engine, bank))
    assert bank.robbed is False


def test_method_of_one_proxy_works_on_another_of_the_same_class(
    engine: LuaEngine, lua: Run
) -> None:
    first, second = Player(), Player()
    assert lua(
        "local a, b = ...; return a.name(b)", proxy(engine, first), proxy(engine, second)
    ) == ("bob",)
    assert (first.calls, second.calls) == ([], ["name"])


def test_returned_api_objects_become_proxies(engine: LuaEngine, lua: Run, player: Player) -> None:
    assert lua(
        "local f = (...):friend(); return getmetatable(f), f:name(), f.token", proxy(engine, player)
    ) == ("Player", "bob", None)


def test_returned_plain_python_objects_are_refused(
    engine: LuaEngine, lua: Run, player: Player
) -> None:
    with pytest.raises(ScriptError, match="cannot be passed to Lua"):
        lua("return (...):raw()", proxy(engine, player))


def test_no_python_object_hides_in_a_proxy(engine: LuaEngine, lua: Run, player: Player) -> None:
    # Walk everything reachable from the proxy (keys, values, metatable, the
    # methods' own results): no userdata, i.e. no wrapped Python object.
    found = lua(
        """
        local p = ...
        local seen, kinds = {}, {}
        local function walk(v)
          if v == nil or seen[v] then return end
          seen[v] = true
          kinds[#kinds + 1] = type(v)
          if type(v) == "table" then
            for k, x in pairs(v) do walk(k) walk(x) end
            walk(getmetatable(v))
          end
        end
        walk(p)
        walk(p.name) walk(p.greet) walk(p.friend)
        walk(p:friend())
        return table.concat(kinds, " ")
    """,
        proxy(engine, player),
    )[0]
    assert "userdata" not in found.split()
    assert "function" in found.split()


def test_proxy_keeps_working_after_rawset(engine: LuaEngine, lua: Run, player: Player) -> None:
    # A script may shadow a method on its own proxy; that changes nothing for
    # other proxies and does not reach the Python object.
    p = proxy(engine, player)
    assert lua(
        "local p = ...; rawset(p, 'name', function() return 'x' end) return p:name()", p
    ) == ("x",)
    assert lua("local p = ...; return p:name()", proxy(engine, player)) == ("bob",)
    assert player.calls == ["name"]
