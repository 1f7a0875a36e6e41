"""Host API method calls in C (``quick_invoke`` in ``_fastconvert.c``).

A proxy's method call is made in C when its arguments are nil, booleans or
numbers; its result is pushed in C when it is None, a bool, a 64-bit int, a
float, a short str or a list/dict the one-pass builder takes, and finished
in Python otherwise (errors included). Every case here runs the same script
with the C path and with ``Runtime(native=False)``: what the script reads,
what the method receives and how often it runs must be the same, and the
counters must show which way the C path went.
"""

from __future__ import annotations

import gc
import math
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from moonbus.host.context import HostSettings
from moonbus.lua.exposure import lua_api, lua_multi
from moonbus.lua.fastconvert import native_convert_available
from moonbus.lua.sandbox import SandboxFactory
from moonbus.runtime import Runtime

pytestmark = pytest.mark.skipif(
    not native_convert_available(), reason="C conversion not built (or MOONBUS_PURE_PYTHON)"
)

DUMP = """
local function dump(v)
  local t = type(v)
  if t == "number" then return math.type(v) .. ":" .. tostring(v) end
  if t ~= "table" then return t .. ":" .. tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = dump(k) .. "=" .. dump(v[k]) end
  local mt = getmetatable(v)
  return (mt and ("proxy<" .. tostring(mt) .. ">") or "") .. "{" .. table.concat(parts, ",") .. "}"
end
local function all(...)
  local parts = { "n=" .. select("#", ...) }
  for i = 1, select("#", ...) do parts[#parts + 1] = dump((select(i, ...))) end
  return table.concat(parts, " ")
end
"""


class Inner:
    """Not exposed: a result holding it is an error on both paths."""


@lua_api
class Item:
    def __init__(self, n: int) -> None:
        self._n = n

    def n(self) -> int:
        return self._n


class _Str(str):
    pass


RESULTS: dict[str, Any] = {
    "none": None, "true": True, "false": False, "zero": 0, "int": -42,
    "int_max": 2**63 - 1, "int_min": -(2**63), "big_int": 2**64, "float": 2.5,
    "integral_float": 3.0, "inf": math.inf, "nan": math.nan, "empty_str": "",
    "str": "héllo ✓", "str_256": "a" * 256, "str_257": "b" * 257, "nul_str": "a\x00b",
    "surrogate": "a\udcff", "str_subclass": _Str("sub"), "bytes": b"raw",
    "empty_list": [], "empty_dict": {}, "rows": [{"id": i, "name": f"n{i}", "hp": 1.5 * i,
                                                   "ok": i % 2 == 0} for i in range(5)],
    "holes": [1, None, 3], "number_keys": {1: "a", 3: "c"}, "tuple": (1, "two", 3.0),
    "nested": {"a": [1, {"b": [2, 3]}]}, "objects": [Item(1), Item(2)],
    "object": Item(7), "bad_inner": [Inner()], "list_with_big_int": [1, 2**70],
}


@lua_api
class Api:
    """Records every call (method, arguments, argument types) and answers from RESULTS."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], tuple[str, ...]]] = []

    def _record(self, name: str, args: tuple[Any, ...]) -> None:
        kinds = tuple(type(a).__name__ for a in args)
        self.calls.append((name, tuple(repr(a) for a in args), kinds))

    def get(self, key: str) -> Any:
        self._record("get", (key,))
        return RESULTS[key]

    def echo(self, *args: Any) -> Any:
        self._record("echo", args)
        return list(args)

    def fail(self, kind: int) -> Any:
        self._record("fail", (kind,))
        if kind == 1:
            raise ValueError("no such goblin")
        if kind == 2:
            raise KeyError("k")
        raise RuntimeError("host bug")

    @lua_multi
    def pair(self) -> tuple[int, str]:
        self._record("pair", ())
        return 1, "x"

    def plain_tuple(self) -> tuple[int, int]:
        self._record("plain_tuple", ())
        return (4, 5)

    def nothing(self) -> None:
        self._record("nothing", ())


@lua_api
class Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def put(self, text: str) -> None:
        self.lines.append(text)


SCRIPT = DUMP + """
local function try(f, ...)
  local r = table.pack(pcall(f, ...))
  if r[1] then return all(table.unpack(r, 2, r.n)) end
  return "error: " .. tostring(r[2])
