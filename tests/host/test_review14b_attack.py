"""Review 14b: closing a script's engines while its own call still runs.

Closing an engine drops every Lua object it holds (``_LUA_HELD``, the
converter's), so the state goes with the engine instead of waiting for the
cycle collector. A host call made *from* a script's Lua code that stops,
unloads or reloads that same script closes the engine on the thread that is
inside the call (the engine's lock is re-entrant): the Lua code then runs on
after the call returns. Before the release it kept working (the state stayed
alive under it); with the objects dropped at once it met ``None`` where the
converter, the quick-call path and the prelude's functions had been
("'NoneType' object is not callable", an AssertionError logged as "internal
error in the host"). The release now waits for the end of the outermost
call (``LuaEngine.close``), which still frees the state at once.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.host.conftest import lua_states

from moonbus.bus import Event, Subscription
from moonbus.errors import ClosedError
from moonbus.lua.exposure import lua_api
from moonbus.lua.sandbox import SandboxFactory
from moonbus.runtime import Runtime

# After the host call that closes its own script: every kind of host call a
# script makes, each under pcall, reported to ctl:note.
AFTER = """
  local ok, err = pcall(function() shared:int("n"):increment() end)
  ctl:note("int " .. tostring(ok) .. " " .. tostring(err))
  ok, err = pcall(function() shared:table("t"):set("k", {1, 2}) end)
  ctl:note("table " .. tostring(ok) .. " " .. tostring(err))
  ok, err = pcall(function() events:emit("after", {v = {1, 2}}) end)
  ctl:note("emit " .. tostring(ok) .. " " .. tostring(err))
  ok, err = pcall(function() return ctl:echo({a = 1}) end)
  ctl:note("echo " .. tostring(ok) .. " " .. tostring(type(err) == "table" and err.a or err))
"""

HANDLER = """
events:on("go", function(e)
  ctl:kill(e.name)
""" + AFTER + """
end)
"""

POLL = """
function poll()
  ctl:kill("s")
""" + AFTER + """
  return 10
