"""SPEC §4b: nothing of Python shows to a script.

A walker visits every value reachable from the globals of a script's event
engine, its main engine (from ``on_start``) and a runner job, with the demo
world's game APIs registered, and the objects those APIs return. For each
function it checks ``type`` and ``tostring``, then calls it with bad
arguments: every error must be a Lua string free of Python reprs, type names,
addresses and tracebacks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from moonbus.lua.exposure import exposed_methods
from moonbus.lua.fastcall import native_available
from moonbus.lua.host_errors import MAX_MESSAGE, describe_host_error, scrub
from moonbus.runner import Runner
from moonbus.runtime import LogLine, Runtime
from moonbus.world import api as world_api
from moonbus.world.world import World
from tests.native_paths import both_paths

delivery_path = both_paths(native_available())


def _method_names() -> str:
    """Every method name a demo-world API object exposes, as a Lua list."""
    names: set[str] = set()
    for value in vars(world_api).values():
        if isinstance(value, type):
            names |= exposed_methods(value)
    return "local METHOD_NAMES = {" + ", ".join(f'"{n}"' for n in sorted(names)) + "}\n"


# Never called by the walker: they raise or yield the caller's own values.
WALKER = r"""
local SKIP = { error = true, assert = true, ["coroutine.yield"] = true, sleep = true,
               on_start = true }  -- on_start: the walker itself
