"""A threaded script that stops, unloads or reloads itself from its own
event handler ends where it would in a stepped runtime.

The handler runs inside ``emit`` on the emitting thread, which may not wait
for the script thread (it may need the emit lock): ``stop`` used to only ask
for the stop there, and a close right after (``unload``) dropped the pending
run, so the script stayed "stopping" for good; a ``reload`` found it still
stopping and its start was refused, so it ended "stopped". When no script
thread is in the script, the stop now runs on the calling thread
(``ScriptHost._stop_here``), as a stepped runtime does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moonbus.lua.exposure import lua_api
from moonbus.runtime import Runtime

pytestmark = pytest.mark.timeout(60, method="thread")


@lua_api
class _Control:
    """What a game's admin API could do: act on a script by name."""

    def __init__(self, rt: Runtime, what: str) -> None:
        self.rt = rt
        self.what = what

    def act(self, name: str) -> None:
        if self.what == "unload":
            self.rt.unload(name)
        elif self.what == "reload":
            self.rt.script(name).reload()
        else:
            self.rt.script(name).stop()


HANDLER_ONLY = """
events:on("go", function(e)
  shared:int("handled"):increment()
  ctl:act("s")
end)
"""

WITH_LIFECYCLE = HANDLER_ONLY + """
function on_start() shared:int("started"):increment() end
function poll() return 20 end
function on_stop() shared:int("on_stop"):increment() end
"""


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``condition`` (a threaded start runs on_start on a worker)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _start(tmp_path: Path, source: str, what: str, **runtime: Any) -> tuple[Runtime, Any]:
    rt = Runtime(threaded=True, **runtime)
    rt.register_api("ctl", _Control(rt, what))
    path = tmp_path / "s.lua"
    path.write_text(source, encoding="utf-8")
    host = rt.load(path, name="s")
    host.start()
    _until(lambda: host.status == "running")
    return rt, host


@pytest.mark.parametrize("source", [HANDLER_ONLY, WITH_LIFECYCLE], ids=["handlers", "lifecycle"])
def test_a_handler_unloading_its_own_script_leaves_it_stopped(tmp_path: Path,
                                                              source: str) -> None:
    rt, host = _start(tmp_path, source, "unload")
    with rt:
        rt.bus.emit("go", {})
        assert host.wait(timeout=10) == "stopped"
        assert "s" not in rt.scripts
        store = rt.shared.namespace("s")
        assert store.int("handled").get() == 1
        if source is WITH_LIFECYCLE:
            assert store.int("on_stop").get() == 1  # on_stop ran once
        assert host.errors == []


@pytest.mark.parametrize("source", [HANDLER_ONLY, WITH_LIFECYCLE], ids=["handlers", "lifecycle"])
def test_a_handler_reloading_its_own_script_leaves_it_running(tmp_path: Path,
                                                              source: str) -> None:
    rt, host = _start(tmp_path, source, "reload")
    with rt:
        rt.bus.emit("go", {})
        assert host.status in ("starting", "running")  # stopped and started again
        _until(lambda: host.status == "running")
        store = rt.shared.namespace("s")
        if source is WITH_LIFECYCLE:
            assert store.int("on_stop").get() == 1
            assert store.int("started").get() == 2
        rt.script("s")  # still loaded
        assert host.errors == []


def test_a_handler_stopping_its_own_script_leaves_it_stopped(tmp_path: Path) -> None:
    rt, host = _start(tmp_path, WITH_LIFECYCLE, "stop")
    with rt:
        rt.bus.emit("go", {})
        # carried out within the emit, or by the worker that was in its poll
        assert host.wait(timeout=10) == "stopped"
        assert rt.shared.namespace("s").int("on_stop").get() == 1
        rt.bus.emit("go", {})  # a stopped script's handlers are gone
        assert rt.shared.namespace("s").int("handled").get() == 1


def test_a_deferred_handler_unloading_its_own_script_leaves_it_stopped(tmp_path: Path) -> None:
    """On the event thread (deferred delivery) the same holds, and the event
    thread goes on to deliver the other scripts' events."""
    rt, host = _start(tmp_path, WITH_LIFECYCLE, "unload", event_delivery="deferred")
    other = tmp_path / "other.lua"
    other.write_text('events:on("go", function(e) shared:int("seen"):increment() end)\n',
                     encoding="utf-8")
    with rt:
        peer = rt.load(other, name="other")
        peer.start()
        _until(lambda: peer.status == "running")
        rt.bus.emit("go", {})
        rt.bus.emit("go", {})
        assert rt.flush_events(timeout=10)
        assert host.wait(timeout=10) == "stopped"
        assert rt.shared.namespace("s").int("on_stop").get() == 1
        assert rt.shared.namespace("other").int("seen").get() == 2
