"""Handler-only scripts run in one Lua state: no main engine unless the chunk
defines ``on_start``, ``poll`` or ``on_stop`` (docs/scripting.md "Two engines")."""

from __future__ import annotations

from pathlib import Path

import pytest

from moonbus.runtime import LogLine, Runtime

HANDLER_ONLY = """
logger.info("loaded")
events:on("ping", function() shared:int("hits"):increment() end)
"""


def _engines(stepped) -> int:  # type: ignore[no-untyped-def]
    return stepped.rt.factory.statistics().engines_created


def _loaded(stepped) -> list[str]:  # type: ignore[no-untyped-def]
    return [line.engine for line in stepped.logs if line.msg == "loaded"]


def test_a_handler_only_script_gets_no_main_engine(stepped):
    before = _engines(stepped)
    h = stepped.script(HANDLER_ONLY)
    h.start()
    assert _engines(stepped) - before == 1
    # The top-level code ran once, in the event engine.
    assert _loaded(stepped) == ["event"]
    assert h.status == "running"
    for _ in range(3):
        stepped.rt.bus.emit("ping")
    stepped.advance(0.2)
    assert h.shared.int("hits").get() == 3
    assert h.listeners() == [("event", 1, "ping")]
    assert h.polls == 0
    h.stop()
    assert h.status == "stopped"


@pytest.mark.parametrize("lifecycle", [
    "function on_start() end",
    "function poll() return 100 end",
    "function on_stop() shared:int('stopped'):increment() end",
    "return { on_stop = function(self) shared:int('stopped'):increment() end }",
])
def test_any_lifecycle_function_brings_the_main_engine(stepped, lifecycle):
    before = _engines(stepped)
    h = stepped.script(HANDLER_ONLY + lifecycle)
    h.start()
    stepped.advance(0.1)
    assert _engines(stepped) - before == 2
    assert sorted(_loaded(stepped)) == ["event", "main"]
    h.stop()
    assert h.status == "stopped"
    if "on_stop" in lifecycle:
        assert h.shared.int("stopped").get() == 1


def test_a_returned_table_without_lifecycle_methods_is_handler_only(stepped):
    # With a script table, only its methods count: a global poll is not called
    # (SPEC §4), so it does not bring a main engine either.
    before = _engines(stepped)
    h = stepped.script(HANDLER_ONLY + "function poll() end\nreturn { helper = function() end }")
    h.start()
    stepped.advance(0.1)
    assert _engines(stepped) - before == 1
    assert h.polls == 0


def test_reload_decides_afresh(stepped):
    h = stepped.script(HANDLER_ONLY)
    h.start()
    before = _engines(stepped)
    h.reload(HANDLER_ONLY + "function poll() shared:int('polls'):increment() return 50 end")
    stepped.advance(0.3)
    assert _engines(stepped) - before == 3  # the reload's syntax check, event, main
    assert h.shared.int("polls").get() >= 3
    h.reload(HANDLER_ONLY)
    assert _engines(stepped) - before == 5  # check, event: the main engine is gone
    polls = h.shared.int("polls").get()
    stepped.advance(0.3)
    assert h.shared.int("polls").get() == polls
    stepped.rt.bus.emit("ping")
    assert h.shared.int("hits").get() == 1
    assert h.status == "running"


def test_handler_only_scripts_stop_and_close_in_threaded_mode(tmp_path: Path):
    path = tmp_path / "h.lua"
    path.write_text(HANDLER_ONLY, encoding="utf-8")
    logs: list[LogLine] = []
    with Runtime(threaded=True, workers=2) as rt:
        rt.add_log_sink(logs.append)
        hosts = [rt.load(path) for _ in range(5)]
        for h in hosts:
            h.start()
        rt.bus.emit("ping")
        assert sum(h.shared.int("hits").get() for h in hosts) == 5
        hosts[0].stop(timeout=5)
        assert hosts[0].status == "stopped"
        hosts[1].reload()
        assert hosts[1].status == "running"
    assert all(h.status == "stopped" for h in hosts)
    assert {line.engine for line in logs if line.msg == "loaded"} == {"event"}


def test_call_and_evaluate_work_without_a_main_engine(stepped):
    h = stepped.script(HANDLER_ONLY + "function double(x) return x * 2 end")
    h.start()
    assert h.call("double", 21) == 42
    assert h.evaluate("return double(2)") == "4"


def test_a_script_engine_keeps_about_what_is_live(stepped):
    # A full collection after the load, then the generational collector: the
    # state does not grow to twice its live size between collections (the
    # incremental collector's default pause), event after event.
    h = stepped.script(HANDLER_ONLY)
    h.start()
    engine = h._event.engine
    loaded = engine.memory_used()
    for tick in range(1, 3001):
        stepped.rt.bus.emit("ping", {"tick": tick, "who": "x" * 40}, tick=tick)
    assert h.shared.int("hits").get() == 3000
    assert loaded is not None
    assert engine.memory_used() < loaded * 1.5
