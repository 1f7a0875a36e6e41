"""Review 14's attacks on today's changes (the lock-free arena source, the
arena on by default, call arguments measured before lupa pushes them).

Attacks that fail by aborting or hanging the process run in a child process
(``tests/child_process.py``)."""

from __future__ import annotations

import pytest
from tests.child_process import run_child

from moonbus.errors import ClosedError
from moonbus.lua.sandbox import SandboxFactory

# Thread B's call fills the state after thread A's string argument was
# measured but before A's call got the engine: A measured outside the lock.
ARGUMENT_MEASURED_BEFORE_THE_LOCK = """
import threading, time
from moonbus.errors import ScriptMemoryError
from moonbus.lua.sandbox import SandboxFactory
with SandboxFactory() as factory:
    engine = factory.create("t", memory_limit=1 << 20)
    env = engine.new_env()
    grow = engine.compile('''
        local t = os.clock() while os.clock() - t < 0.5 do end
        local parts = {}
        for i = 1, 450 do parts[i] = string.rep(string.char(65 + i % 26), 1000) .. i end
        keep = parts''', "g.lua", env)
    take = engine.compile("local s = ... return #s", "t.lua", env)
    other = threading.Thread(target=lambda: engine.call(grow, limit=5.0))
    other.start()
    time.sleep(0.15)  # B is in its call, not grown yet: A's string fits now
    try:
        engine.call(take, "y" * 600_000, limit=5.0)
    except ScriptMemoryError as exc:
        assert "call arguments" in str(exc), exc
        print("refused")
    else:
        print("went in")
    other.join()
"""


def test_a_call_argument_is_measured_under_the_engine_lock() -> None:
    # Before the fix: 'PANIC: unprotected error in call to Lua API (not enough
    # memory)' and SIGABRT (return code -6) in 1 of 1 runs.
    done = run_child(ARGUMENT_MEASURED_BEFORE_THE_LOCK, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "refused"


# The same race for a source: compile measured it outside the engine's lock.
SOURCE_MEASURED_BEFORE_THE_LOCK = ARGUMENT_MEASURED_BEFORE_THE_LOCK.replace(
    'engine.call(take, "y" * 600_000, limit=5.0)',
    'engine.compile("return 1 --" + "y" * 600_000, "c.lua", env, limit=5.0)',
).replace('"call arguments"', '"while compiling c.lua"')


def test_a_source_is_measured_under_the_engine_lock() -> None:
    # Before the fix: the same panic and SIGABRT, in 1 of 1 runs.
    assert SOURCE_MEASURED_BEFORE_THE_LOCK != ARGUMENT_MEASURED_BEFORE_THE_LOCK
    done = run_child(SOURCE_MEASURED_BEFORE_THE_LOCK, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "refused"


# Python objects other than strings were not measured ("covered by the room's
# margin"): each is pushed as a new userdata, unprotected, and every argument
# takes a stack slot first.
MANY_ARGUMENTS = """
import sys
from moonbus.errors import ScriptMemoryError
from moonbus.lua.sandbox import SandboxFactory
with SandboxFactory() as factory:
    engine = factory.create("t", memory_limit=1 << 20)
    count = engine.compile("return select('#', ...)", "t.lua", engine.new_env())
    for args in ([object() for _ in range(20_000)], [[1, 2]] * 20_000,
                 ["ab%d" % i for i in range(20_000)]):
        try:
            engine.call(count, *args, limit=5.0)
        except ScriptMemoryError as exc:
            assert "call arguments" in str(exc), exc
        else:
            raise AssertionError("20,000 arguments went in")
    assert engine.call(count, *[object()] * 100, "x", limit=5.0) == (101,)
print("refused")
"""


def test_many_object_or_string_arguments_are_refused_not_a_panic() -> None:
    # Before the fix: 20,000 Python objects made Lua panic (SIGABRT); 20,000
    # short strings did too once only their bytes were counted.
    done = run_child(MANY_ARGUMENTS, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "refused"


def test_a_big_argument_is_not_refused_for_ever_by_the_last_calls_garbage() -> None:
    # Today's measure counted the previous call's 600 KB argument (garbage,
    # not yet collected) as used, refused the call before Lua ran, so nothing
    # ever collected it: every later call with that argument was refused
    # (1 MiB limit; before the measure, lupa's push collected and went in).
    with SandboxFactory() as factory:
        engine = factory.create("t", memory_limit=1 << 20)
        length = engine.compile("local s = ... return #s", "t.lua", engine.new_env())
        for _ in range(3):
            assert engine.call(length, "x" * 600_000, limit=5.0) == (600_000,)


def test_a_big_event_is_not_refused_for_ever_by_the_last_events_garbage() -> None:
    # The same for event payloads (lua_room's admit_plain, older than today):
    # the first 600 KB payload went in, every later one was refused, the
    # first one's table being the garbage that nothing collected.
    with SandboxFactory() as factory:
        engine = factory.create("t", memory_limit=1 << 20, generational_gc=True)
        make = engine.compile("return function(sub, data) return true, #data.s end",
                              "t.lua", engine.new_env())
        handler = engine.call(make, limit=5.0)[0]
        for seq in range(3):
            data = {"s": "x" * 600_000}
            assert engine.call_event(handler, 1, data, 1, seq, "ev", limit=5.0) == (600_000,)
            assert engine.call_event(handler, 1, {"s": [data["s"]]}, 1, seq, "ev",
                                     limit=5.0) == (1,)  # the converter's path (admit)


def test_a_closed_engine_says_closed_whatever_its_arguments() -> None:
    # A 2 MB argument to a closed engine read 'value too large' (the measure
    # ran first), not ClosedError.
    with SandboxFactory() as factory:
        engine = factory.create("t", memory_limit=1 << 20)
        fn = engine.compile("return 1", "t.lua", engine.new_env())
        engine.close()
        for arg in ("x" * 2_000_000, object()):
            with pytest.raises(ClosedError):
                engine.call(fn, arg, limit=5.0)