end
"""

EXPECTED = ["int true nil", "table true nil", "emit true nil", "echo true 1"]


@lua_api
class _Control:
    def __init__(self, what: str) -> None:
        self.rt: Runtime | None = None
        self.what = what
        self.notes: list[str] = []
        self.kills = 0

    def kill(self, name: str) -> dict[str, Any]:
        assert self.rt is not None
        self.kills += 1
        if self.kills == 1:
            if self.what == "unload":
                self.rt.unload(name)
            elif self.what == "reload":
                self.rt.script(name).reload()
            else:
                self.rt.script(name).stop()
        return {"a": [1, 2]}  # a table result: C's quick call hands it to Python

    def echo(self, value: dict[str, Any]) -> dict[str, Any]:
        return value

    def note(self, text: str) -> None:
        self.notes.append(text)




@pytest.fixture
def host_errors(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Errors logged by moonbus (host functions that raised, handler errors)."""
    caplog.set_level(logging.ERROR)
    found: list[str] = []
    yield found
    found.extend(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


def _run(tmp_path: Path, source: str, what: str, *,
         threaded: bool) -> tuple[_Control, list[Event], Runtime]:
    """A runtime with script ``s`` started (the C or the Python delivery: conftest)."""
    path = tmp_path / "s.lua"
    path.write_text(source, encoding="utf-8")
    rt = Runtime(threaded=True) if threaded else Runtime(threaded=False, clock=lambda: 0.0)
    ctl = _Control(what)
    ctl.rt = rt
    rt.register_api("ctl", ctl)
    after: list[Event] = []
    rt.bus.on("after", after.append)
    host = rt.load(path, name="s")
    host.start()
    if not threaded:
        rt.run_due(0.0)
    return ctl, after, rt


@pytest.mark.parametrize("what", ["unload", "stop", "reload"])
def test_a_handler_that_closes_its_own_script_runs_on_as_before(
        tmp_path: Path, what: str, host_errors: list[str]) -> None:
    ctl, after, rt = _run(tmp_path, HANDLER, what, threaded=False)
    with rt:
        rt.bus.emit("go", {"name": "s"})  # the handler runs inside emit, on this thread
        assert ctl.notes == EXPECTED
        assert len(after) == 1 and list(after[0].data["v"]) == [1, 2]
        logs = [line.msg for line in rt.recent_logs if line.level == "error"]
        assert logs == []
    assert host_errors == []


@pytest.mark.parametrize("what", ["unload", "stop"])
def test_a_poll_that_closes_its_own_script_runs_on_as_before(
        tmp_path: Path, what: str, host_errors: list[str]) -> None:
    ctl, after, rt = _run(tmp_path, POLL, what, threaded=False)
    with rt:
        assert ctl.notes == EXPECTED
        assert len(after) == 1
        assert [line.msg for line in rt.recent_logs if line.level == "error"] == []
    assert host_errors == []


def test_a_threaded_handler_that_unloads_its_script_runs_on(
        tmp_path: Path, host_errors: list[str]) -> None:
    ctl, after, rt = _run(tmp_path, HANDLER, "unload", threaded=True)
    with rt:
        rt.bus.emit("go", {"name": "s"})  # immediate delivery: this thread runs it
        assert ctl.notes == EXPECTED
        assert len(after) == 1
    assert host_errors == []


def test_the_state_of_a_script_that_closed_itself_goes_when_its_call_ends(
        tmp_path: Path, collector_off: int) -> None:
    ctl, _after, rt = _run(tmp_path, HANDLER, "unload", threaded=False)
    with rt:
        rt.bus.emit("go", {"name": "s"})
        assert ctl.notes == EXPECTED
        assert lua_states() == collector_off  # not left for the cycle collector
    del rt


def test_an_engine_closed_inside_its_own_call_is_closed_for_new_calls() -> None:
    factory = SandboxFactory()
    engine = factory.create("self-close")
    seen: list[str] = []

    def close_me() -> None:
        engine.close()
        assert engine.closed
        try:
            engine.call(func, limit=None)  # a nested call after the close
        except ClosedError:
            seen.append("closed")

    env = engine.new_env()
    env["close_me"] = engine.host_function(close_me, "close_me")
    func = engine.compile("close_me() return {1, 2}", "=t", env, limit=1.0)
    values = engine.call(func, limit=1.0)
    assert seen == ["closed"]
    assert list(values[0].values()) == [1, 2]  # the call itself ended normally
    assert engine.closed
    with pytest.raises(ClosedError):
        engine.call(func, limit=1.0)
    with pytest.raises(ClosedError):
        engine.compile("return 1", "=u", None, limit=1.0)
    with pytest.raises(ClosedError):
        engine.table({"a": 1})
    factory.close()


def test_compile_and_table_on_a_closed_engine_say_closed() -> None:
    """Not 'out of memory while compiling' (the released room reads 0 bytes free)."""
    factory = SandboxFactory()
    engine = factory.create("closed")
    env = engine.new_env()
    engine.close()
    with pytest.raises(ClosedError):
        engine.compile("return 1", "=x", env, limit=1.0)
    with pytest.raises(ClosedError):
        engine.table({"a": 1})
    with pytest.raises(ClosedError):
        engine.table()
    factory.close()


def test_no_background_thread_dies_when_scripts_close_themselves(
        tmp_path: Path, host_errors: list[str]) -> None:
    died: list[BaseException | None] = []
    old = threading.excepthook
    threading.excepthook = lambda args: died.append(args.exc_value)
    try:
        ctl, _after, rt = _run(tmp_path, HANDLER, "stop", threaded=True)
        with rt:
            rt.bus.emit("go", {"name": "s"})
    finally:
        threading.excepthook = old
    assert died == []
    assert ctl.notes == EXPECTED


@pytest.mark.parametrize("source", [
    'function poll() error("poll failed") end',
    'function on_start() events:on("tick", function(e) error("deferred failed") end) end\n'
    'function poll() return 10 end',
], ids=["poll", "deferred-handler"])
def test_a_script_whose_lifecycle_code_failed_leaves_no_state_to_the_collector(
        tmp_path: Path, collector_off: int, source: str) -> None:
    """A failing poll or deferred handler returned its ScriptError as a value
    (``start_poll``, ``_step``) with its traceback, whose frames held the
    script's env table or the handler's payload table; the caller's frame
    held the error: a cycle that kept the state until a collector pass, after
    the Runtime closed too."""
    path = tmp_path / "f.lua"
    path.write_text(source, encoding="utf-8")
    rt = Runtime(threaded=False, clock=lambda: 0.0)
    host = rt.load(path, name="f")
    host.start()
    for i in range(3):
        rt.bus.emit("tick", {"tick": i})
        rt.run_due(i * 10.0)
    assert host.poll_errors + host.handler_errors >= 1
    rt.close()
    del rt, host
    assert lua_states() == collector_off


def test_a_closed_engine_says_closed_for_its_memory() -> None:
    factory = SandboxFactory()
    engine = factory.create("closed", memory_limit=1 << 22)
    engine.close()
    with pytest.raises(ClosedError):
        engine.memory_used()
    with pytest.raises(ClosedError):
        engine.set_memory_limit(1 << 20)
    with pytest.raises(ClosedError):
        engine.set_memory_budget(1000)
    factory.close()


def _active(pattern: str) -> list[Subscription]:
    return [s for s in gc.get_objects()
            if type(s) is Subscription and s.active and s.pattern == pattern]


def test_a_handler_that_subscribes_after_closing_its_own_script_leaves_no_subscription(
        tmp_path: Path) -> None:
    source = HANDLER.replace("ctl:kill(e.name)",
                             'ctl:kill(e.name) ctl:note(type(events:on("x", function() end)))')
    ctl, _after, rt = _run(tmp_path, source, "unload", threaded=False)
    with rt:
        rt.bus.emit("go", {"name": "s"})
        assert ctl.notes[0] == "number"  # events:on still answers an id
        assert _active("x") == []  # but nothing of the closed script stays on the bus


@lua_api
class _Waiter:
    """Holds the handler (and its engine's lock) until another thread waits
    for that lock in ``LuaEngine.close``."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.closing: int | None = None

    def wait(self) -> None:
        self.entered.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(self.closing or 0)
            while frame is not None:
                if frame.f_code.co_name == "close" and frame.f_code.co_filename.endswith(
                        os.path.join("lua", "engine.py")):
                    return
                frame = frame.f_back
            time.sleep(0.001)
        raise AssertionError("the closing thread never reached LuaEngine.close")


def test_a_handler_that_subscribes_while_another_thread_closes_its_script(
        tmp_path: Path, collector_off: int) -> None:
    """ScriptEngine.close cancelled the subscriptions, then waited for the
    running handler: what the handler subscribed meanwhile stayed on the bus
    for good, its C delivery holding the closed engine's state."""
    path = tmp_path / "race.lua"
    path.write_text('events:on("go", function(e) waiter:wait() events:on("x", function() end) end)',
                    encoding="utf-8")
    waiter = _Waiter()
    rt = Runtime(threaded=False, clock=lambda: 0.0)
    rt.register_api("waiter", waiter)
    rt.load(path, name="s").start()
    waiter.closing = threading.get_ident()
    emitter = threading.Thread(target=lambda: rt.bus.emit("go", {}))
    emitter.start()
    assert waiter.entered.wait(10)
    rt.unload("s")  # cancels, then waits in LuaEngine.close for the handler
    emitter.join()
    assert _active("x") == []
    assert lua_states() == collector_off
    rt.close()


@pytest.mark.parametrize("what", ["stop", "unload"])
def test_a_deferred_handler_that_stops_its_own_script_does_not_block_the_event_thread(
        tmp_path: Path, what: str) -> None:
    """The event thread held the engine's lock and waited (stop's 30 s) for
    the script thread, which waited in LuaEngine.close for that lock."""
    path = tmp_path / "s.lua"
    path.write_text(HANDLER, encoding="utf-8")
    rt = Runtime(threaded=True, event_delivery="deferred")
    ctl = _Control(what)
    ctl.rt = rt
    rt.register_api("ctl", ctl)
    host = rt.load(path, name="s")
    host.start()
    started = time.monotonic()
    rt.bus.emit("go", {"name": "s"})
    assert rt.flush_events(10)
    if what == "stop":
        assert host.wait(10) == "stopped"
    else:  # closed where it cannot wait: its status stays "stopping" (as on an emitting thread)
        assert "s" not in rt.scripts
    assert time.monotonic() - started < 5
    assert ctl.notes == EXPECTED
    rt.close()
