"""Hostile review of the issue-16 features (h16-attack): handler-only scripts
deciding whether they need a main engine. Each test failed before its fix."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from moonbus.errors import ScriptError
from moonbus.host.context import HostSettings
from moonbus.runtime import Runtime

LOOPING_INDEX = """
events:on("x", function() end)
return setmetatable({}, {__index = function() while true do end end})
"""
LOOPING_ENV = """
events:on("x", function() end)
setmetatable(_ENV, {__index = function() while true do end end})
"""
FAILING_INDEX = """
events:on("x", function() end)
return setmetatable({}, {__index = function() error("no such method") end})
"""
INHERITED = """
local Base = {}
function Base:on_start() shared:int("started"):set(1) end
return setmetatable({}, {__index = Base})
"""


def _start_in_thread(rt: Runtime, path: Path) -> tuple[threading.Thread, list[BaseException], str]:
    host = rt.load(path)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            host.start()
        except BaseException as exc:  # reported to the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    return thread, errors, host.status


@pytest.mark.parametrize("text", [LOOPING_INDEX, LOOPING_ENV, FAILING_INDEX])
def test_a_hostile_index_metamethod_cannot_hang_start(tmp_path: Path, text: str) -> None:
    # Whether a script defines on_start/poll/on_stop is read at start on the
    # starting thread; it went through __index with no time limit (a loop
    # there hung the host's start() forever).
    path = tmp_path / "s.lua"
    path.write_text(text, encoding="utf-8")
    with Runtime(threaded=True, workers=1,
                 settings=HostSettings(lifecycle_timeout=0.2)) as rt:
        thread, errors, status = _start_in_thread(rt, path)
        assert not thread.is_alive(), "start() hung in the script's __index"
        assert len(errors) == 1 and isinstance(errors[0], ScriptError), errors
        assert status == "failed"


def test_lifecycle_methods_inherited_through_index_still_count(tmp_path: Path) -> None:
    path = tmp_path / "s.lua"
    path.write_text(INHERITED, encoding="utf-8")
    with Runtime(threaded=True, workers=1) as rt:
        host = rt.load(path)
        host.start()
        for _ in range(3000):
            if host.shared.int("started").get() == 1:
                break
            threading.Event().wait(0.01)
        assert host.shared.int("started").get() == 1
