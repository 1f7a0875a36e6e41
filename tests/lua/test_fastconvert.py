"""Python -> Lua conversion: the C path (``moonbus.lua.fastconvert``) and the
generic Python path give the same tables and the same errors.

Every case is converted by one engine's converter twice, once with its C
path and once with it switched off, and each result is read back by the same
Lua dump (keys sorted, integer and float kept apart, holes visible, proxies
shown with their class and a method call). Cases the C path must take are
checked to be taken by it, and cases it must leave to the generic path are
checked to be left.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import pytest

from moonbus.host.context import HostSettings
from moonbus.lua.engine import LuaEngine
from moonbus.lua.exposure import lua_api
from moonbus.lua.fastconvert import native_convert_available
from moonbus.lua.lua_room import LuaValueTooLarge
from moonbus.lua.sandbox import SandboxFactory
from moonbus.runtime import Runtime

pytestmark = pytest.mark.skipif(
    not native_convert_available(), reason="C conversion not built (or MOONBUS_PURE_PYTHON)"
)

DUMP = """
local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "boolean" then return (not a) and b end
  return a < b
end
local function dump(v)
  local t = type(v)
  if t == "number" then return math.type(v) .. ":" .. tostring(v) end
  if t ~= "table" then return t .. ":" .. tostring(v) end
  local mt = getmetatable(v)
  if mt ~= nil then return "proxy<" .. tostring(mt) .. ">:" .. v:label() end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, key_order)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = dump(k) .. "=" .. dump(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}#" .. #v
