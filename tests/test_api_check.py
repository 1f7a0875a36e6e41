"""``Runtime.register_api`` refuses, at once, what a script could not use (SPEC §10).

Each refusal is a ``ConfigError`` that names the global (and the path inside
it) and says what to do, instead of a conversion error later, once per
script, that names nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moonbus.api_check import LUA_STANDARD_GLOBALS, check_api, check_event_types
from moonbus.errors import ConfigError
from moonbus.lua.exposure import lua_api
from moonbus.runtime import Runtime


@lua_api
class Board:
    def size(self) -> int:
        return 8


class Undecorated:
    def size(self) -> int:
        return 8


@lua_api
class NoMethods:
    def _hidden(self) -> int:
        return 1


@pytest.fixture
def rt() -> Iterator[Runtime]:
    runtime = Runtime(threaded=False, clock=lambda: 0.0)
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.mark.parametrize("name", sorted(LUA_STANDARD_GLOBALS))
def test_a_name_that_shadows_the_standard_library_is_refused(rt: Runtime, name: str) -> None:
    with pytest.raises(ConfigError,
                       match=rf"'{name}'.*shadow Lua's standard library.*another name"):
        rt.register_api(name, Board())


@pytest.mark.parametrize("name", ["events", "shared", "logger", "stats", "options", "sleep",
                                  "time"])
def test_a_name_moonbus_already_gives_scripts_is_refused(rt: Runtime, name: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{name}'.*moonbus already gives every script"):
        rt.register_api(name, Board())


@pytest.mark.parametrize("name", ["2d", "my-api", "board game", "", "été", "a.b"])
def test_a_name_that_is_not_a_lua_name_is_refused(rt: Runtime, name: str) -> None:
    with pytest.raises(ConfigError, match=r"a Lua name is ASCII letters, digits and '_'"):
        rt.register_api(name, Board())


@pytest.mark.parametrize("name", ["end", "local", "function", "nil", "goto"])
def test_a_lua_keyword_is_refused(rt: Runtime, name: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{name}': it is a Lua keyword"):
        rt.register_api(name, Board())


def test_a_name_that_is_not_a_string_is_refused(rt: Runtime) -> None:
    with pytest.raises(ConfigError, match="must be a string, got int"):
        rt.register_api(3, Board())  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "what", "advice"), [
    (Undecorated(), "a Python Undecorated", "decorate class Undecorated with @lua_api"),
    (lambda: 1, "a Python function", "method of a @lua_api class"),
    (len, "a Python builtin_function_or_method", "method of a @lua_api class"),
    (Board().size, "a Python method", "method of a @lua_api class"),
    (Board, "the class Board", r"register an instance \(e.g. Board\(...\)\)"),
    (Undecorated, "the class Undecorated", "decorate the class with @lua_api"),
    (math, "the module math", "through a @lua_api class"),
    (NoMethods(), "a NoMethods .a @lua_api class without public methods.",
     "at least one public method"),
    (None, "None", "register a value"),
    (2**70, "the integer 1180591620717411303424", "Lua integers are 64-bit"),
    (object(), "a Python object", "decorate class object"),
])
def test_a_value_lua_cannot_use_is_refused_naming_the_global(
    rt: Runtime, value: Any, what: str, advice: str
) -> None:
    with pytest.raises(ConfigError) as info:
        rt.register_api("board", value)
    message = str(info.value)
    assert message.startswith("cannot register Lua global 'board': ")
    assert re_search(what, message) and re_search(advice, message), message


def re_search(pattern: str, text: str) -> bool:
    return re.search(pattern, text) is not None


@pytest.mark.parametrize(("value", "path"), [
    ({"size": 8, "on_click": print}, "board.on_click"),
    ({"rows": [[1, 2], [3, Undecorated()]]}, r"board.rows\[2\]\[2\]"),
    ({"cells": {(1, 2): "wall"}}, r"board.cells\[\(1, 2\)\]"),
    ({"by id": {7: object()}}, r"board\['by id'\]\[7\]"),
])
def test_a_bad_part_inside_plain_data_is_named_by_its_path(
    rt: Runtime, value: Any, path: str
) -> None:
    with pytest.raises(ConfigError, match=rf"cannot register Lua global 'board': .* at {path} "):
        rt.register_api("board", value)


def test_cycles_and_deep_nesting_are_refused(rt: Runtime) -> None:
    looped: dict[str, Any] = {"name": "x"}
    looped["self"] = looped
    with pytest.raises(ConfigError, match=r"a cycle .* at board.self"):
        rt.register_api("board", looped)
    deep: list[Any] = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ConfigError, match="nested deeper than 64 levels"):
        rt.register_api("board", deep)
    shared = [1, 2]
    rt.register_api("board", {"a": shared, "b": shared})  # the same list twice is no cycle


def test_good_apis_are_accepted_and_reach_scripts(rt: Runtime, tmp_path: Path) -> None:
    rt.register_api("board", Board())
    rt.register_api("config", {"size": 8, "names": ["a", "b"], "ratio": 0.5, "on": True,
                               "nested": {"pieces": [Board()]}, 3: "three"})
    rt.register_api("VERSION", "1.2")
    script = tmp_path / "s.lua"
    script.write_text(
        "function on_start() stats:set('n', board:size() + config.size"
        " + config.nested.pieces[1]:size()) stats:set('v', VERSION) end\n", "utf-8")
    host = rt.load(script)
    host.start()
    rt.run_due(0.0)
    assert host.stats == {"n": 24, "v": "1.2"}


def test_check_api_is_usable_on_its_own() -> None:
    assert check_api("board", Board()) == "board"
    with pytest.raises(ConfigError, match="'string'"):
        check_api("string", {"x": 1})


def test_event_type_tables_are_checked() -> None:
    assert check_event_types({"GEM": "gem"}) == {"GEM": "gem"}
    with pytest.raises(ConfigError, match="EventType key 'a-b' is not a Lua name"):
        check_event_types({"a-b": "x"})
    with pytest.raises(ConfigError, match=r"EventType\.GEM must be a non-empty event name"):
        check_event_types({"GEM": ""})
