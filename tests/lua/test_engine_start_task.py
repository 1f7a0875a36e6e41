"""``LuaEngine.start_task``: look up a lifecycle function and start it in one
guarded call (the poll hot path), with the same limits as ``step``; and the
watchdog that lingers before it sleeps."""

from __future__ import annotations

import time

import pytest

from moonbus.errors import ScriptError, ScriptTimeout
from moonbus.lua.engine import LuaEngine
from moonbus.lua.watchdog import Watchdog

SCRIPT = """
calls = 0
function poll(n) calls = calls + 1 return n or 100 end
function napper() sleep(5) return "woke" end
function broken() local t = nil return t.x end
function spin() while true do end end
local t = {}
function t:poll() return self == t end
return t
"""


def _load(engine: LuaEngine) -> tuple[object, object]:
    env = engine.new_env()
    env["sleep"] = engine.sleep_function
    chunk = engine.compile(SCRIPT, "s.lua", env)
    (table,) = engine.call(chunk, limit=1.0)
    return env, table


def test_done_none_and_method(engine: LuaEngine) -> None:
    env, table = _load(engine)
    task, outcome, value = engine.start_task(env, "poll", False, limit=1.0)
    assert (outcome, value) == ("done", (100,)) and task is not None
    assert engine.start_task(env, "missing", False, limit=1.0) == (None, "none", None)
    assert engine.start_task(env, "calls", False, limit=1.0) == (None, "none", None)
    assert engine.start_task(table, "poll", True, limit=1.0)[1:] == ("done", (True,))
    for _ in range(50):  # tasks are released as they finish: no growth, no error
        assert engine.start_task(env, "poll", False, limit=1.0)[1] == "done"
    assert engine.call(engine.compile("return calls", "c.lua", env), limit=1.0) == (51,)
    assert len(engine._task_threads) <= 3  # the spare, the last one, one being released


def test_a_sleeping_task_is_stepped_on(engine: LuaEngine) -> None:
    env, _ = _load(engine)
    task, outcome, value = engine.start_task(env, "napper", False, limit=1.0)
    assert (outcome, value) == ("sleep", 5) and task is not None
    # A second start while the first sleeps gets a task of its own.
    other, outcome2, _ = engine.start_task(env, "poll", False, limit=1.0)
    assert outcome2 == "done" and other != task
    assert engine.step(task, limit=1.0) == ("done", ("woke",))


def test_errors_name_the_script_line(engine: LuaEngine) -> None:
    env, _ = _load(engine)
    with pytest.raises(ScriptError) as caught:
        engine.start_task(env, "broken", False, limit=1.0)
    assert "s.lua:5:" in str(caught.value)
    assert engine.start_task(env, "poll", False, limit=1.0)[1] == "done"  # still healthy


def test_a_loop_is_aborted_and_the_engine_goes_on(engine: LuaEngine) -> None:
    env, _ = _load(engine)
    started = time.monotonic()
    with pytest.raises(ScriptTimeout):
        engine.start_task(env, "spin", False, limit=0.1)
    assert time.monotonic() - started < 5.0
    assert engine.start_task(env, "poll", False, limit=1.0)[1:] == ("done", (100,))


def test_a_hostile_index_is_cut_by_the_limit(engine: LuaEngine) -> None:
    env = engine.new_env()
    chunk = engine.compile(
        "return setmetatable({}, {__index = function() while true do end end})",
        "h.lua", env)
    (table,) = engine.call(chunk, limit=1.0)
    with pytest.raises(ScriptTimeout):
        engine.start_task(table, "poll", True, limit=0.1)
    failing = engine.call(engine.compile(
        "return setmetatable({}, {__index = function() error('no') end})", "f.lua", env),
        limit=1.0)[0]
    with pytest.raises(ScriptError, match="no"):
        engine.start_task(failing, "poll", True, limit=1.0)
    env2, _ = _load(engine)
    assert engine.start_task(env2, "poll", False, limit=1.0)[1] == "done"


def test_the_watchdog_lingers_then_sleeps() -> None:
    watchdog = Watchdog(period=0.001, linger=5)
    try:
        class Idle:
            def abort(self, token: int, reason: str) -> bool:
                return False

        target = Idle()
        watchdog.arm(target, 10.0, 1)
        watchdog.disarm(target)
        deadline = time.monotonic() + 10
        while not watchdog.idle and time.monotonic() < deadline:
            time.sleep(0.005)
        assert watchdog.idle  # asleep again once nothing was armed for a while
    finally:
        watchdog.close()