end
return dump(...)
"""


@lua_api
class Entity:
    def __init__(self, label: str) -> None:
        self._label = label

    def label(self) -> str:
        return self._label


@lua_api
class Other(Entity):
    pass


def _nested(levels: int) -> Any:
    value: Any = {"leaf": 1}
    for i in range(levels - 1):
        value = [value, i] if i % 2 else {"down": value, "i": i}
    return value


ROWS = [{"id": i, "name": f"npc{i}", "x": i * 3, "y": -i, "hp": 1.5 * i, "alive": i % 2 == 0}
        for i in range(30)]
BOB, ANN = Entity("bob"), Other("ann")

# (name, value): the C path takes these (once their @lua_api classes were seen)
TAKEN: list[tuple[str, Any]] = [
    ("empty list", []),
    ("empty dict", {}),
    ("tuple", (1, 2, 3)),
    ("scalars", [1, 2.5, "x", True, False, 0.0, -0.0, math.inf, -7]),
    ("holes", [1, None, 3, None]),
    ("holes inside", [[None, None, 1], [1, None, None, 4, None], (None,)]),
    ("number keys with gaps", {1: "a", 3: "c", 4: "d", 8: "h"}),
    ("none values", {"a": None, "b": 1}),
    ("key kinds", {3: "a", 2.5: "b", True: "c", "s": "d", 4.0: "e", -1: "f", False: "g"}),
    ("int range", [-(2**63), 2**63 - 1, 0]),
    ("unicode", ["héllo ✓", "a\x00b", "", "x" * 10_000]),
    ("unicode keys", {"ключ": 1, "": 2, "a\x00": 3}),
    ("entity rows", ROWS),
    ("nested", {"a": [1, {"b": (2, [3, {"c": 4}])}], "d": {}}),
    ("deepest taken", _nested(8)),
    ("same list twice", [[1, 2]] * 3),
    ("objects", [BOB, ANN, BOB]),
    ("objects in dicts", [{"who": BOB, "hp": 3}, {"who": ANN, "items": [ANN, 1]}]),
    ("many keys", {f"k{i}": i for i in range(200)}),
    ("keys repeated", [{"k": 1, "v": "a"}, {"v": "b", "k": 2}, {"k": 3}]),
]
# The generic path handles these (results or errors), the C path leaves them
LEFT: list[tuple[str, Any]] = [
    ("deeper than the C path", _nested(12)),
    ("dict subclass", OrderedDict(a=1)),
    ("list in an OrderedDict", [OrderedDict(a=[1])]),
    ("int subclass", [True, 1, __import__("enum").IntEnum("E", "A").A]),
    ("more values than MAX_OPS", list(range(70_000))),
]
CYCLE: list[Any] = []
CYCLE.append(CYCLE)
BAD: list[tuple[str, Any]] = [
    ("int beyond 64 bits", [1, 2**64]),
    ("negative int beyond 64 bits", {"x": -(2**63) - 1}),
    ("big int key", {2**70: 1}),
    ("None key", [{None: 1}]),
    ("NaN key", {math.nan: 1}),
    ("tuple key", {(1, 2): 1}),
    ("raw object", [object()]),
    ("bytes", {"b": b"x"}),
    ("function", [len]),
    ("lone surrogate", ["a\udcff"]),
    ("cyclic", CYCLE),
    ("too deep", _nested(70)),
]


@pytest.fixture(scope="module")
def factory() -> Iterator[SandboxFactory]:
    with SandboxFactory() as made:
        yield made


@pytest.fixture
def engine(factory: SandboxFactory) -> Iterator[LuaEngine]:
    made = factory.create("convert")
    assert made.converter.native is not None
    yield made
    made.close()


def _dump(engine: LuaEngine, table: Any) -> str:
    env = engine.new_env()
    result: str = engine.call(engine.compile(DUMP, "dump.lua", env), table, limit=10.0)[0]
    return result


def _both(engine: LuaEngine, value: Any) -> tuple[str, str]:
    conv = engine.converter
    native = conv.native
    with engine.lock:
        conv.native = None
        try:
            generic = _dump(engine, conv.to_lua(value))
        finally:
            conv.native = native
        fast = _dump(engine, conv.to_lua(value))
    return generic, fast


def _error(engine: LuaEngine, value: Any) -> tuple[type[BaseException], str]:
    with pytest.raises(Exception) as caught:
        engine.converter.to_lua(value)
    return type(caught.value), str(caught.value)


@pytest.mark.parametrize(("name", "value"), TAKEN, ids=[n for n, _ in TAKEN])
def test_taken_by_c_same_table(engine: LuaEngine, name: str, value: Any) -> None:
    generic, fast = _both(engine, value)  # the generic run also meets the classes
    assert fast == generic
    with engine.lock:
        assert engine.converter.native is not None
        assert engine.converter.native(value) is not None, "the C path should take it"


@pytest.mark.parametrize(("name", "value"), LEFT, ids=[n for n, _ in LEFT])
def test_left_to_generic_same_table(engine: LuaEngine, name: str, value: Any) -> None:
    with engine.lock:
        assert engine.converter.native is not None
        assert engine.converter.native(value) is None, "the C path should leave it"
    generic, fast = _both(engine, value)
    assert fast == generic


@pytest.mark.parametrize(("name", "value"), BAD, ids=[n for n, _ in BAD])
def test_bad_values_same_error(engine: LuaEngine, name: str, value: Any) -> None:
    conv = engine.converter
    with engine.lock:
        assert conv.native is not None and conv.native(value) is None
        fast = _error(engine, value)
        native, conv.native = conv.native, None
        try:
            generic = _error(engine, value)
        finally:
            conv.native = native
    assert fast == generic
    assert issubclass(fast[0], (TypeError, ValueError)), fast


def test_unseen_class_goes_generic_once(engine: LuaEngine) -> None:
    @lua_api
    class Fresh(Entity):
        pass

    value = [Fresh("new")]
    conv = engine.converter
    with engine.lock:
        assert conv.native is not None and conv.native(value) is None  # class not met yet
        first = _dump(engine, conv.to_lua(value))  # generic: makes its metatable
        assert conv.native(value) is not None
        assert _dump(engine, conv.to_lua(value)) == first == "{integer:1=proxy<Fresh>:new}#1"


def test_proxies_behave_like_generic_ones(engine: LuaEngine) -> None:
    conv = engine.converter
    check = """
    local t = ...
    local ok, err = pcall(t[1].label, t[2])
    return t[1] == t[3], t[1] == t[2], rawequal(t[1], t[3]), t[1]:label(), ok, err,
           getmetatable(t[2])
    """
    results = []
    for native in (False, True):
        with engine.lock:
            saved = conv.native
            conv.native = saved if native else None
            try:
                table = conv.to_lua([BOB, ANN, BOB])
            finally:
                conv.native = saved
            out = engine.call(engine.compile(check, "check.lua", engine.new_env()), table,
                              limit=5.0)
        results.append((*out[:4], out[4], str(out[5])[:60], out[6]))
    assert results[0] == results[1]
    assert results[1][:5] == (True, False, False, "bob", False)


def test_memory_limit_is_an_error_not_a_crash(factory: SandboxFactory) -> None:
    engine = factory.create("small", memory_limit=4 * 1024 * 1024)
    try:
        big = ["x" * 100_000 + str(i) for i in range(100)]  # ~10 MB of Lua strings
        with engine.lock:
            assert engine.converter.native is not None
            # The C path's Lua memory error (inside its lua_pcall) is reported
            # as the same refusal as the generic path's up-front check.
            with pytest.raises(LuaValueTooLarge, match=r"memory limit \(memory_limit\)"):
                engine.converter.to_lua(big)
        assert _dump(engine, engine.table([1, {"a": 2}])) == (
            "{integer:1=integer:1,integer:2={string:a=integer:2}#0}#2"
        )
    finally:
        engine.close()


def test_concurrent_mutation_of_returned_data_is_safe(engine: LuaEngine) -> None:
    """Strings the C path copies are held for the whole call: a host that hands
    out (and later changes) its own list cannot make it read freed memory."""
    shared = [{"name": "n" * 50 + str(i)} for i in range(200)]
    conv = engine.converter
    with engine.lock:
        for round_ in range(20):
            table = conv.to_lua(shared)
            for item in shared:
                item["name"] = f"changed{round_}" + "m" * 40
            assert table[1]["name"].startswith(("n", "changed"))


# ------------------------------------------------ through a script's host API
SCRIPT = """
local dump = (function()
""" + DUMP.replace("return dump(...)", "return dump") + """
end)()
function on_start()
  for i = 1, api:count() do
    local ok, value = pcall(api.get, api, i)
    out:put(ok and dump(value) or ("error: " .. tostring(value)))
  end
