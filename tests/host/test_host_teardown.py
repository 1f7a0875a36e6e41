"""A script's Lua states go when its engines close, not at a later pass of
CPython's cycle collector.

Each state holds Python callables (the bridge, the engine's enter/leave)
that lead back to the objects holding its Lua functions, so any of those
left in place kept the state alive until a full collection found the cycle.
That pass then freed the states (lua_close of every one) on whatever thread
triggered it: in a full test run, gen-2 passes of 100-265 ms, inside other
scripts' handlers (read as their time limit exceeded) or on the event
thread (read as costly deliveries). Each test here runs with the collector
off and counts the lupa runtimes still alive.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.host.conftest import lua_states

from moonbus.lua.exposure import lua_api
from moonbus.runtime import Runtime

SCRIPT = """
local polls = 0
function on_start() shared:int("started"):increment() end
function poll() polls = polls + 1 return 10 end
events:on("tick", function(e)
  shared:int("ticks"):increment()
  shared:table("last"):set("tick", e.tick)
  game:note(e.tick)
end)
function on_stop() end
"""


@lua_api
class _Game:
    def __init__(self) -> None:
        self.notes: list[int] = []

    def note(self, tick: int) -> None:
        self.notes.append(tick)




@pytest.mark.parametrize("threaded", [False, True], ids=["stepped", "threaded"])
def test_closing_a_runtime_frees_every_lua_state_at_once(
        tmp_path: Path, collector_off: int, threaded: bool) -> None:
    path = tmp_path / "s.lua"
    path.write_text(SCRIPT, encoding="utf-8")
    game = _Game()
    rt = Runtime(threaded=True) if threaded else Runtime(threaded=False, clock=lambda: 0.0)
    rt.register_api("game", game)
    hosts = [rt.load(path, name=f"s{i}") for i in range(3)]
    for host in hosts:
        host.start()
    for tick in range(5):
        rt.bus.emit("tick", {"tick": tick})
    if threaded:
        assert rt.flush_events(10)
    else:
        rt.run_due(0.0)
    assert lua_states() > collector_off  # each script made its engines' states
    assert len(game.notes) == 15
    rt.close()
    del rt, hosts, host
    assert lua_states() == collector_off


def test_unloading_or_reloading_a_script_frees_its_old_states_at_once(
        tmp_path: Path, collector_off: int) -> None:
    path = tmp_path / "s.lua"
    path.write_text(SCRIPT, encoding="utf-8")
    with Runtime(threaded=False, clock=lambda: 0.0) as rt:
        rt.register_api("game", _Game())
        keep = rt.load(path, name="keep")
        keep.start()
        with_one = lua_states()
        gone = rt.load(path, name="gone")
        gone.start()
        rt.bus.emit("tick", {"tick": 1})
        assert lua_states() > with_one
        rt.unload("gone")
        del gone
        assert lua_states() == with_one
        keep.reload()
        rt.bus.emit("tick", {"tick": 2})
        assert lua_states() == with_one  # the new engines replaced the old ones
        assert keep.shared.int("ticks").get() == 2