end
function on_start()
  for _, key in ipairs(keys) do
    out:put(key .. " -> " .. try(api.get, api, key))
  end
  out:put("echo -> " .. try(api.echo, api))
  out:put("echo -> " .. try(api.echo, api, nil, true, false, 0, -1, 2.0, 0.5, 1e300,
                           math.maxinteger, math.mininteger, 1/0, -1/0))
  out:put("echo 8 -> " .. try(api.echo, api, 1, 2, 3, 4, 5, 6, 7, 8))
  out:put("echo 9 -> " .. try(api.echo, api, 1, 2, 3, 4, 5, 6, 7, 8, 9))
  out:put("echo str -> " .. try(api.echo, api, "s", 1))
  out:put("echo table -> " .. try(api.echo, api, { 1, 2 }))
  out:put("echo nan -> " .. try(function() local r = api:echo(0/0); return r[1] ~= r[1] end))
  for kind = 1, 3 do
    out:put("fail -> " .. try(api.fail, api, kind))
  end
  out:put("pair -> " .. try(api.pair, api))
  out:put("plain_tuple -> " .. try(api.plain_tuple, api))
  out:put("nothing -> " .. try(api.nothing, api))
  out:put("dot call -> " .. try(api.get, "rows"))
  out:put("wrong self -> " .. try(api.get, out, "rows"))
  local obj = api:get("object")
  out:put("object method -> " .. try(obj.n, obj))
