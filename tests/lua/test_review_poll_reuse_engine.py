"""Review of the reused poll coroutine (tasks.lua's ``task_body``): what a
hostile poll can leave behind or provoke through ``start_task``."""

from __future__ import annotations

from moonbus.lua.engine import LuaEngine

MANY = """
local t = {}
for i = 1, 400000 do t[i] = 100 end
function poll() return table.unpack(t) end
function napper() sleep(5) return table.unpack(t) end
function plain() return 100 end
function starter() return false, table.unpack(t) end
"""


def _env(engine: LuaEngine) -> object:
    env = engine.new_env()
    env["sleep"] = engine.sleep_function
    engine.call(engine.compile(MANY, "many.lua", env), limit=5.0)
    return env


def test_a_poll_returning_many_values_returns(engine: LuaEngine) -> None:
    # Each varargs pass between the coroutine and the host copied all the
    # results: 400,000 of them overflowed the host thread's stack, an error
    # naming no script line ("?:-1: stack overflow"); the poll is its delay.
    env = _env(engine)
    for _ in range(2):  # the spare's first run, then its reuse
        task, outcome, value = engine.start_task(env, "poll", False, limit=5.0)
        assert (outcome, value[:1]) == ("done", (100,))
    task, outcome, value = engine.start_task(env, "napper", False, limit=5.0)
    assert (outcome, value) == ("sleep", 5) and task is not None
    outcome, value = engine.step(task, limit=5.0)
    assert (outcome, value[:1]) == ("done", (100,))
    assert engine.start_task(env, "plain", False, limit=5.0)[1:] == ("done", (100,))


def test_a_task_returning_many_values_returns(engine: LuaEngine) -> None:
    # new_task's coroutines (on_start, on_stop, deferred handlers) return
    # through the same varargs: on_start returning 600,000 values failed
    # the script with "?:-1: stack overflow"; the host reads the first.
    env = _env(engine)
    task = engine.new_task(env["starter"])
    assert engine.step(task, limit=5.0) == ("done", (False,))


KEEP = """
weak = setmetatable({}, {__mode = "k"})
local function make()
  local big = string.rep("x", 1000000)
  local f
  f = function() poll = nil local r = {#big} weak[r] = "result" return r end
  weak[f] = "function"
  return f
end
poll = make()
function alive()
  collectgarbage("collect")
  collectgarbage("collect")
  local out = {}
  for _, v in pairs(weak) do out[#out + 1] = v end
  table.sort(out)
  return table.concat(out, ",")
end
"""


def test_the_waiting_coroutine_keeps_no_poll_function_or_result(engine: LuaEngine) -> None:
    # The spare waits for the next poll; a poll that unset itself (and the
    # megabyte its closure holds) stayed alive in its stack for good.
    env = engine.new_env()
    engine.call(engine.compile(KEEP, "keep.lua", env), limit=5.0)
    assert engine.start_task(env, "poll", False, limit=5.0)[1] == "done"
    assert engine.start_task(env, "poll", False, limit=5.0) == (None, "none", None)
    assert engine.call(env["alive"], limit=5.0) == ("",)