local BAD_ARGS = {
  {}, { {} }, { 1, 2, 3 }, { "x", {}, true }, { {}, "x" }, { -1 }, { "x" },
  { 1e300 }, { "x", function() end }, { nil, {} },
}
local problems, seen, count = {}, {}, 0
local function problem(text) problems[#problems + 1] = text end
local function pythonic(text)
  for _, bad in ipairs({ "<class", "Traceback", "object at", "bound method", "_Lua",
                         "NoneType", "python", "Python", "positional argument", "<function",
                         "builtins" }) do
    if string.find(text, bad, 1, true) then return bad end
  end
  return nil
end

local walk
local function check_function(path, f, owner)
  count = count + 1
  local shown = tostring(f)
  if type(f) ~= "function" or not string.find(shown, "^function: ") or pythonic(shown) then
    problem(path .. " shows as " .. type(f) .. " " .. shown)
  end
  if SKIP[path] then return end
  for _, args in ipairs(BAD_ARGS) do
    local results = table.pack(pcall(f, table.unpack(args, 1, 3)))
    if not results[1] then
      local err = results[2]
      if type(err) ~= "string" then
        problem(path .. " raised a " .. type(err) .. ": " .. tostring(err))
      elseif pythonic(err) then
        problem(path .. " error shows Python (" .. pythonic(err) .. "): " .. err)
      end
    else
      for i = 2, results.n do
        if type(results[i]) == "userdata" then
          problem(path .. " returned a userdata " .. tostring(results[i]))
        end
      end
    end
  end
  if owner ~= nil then  -- a method: call it properly too, and walk what it returns
    local ok, result = pcall(f, owner)
    if ok and type(result) == "table" then walk(path .. "()", result) end
  end
end

walk = function(path, value)
  local kind = type(value)
  if kind == "userdata" or kind == "thread" then
    problem(path .. " is a " .. kind .. ": " .. tostring(value))
  elseif kind == "string" and pythonic(value) then
    problem(path .. " = " .. value)
  elseif kind == "table" and not seen[value] then
    seen[value] = true
    local shown = tostring(value)
    if pythonic(shown) then problem(path .. " shows as " .. shown) end
    local mt = getmetatable(value)
    if type(mt) == "string" and pythonic(mt) then problem(path .. " metatable " .. mt) end
    local keys = {}
    for k in pairs(value) do  -- of a list (entities found...), two items are enough
      if type(k) ~= "number" or k <= 2 then keys[#keys + 1] = k end
    end
    local index = type(mt) == "table" and rawget(mt, "__index") or nil
    for _, k in ipairs(keys) do
      local v = value[k]
      local sub = path == "" and tostring(k) or path .. "." .. tostring(k)
      if type(v) == "function" then check_function(sub, v) else walk(sub, v) end
    end
    -- Proxies of host API objects: methods come from their class (sealed metatable).
    for _, name in ipairs(METHOD_NAMES) do
      local ok, m = pcall(function() return value[name] end)
      if ok and type(m) == "function" and rawget(value, name) == nil then
        check_function(path .. ":" .. name, m, value)
      end
    end
    if type(index) == "table" then walk(path .. "<index>", index) end
  elseif kind == "function" then
    check_function(path, value)
  end
end
"""

SCRIPT = _method_names() + WALKER + r"""
local function report(where)
  seen, problems, count = {}, {}, 0
  walk("", _ENV)
  check_function("time", time)
  logger.info("WALKED " .. where .. " " .. count)
  for _, p in ipairs(problems) do logger.info("PROBLEM " .. p) end
end
if sleep ~= nil and not pcall(sleep, 0) then
  -- top level: both engines run it; the main engine walks again in on_start
  report("load")
end
function on_start() report("on_start") end
"""


@pytest.fixture
def world_runtime() -> Iterator[Runtime]:
    rt = Runtime(threaded=False)
    world = World(seed=1, emit=rt.bus.emit)
    rt.set_tick(world.tick)
    for name, api in world.apis().items():
        rt.register_api(name, api)
    try:
        yield rt
    finally:
        rt.close()


def test_every_function_in_both_engines_is_plain_lua(world_runtime: Runtime,
                                                      tmp_path: Path) -> None:
    logs: list[LogLine] = []
    world_runtime.add_log_sink(logs.append)
    path = tmp_path / "walker.lua"
    path.write_text(SCRIPT, encoding="utf-8")
    host = world_runtime.load(path)
    host.start()
    for _ in range(20):
        world_runtime.run_due(world_runtime.scheduler.clock() + 1.0)
    walked = {(line.engine, line.msg.split()[1]): int(line.msg.split()[2])
              for line in logs if line.msg.startswith("WALKED")}
    assert set(walked) >= {("event", "load"), ("main", "on_start")}, walked
    assert min(walked.values()) > 100  # the standard library, the script library, the APIs
    problems = [f"{line.engine}: {line.msg}" for line in logs if line.msg.startswith("PROBLEM")]
    assert problems == []
    assert host.status == "running", host.errors


def test_a_runner_job_sees_nothing_of_python() -> None:
    with Runner(workers=1) as runner:
        source = ("local METHOD_NAMES = {}\n" + WALKER
                  + 'walk("", _ENV) return count, table.concat(problems, "\\n")')
        count, problems = runner.submit(source, timeout=10.0).result(timeout=30.0)
    assert count > 50
    assert problems == ""


def test_time_is_a_lua_function(world_runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "t.lua"
    path.write_text(
        'shared:string("t"):set(type(time) .. " " .. tostring(time))', encoding="utf-8"
    )
    host = world_runtime.load(path)
    host.start()
    shown = host.shared.string("t").get()
    assert re.fullmatch(r"function function: 0x[0-9a-f]+", shown), shown


def test_host_api_errors_are_strings_with_the_script_position(world_runtime: Runtime,
                                                              tmp_path: Path) -> None:
    path = tmp_path / "api.lua"
    path.write_text(
        "local ok, e = pcall(skills.level, skills, {})\n"
        'shared:string("type"):set(type(e))\n'
        'shared:string("e"):set(e)\n',
        encoding="utf-8",
    )
    host = world_runtime.load(path)
    host.start()
    assert host.shared.string("type").get() == "string"
    assert host.shared.string("e").get().startswith("api.lua:1: ")


# ------------------------------------------------------------- pure helpers
class _Thing:
    pass


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TypeError("MemoryInt.get() takes 1 positional argument but 3 were given"),
         "shared int get: wrong number of arguments"),
        (ValueError(f"bad value {_Thing()!r}"), "bad value a host value"),
        (ValueError(f"bad type {_Thing!r}"), "bad type a host type"),
        (ValueError("got _LuaTable"), "got table"),
        (ValueError("set needs an integer, got str 'x'"), "set needs an integer, got string 'x'"),
        (KeyError("gold"), "not found: gold"),
        (MemoryError(), "not enough memory"),
        (ValueError("x\nTraceback (most recent call last):\n  File ..."), "x"),
    ],
)
def test_describe_host_error(exc: BaseException, expected: str) -> None:
    assert describe_host_error(exc, "shared int get") == expected


def test_internal_errors_are_not_shown_and_tracebacks_are_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exc = _raised(AttributeError("'NoneType' object has no attribute 'x'"))
    assert exc.__traceback__ is not None
    text = describe_host_error(exc, "players:find")
    assert text == "players:find: internal error in the host (logged)"
    assert exc.__traceback__ is None
    assert "players:find" in caplog.text


def test_messages_are_capped() -> None:
    text = scrub("é" * 100_000)
    assert len(text.encode("utf-8")) <= MAX_MESSAGE + 20 and text.endswith("… [truncated]")