end
"""


def _run(native: bool, settings: HostSettings | None = None) -> tuple[list[str], Api, Any]:
    api, out = Api(), Out()
    with Runtime(threaded=False, clock=lambda: 0.0, native=native, settings=settings) as rt:
        rt.register_api("api", api)
        rt.register_api("out", out)
        keys = "keys = {" + ",".join(f'"{k}"' for k in RESULTS) + "}\n"
        host = rt.load("invoke.lua", text=keys + SCRIPT)
        host.start()
        rt.run_due(0.0)
        assert host.status == "running", host.errors
        conv = host._main.engine.converter.native if host._main is not None else None
        counters = None if conv is None else (
            conv.invokes_in_c, conv.invokes_finished_in_python, conv.invokes_fallback)
    return out.lines, api, counters


@pytest.fixture(scope="module")
def both() -> Iterator[tuple[tuple[list[str], Api, Any], tuple[list[str], Api, Any]]]:
    yield _run(True), _run(False)


def test_script_reads_the_same_on_both_paths(both: Any) -> None:
    (fast, _, counters), (slow, _, none) = both
    assert none is None and counters is not None
    assert fast == slow
    lines = dict(line.split(" -> ", 1) for line in fast if not line.startswith(("echo", "fail")))
    # spot checks that the comparison compares something
    assert lines["none"] == "n=1 nil:nil"
    assert lines["int_max"] == "n=1 integer:9223372036854775807"
    assert lines["integral_float"] == "n=1 float:3.0"
    assert lines["str_257"] == "n=1 string:" + "b" * 257
    assert lines["big_int"].startswith("error: invoke.lua:")
    assert lines["surrogate"].startswith("error: ")
    assert lines["pair"] == "n=2 integer:1 string:x"
    assert lines["wrong self"] == "error: 'get' must be called as a method (obj:get(...))"
    assert lines["object method"] == "n=1 integer:7"
    assert "fail -> error: invoke.lua:" in "\n".join(fast)


def test_methods_get_the_same_arguments_and_run_once(both: Any) -> None:
    (_, fast_api, _), (_, slow_api, _) = both
    assert fast_api.calls == slow_api.calls
    echo = [c for c in fast_api.calls if c[0] == "echo"][1]
    assert echo[2] == ("NoneType", "bool", "bool", "int", "int", "float", "float", "float",
                       "int", "int", "float", "float")
    # each key was asked for exactly once, whatever path its result took
    gets = [c[1][0] for c in fast_api.calls if c[0] == "get"]
    assert sorted(set(gets)) == sorted(gets) or gets.count("'rows'") == 1


def test_counters_show_the_way_each_call_went(both: Any) -> None:
    (_, _, counters), _ = both
    in_c, in_python, fallback = counters
    # Finished in Python (17): big_int, surrogate, str_257, str_subclass, bytes,
    # number_keys, tuple, objects, object (twice), bad_inner, list_with_big_int,
    # the three failures, pair, plain_tuple. Handed over before the call (3):
    # 12 arguments, 9 arguments, a table argument. Everything else in C,
    # out:put's string arguments included.
    assert (in_python, fallback) == (17, 3)
    assert in_c == 73


def test_a_plain_call_is_taken_by_c() -> None:
    factory = SandboxFactory()
    try:
        engine = factory.create("plain")
        env = engine.new_env()
        with engine.lock:
            env["api"] = engine.converter.to_lua(Api())
        code = engine.compile("for i = 1, 50 do api:get('rows') end; return api:get('int')",
                              "plain.lua", env)
        native = engine.converter.native
        before = native.invokes_in_c
        assert engine.call(code, limit=5.0) == (-42,)
        assert native.invokes_in_c - before == 51
        assert native.invokes_finished_in_python == 0 and native.invokes_fallback == 0
        engine.close()
    finally:
        factory.close()


def test_timed_host_calls_keep_the_python_path() -> None:
    """Deferred delivery on an event thread times host calls from event handlers
    (boundary.detached's enter/leave): those engines do not get the C call."""
    api = Api()
    with Runtime(event_delivery="deferred") as rt:
        rt.register_api("api", api)
        host = rt.load("timed.lua", text="events:on('go', function() api:get('int') end)")
        host.start()
        rt.bus.emit("go", {})
        deadline = time.monotonic() + 10.0
        while not api.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert host.errors == []
        assert [c[0] for c in api.calls] == ["get"]
        native = host._event.engine.converter.native
        assert native is not None and native.invokes_in_c == 0


def test_a_huge_result_under_a_memory_limit_is_an_error_on_both_paths() -> None:
    settings = HostSettings()
    settings.memory_limit = 4 * 1024 * 1024
    RESULTS["huge"] = ["x" * 100_000 + str(i) for i in range(100)]
    try:
        fast, _, _ = _run(True, settings)
        slow, _, _ = _run(False, settings)
    finally:
        del RESULTS["huge"]
    line = next(x for x in fast if x.startswith("huge -> "))
    other = next(x for x in slow if x.startswith("huge -> "))
    # the same error; the free bytes it names differ (C tried, Python refused first)
    assert line.split(" bytes, ")[0] == other.split(" bytes, ")[0]
    assert "memory limit (memory_limit)" in line and "Api:get()" in line


def test_a_closed_engine_frees_its_runtime() -> None:
    """The C call's closure holds the converter through lupa: closing the engine
    must still free the Lua state, and with it the host object only it holds."""
    factory = SandboxFactory()
    try:
        engine = factory.create("freed")
        env = engine.new_env()
        api = Api()
        with engine.lock:
            env["api"] = engine.converter.to_lua(api)
        assert engine.call(engine.compile("return api:get('int')", "f.lua", env),
                           limit=5.0) == (-42,)
        assert engine.converter.native.invokes_in_c == 1
        held = weakref.ref(api)
        del api, env
        engine.close()
        del engine
        gc.collect()
        assert held() is None
    finally:
        factory.close()


def test_the_str_room_check_uses_lua_rooms_figures() -> None:
    """quick_invoke checks a short str result against the free memory as
    LuaRoom.admit does, with copies of its two constants."""
    from moonbus.lua import lua_room
    from moonbus.lua.fastconvert import FAST_CONVERT
    from moonbus.native import load_fast_path

    module = load_fast_path(FAST_CONVERT).module
    assert module is not None
    assert module.ROOM_MARGIN == lua_room.MARGIN
    assert module.ROOM_STRING == lua_room._STRING