end
"""
SCRIPT_CASES = [v for name, v in TAKEN + LEFT + BAD if name != "more values than MAX_OPS"]


@lua_api
class Cases:
    def __init__(self, values: list[Any]) -> None:
        self._values = values

    def count(self) -> int:
        return len(self._values)

    def get(self, i: int) -> Any:
        return self._values[i - 1]


@lua_api
class Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def put(self, text: str) -> None:
        self.lines.append(text)


def _script_dumps(values: list[Any], mode: str, monkeypatch: pytest.MonkeyPatch,
                  settings: HostSettings | None = None) -> tuple[list[str], bool]:
    if mode == "MOONBUS_PURE_PYTHON":
        monkeypatch.setenv("MOONBUS_PURE_PYTHON", "1")
    out = Out()
    with Runtime(threaded=False, clock=lambda: 0.0, native=mode != "native=False",
                 settings=settings) as rt:
        rt.register_api("api", Cases(values))
        rt.register_api("out", out)
        host = rt.load("cases.lua", text=SCRIPT)
        host.start()
        rt.run_due(0.0)
        assert host.status == "running", host.errors
        native = host._main is not None and host._main.engine.converter.native is not None
    monkeypatch.delenv("MOONBUS_PURE_PYTHON", raising=False)
    return out.lines, native


def test_script_sees_the_same_on_every_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Host API results (the method-result path, LuaConverter._invoke) read the
    same with the C path, Runtime(native=False) and MOONBUS_PURE_PYTHON=1,
    errors included; each class is met twice so the C path takes its objects."""
    values = SCRIPT_CASES + SCRIPT_CASES
    reference, native = _script_dumps(values, "native=False", monkeypatch)
    assert not native
    assert len(reference) == len(values)
    assert any(line.startswith("error: ") for line in reference)
    for mode in ("MOONBUS_PURE_PYTHON", "native"):
        lines, native = _script_dumps(values, mode, monkeypatch)
        assert native == (mode == "native")
        assert lines == reference, mode


def test_script_memory_limit_is_an_error_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host API result past the Lua memory limit: the script gets an error naming
    the method and the limit, on both paths (the C path runs out inside its
    lua_pcall; the generic path is refused before lupa allocates: moonbus.lua.lua_room)."""
    settings = HostSettings()
    settings.memory_limit = 4 * 1024 * 1024
    big = ["x" * 100_000 + str(i) for i in range(100)]
    for mode in ("native", "native=False"):
        lines, native = _script_dumps([big, [1, {"a": 2}]], mode, monkeypatch, settings)
        assert native == (mode == "native")
        assert lines[0].startswith("error: ") and "Cases:get()" in lines[0], mode
        assert "memory limit (memory_limit)" in lines[0], mode
    assert lines[1] == "{integer:1=integer:1,integer:2={string:a=integer:2}#0}#2"
