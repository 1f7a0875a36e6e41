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
-- Keeps every thread it ran in: a collected one's address could be a new one's.
kept = {}
function thread() local co = coroutine.running() kept[#kept + 1] = co return tostring(co) end
function yielder() coroutine.yield(1) end
function deep(n) n = n or 200 if n > 0 then return 1 + deep(n - 1) end return 0 end
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


def _thread(engine: LuaEngine, env: object) -> str:
    _, outcome, value = engine.start_task(env, "thread", False, limit=1.0)
    assert outcome == "done"
    return str(value[0])


def test_a_returned_poll_leaves_its_coroutine_for_the_next(engine: LuaEngine) -> None:
    # The spare's coroutine (task_body) outlives its function: polls that
    # return run one after the other in the same Lua thread (no coroutine,
    # hook or pointer string made per poll).
    env, _ = _load(engine)
    first = _thread(engine, env)
    assert all(_thread(engine, env) == first for _ in range(20))
    assert engine.start_task(env, "deep", False, limit=1.0)[2] == (200,)  # a deep stack
    assert _thread(engine, env) == first
    assert engine._task_threads == {}  # nothing running: the spare is not a running task
    assert engine._spare is not None and _thread(engine, env) == first


def test_a_sleeping_failing_or_yielding_task_is_never_reused(engine: LuaEngine) -> None:
    env, _ = _load(engine)
    first = _thread(engine, env)
    task, outcome, _ = engine.start_task(env, "napper", False, limit=1.0)
    assert outcome == "sleep"
    second = _thread(engine, env)  # the sleeper keeps its thread: a new spare
    assert second != first
    assert engine.step(task, limit=1.0) == ("done", ("woke",))
    assert _thread(engine, env) == second
    with pytest.raises(ScriptError):
        engine.start_task(env, "broken", False, limit=1.0)  # dead now
    third = _thread(engine, env)
    assert third != second
    with pytest.raises(ScriptError, match=r"coroutine\.yield"):
        engine.start_task(env, "yielder", False, limit=1.0)  # stuck half-run
    assert _thread(engine, env) != third
    with pytest.raises(ScriptTimeout):
        engine.start_task(env, "spin", False, limit=0.1)
    assert engine.start_task(env, "poll", False, limit=1.0)[1:] == ("done", (100,))


def test_an_abort_after_the_poll_returned_leaves_a_clean_spare(engine: LuaEngine) -> None:
    # The watchdog (or a canceller) may abort the call after the poll has
    # returned, its coroutine the spare again: the results stand, and the
    # hook it armed on that coroutine is off again for the next poll in it.
    env, _ = _load(engine)
    first = _thread(engine, env)
    real_call = engine._call

    def aborted_at_the_end(func: object, *args: object) -> object:
        result = real_call(func, *args)
        assert engine.abort(engine.call_state.token, "cancelled")
        return result

    engine._call = aborted_at_the_end
    assert engine.start_task(env, "poll", False, limit=1.0)[1:] == ("done", (100,))
    engine._call = real_call
    assert _thread(engine, env) == first  # reused, and not armed
    assert engine.start_task(env, "poll", False, limit=1.0)[1:] == ("done", (100,))


def test_a_failing_lookup_then_a_poll(engine: LuaEngine) -> None:
    # A lookup that fails never starts the spare, but the host counts it as
    # finished: the next start releases it (take_spare) and makes a new one.
    env, _ = _load(engine)
    failing = engine.call(engine.compile(
        "return setmetatable({}, {__index = function() error('no') end})", "f.lua", env),
        limit=1.0)[0]
    with pytest.raises(ScriptError, match="no"):
        engine.start_task(failing, "poll", True, limit=1.0)
    assert engine.start_task(env, "poll", False, limit=1.0)[1:] == ("done", (100,))
