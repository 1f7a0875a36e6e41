"""A lifecycle script whose top-level code registers no handler keeps no event
engine: it is closed after the load and made again by ``call``/``evaluate``
(``moonbus.host.event_on_demand``, docs/scripting.md "Two engines")."""

from __future__ import annotations

from pathlib import Path

import pytest

from moonbus.errors import ScriptError, ScriptMemoryError
from moonbus.runtime import Runtime

POLL_ONLY = """
logger.info("loaded")
function double(x) return x * 2 end
function poll() shared:int("polls"):increment() return 100 end
"""


def _engines(stepped) -> int:  # type: ignore[no-untyped-def]
    return stepped.rt.factory.statistics().engines_created


def _loaded(stepped) -> list[str]:  # type: ignore[no-untyped-def]
    return [line.engine for line in stepped.logs if line.msg == "loaded"]


def test_a_poll_only_script_keeps_only_its_main_engine(stepped):
    before = _engines(stepped)
    h = stepped.script(POLL_ONLY)
    h.start()
    stepped.advance(0.35)
    # The top-level code ran in both engines, as before; only the main one is kept.
    assert _engines(stepped) - before == 2
    assert _loaded(stepped) == ["event", "main"]
    assert h._event is None and h._main is not None
    assert h.shared.int("polls").get() >= 3
    h.stop()
    assert h.status == "stopped"


def test_a_top_level_handler_keeps_the_event_engine(stepped):
    h = stepped.script('events:on("ping", function() shared:int("hits"):increment() end)\n'
                       + POLL_ONLY)
    h.start()
    assert h._event is not None
    stepped.rt.bus.emit("ping")
    assert h.shared.int("hits").get() == 1
    assert h.listeners() == [("event", 1, "ping")]


def test_a_handler_removed_at_the_top_level_does_not_keep_it(stepped):
    h = stepped.script('local id = events:on("ping", function() end)\nevents:off(id)\n'
                       + POLL_ONLY)
    h.start()
    assert h._event is None


def test_handlers_registered_from_poll_still_get_events(stepped):
    h = stepped.script("""
local on = false
function poll()
  if not on then
    on = true
    events:on("ping", function(e) shared:int("hits"):add(e.n) end)
  end
  return 100
end
""")
    h.start()
    stepped.advance(0.15)
    assert h._event is None
    for n in (1, 2, 3):
        stepped.rt.bus.emit("ping", {"n": n})
    stepped.advance(0.15)
    assert h.shared.int("hits").get() == 6
    assert h.listeners() == [("main", 1, "ping")]


def test_call_and_evaluate_make_the_event_engine_again(stepped):
    h = stepped.script(POLL_ONLY)
    h.start()
    assert h._event is None
    before = _engines(stepped)
    assert h.call("double", 21) == 42
    assert _engines(stepped) - before == 1
    assert _loaded(stepped) == ["event", "main", "event"]  # the chunk loaded afresh
    # Kept from then on: its globals persist between calls, as before.
    assert h.evaluate("counter = 7") == "(no value)"
    assert h.evaluate("return counter") == "7"
    assert _engines(stepped) - before == 1
    h.stop()
    assert h._event is None and h.status == "stopped"
    with pytest.raises(ScriptError, match="stopped"):
        h.call("double", 1)
    assert _engines(stepped) - before == 1  # a stopped script makes none


def test_reload_and_restart_release_it_again(stepped):
    h = stepped.script(POLL_ONLY)
    h.start()
    assert h.call("double", 2) == 4
    assert h._event is not None
    h.reload()
    assert h.status == "running"
    assert h._event is None
    assert h.call("double", 3) == 6
    h.reload('events:on("ping", function() shared:int("hits"):increment() end)\n' + POLL_ONLY)
    assert h._event is not None  # now it has a handler to deliver
    stepped.rt.bus.emit("ping")
    assert h.shared.int("hits").get() == 1


def test_stats_and_counters_survive_the_release(stepped):
    stepped.rt.settings.max_handlers_per_script = 1
    h = stepped.script("""
events:on("a", function() end)
events:off(1)
local ok = pcall(function() events:on("b", function() end); events:on("c", function() end) end)
events:off(2)
stats.set("loaded", true)
function poll() stats.set("polled", true) return 100 end
""")
    h.start()
    stepped.advance(0.15)
    assert h._event is None
    # The refusal counted in the released event engine (and in the main one).
    assert h.handlers_refused == 2
    assert h.stats["loaded"] is True and h.stats["polled"] is True
    assert h.info().handlers_refused == 2


def test_memory_limit_holds_in_a_remade_event_engine(stepped):
    stepped.rt.settings.memory_limit = 2 * 1024 * 1024
    h = stepped.script(POLL_ONLY + """
function grow()
  local t = {}
  for i = 1, 1e7 do t[i] = ("x"):rep(64) .. i end
  return #t
end
""")
    h.start()
    stepped.advance(0.15)
    assert h._event is None
    with pytest.raises(ScriptMemoryError):
        h.call("grow")
    assert h._event is not None
    assert h._event.engine.memory_used() is not None  # the limit is set on it
    assert h.call("double", 5) == 10  # still usable after the refusal
    assert h.status == "running"


def test_poll_only_scripts_in_threaded_mode(tmp_path: Path):
    path = tmp_path / "p.lua"
    path.write_text(POLL_ONLY.replace("return 100", "return 20"), encoding="utf-8")
    with Runtime(threaded=True, workers=2) as rt:
        hosts = [rt.load(path) for _ in range(4)]
        for h in hosts:
            h.start()
        assert all(h._event is None for h in hosts)
        assert [h.call("double", i) for i, h in enumerate(hosts)] == [0, 2, 4, 6]
        hosts[0].stop(timeout=5)
        assert hosts[0].status == "stopped" and hosts[0]._event is None
        hosts[1].reload()
        assert hosts[1].status == "running" and hosts[1]._event is None
    assert all(h.status == "stopped" for h in hosts)
    assert all(h._event is None and h._main is None for h in hosts)
