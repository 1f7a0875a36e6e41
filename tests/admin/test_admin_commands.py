"""Admin commands (SPEC §7) through the Python front end ``rt.admin``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from moonbus.admin.registry import CommandRegistry
from moonbus.errors import AdminError
from moonbus.host.context import HostSettings
from moonbus.runtime import Runtime


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(threaded=False, clock=lambda: 0.0,
                      events=f"sqlite:///{tmp_path / 'events.db'}")
    try:
        yield runtime
    finally:
        runtime.close()


def _script(rt: Runtime, tmp_path: Path, name: str, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / f"{name}.lua"
    path.write_text(text)
    return rt.load(path)


def test_help_lists_every_command_in_order(rt: Runtime) -> None:
    names = [line.split()[0] for line in rt.admin.run("help").splitlines()]
    assert names == ["help", "events", "events.get", "events.snapshot", "events.clear",
                     "listeners", "scripts", "script.reload", "script.stop", "script.start",
                     "script.eval",
                     "shared.dump", "settings", "settings.set"]


def test_events_summary_get_snapshot_clear(rt: Runtime) -> None:
    assert rt.admin.run("events") == "no events stored"
    for tick in range(1, 6):
        rt.bus.emit("tick", {"tick": tick}, tick=tick)
    rt.bus.emit("chat", {"text": "hi"}, tick=5)
    assert rt.admin.run("events") == "- chat: 1\n- tick: 5"
    assert rt.admin.run("events 3") == "- chat: 1\n- tick: 2"
    got = json.loads(rt.admin.run("events.get tick 3"))
    assert [e["tick"] for e in got] == [4, 5]
    assert set(got[0]) == {"seq", "tick", "type", "data", "ts", "source"}
    snap = json.loads(rt.admin.run("events.snapshot 4"))
    assert sorted(snap) == ["chat", "tick"]
    assert snap["chat"][0]["data"] == {"text": "hi"}
    assert "cleared 1" in rt.admin.run("events.clear chat")
    assert rt.admin.run("events") == "- tick: 5"
    assert "cleared 5" in rt.admin.run("events.clear")
    assert rt.admin.run("events 0") == "no events stored after tick 0"


def test_bad_arguments_give_clear_errors(rt: Runtime) -> None:
    with pytest.raises(AdminError, match="after_tick must be an integer, got 'x'"):
        rt.admin.run("events x")
    with pytest.raises(AdminError, match=r"usage: events.get <type> \[after_tick\]"):
        rt.admin.run("events.get")
    with pytest.raises(AdminError, match="unknown command 'nope'"):
        rt.admin.run("nope")
    assert rt.admin.answer("script.stop ghost").startswith("error: no script named 'ghost'")


def test_scripts_listeners_stop_start_reload_and_dump(rt: Runtime, tmp_path: Path) -> None:
    h = _script(rt, tmp_path, "miner",
                'events:on("tick", function() shared:int("ticks"):increment() end)\n'
                'function poll() end\n')
    h.start()
    rt.bus.emit("tick", {"tick": 1}, tick=1)
    assert rt.admin.run("listeners") == "miner event tick 1"
    line = rt.admin.run("scripts")
    assert line.startswith("miner running uptime=") and "handler_errors=0" in line
    assert json.loads(rt.admin.run("shared.dump miner")) == {"ticks": 1}
    assert rt.admin.run("script.stop miner") == "stopped miner (stopped)"
    assert rt.admin.run("listeners") == "no active listeners"
    assert rt.admin.run("script.start miner") == "started miner"
    (tmp_path / "miner.lua").write_text(
        'events:on("tick", function() shared:int("ticks"):add(10) end)\n'
    )
    assert rt.admin.run("script.reload miner").startswith("reloaded miner")
    rt.bus.emit("tick", {"tick": 2}, tick=2)
    assert json.loads(rt.admin.run("shared.dump miner")) == {"ticks": 11}


def test_settings_show_and_set_live(rt: Runtime) -> None:
    text = rt.admin.run("settings")
    assert "handler_timeout_ms = 100.0" in text and "retention_ticks = 36000" in text
    assert rt.admin.run("settings.set handler_timeout_ms 250") == "handler_timeout_ms = 250.0"
    assert rt.settings.handler_timeout == pytest.approx(0.25)
    assert rt.admin.run("settings.set retention_ticks 600") == "retention_ticks = 600"
    assert rt.store_settings.retention_ticks == 600
    with pytest.raises(AdminError, match="unknown setting 'colour'"):
        rt.admin.run("settings.set colour red")
    with pytest.raises(AdminError, match=r"must be a int, got 'lots'"):
        rt.admin.run("settings.set max_poll_failures lots")
    assert "deferred_max_lag_ms = 0.5" in text  # pacing is on by default (PACING_MAX_LAG)
    assert rt.admin.run("settings.set deferred_max_lag_ms 2") == "deferred_max_lag_ms = 2.0"
    assert rt.settings.deferred_max_lag == pytest.approx(0.002)
    assert "max_queued_deliveries = 250000" in text
    assert rt.admin.run("settings.set max_queued_deliveries 5000") == "max_queued_deliveries = 5000"
    assert rt.settings.max_queued_deliveries == 5000


def test_settings_turned_off_from_python_show_as_off() -> None:
    settings = HostSettings(handler_timeout=None, deferred_max_lag=None)
    with Runtime(threaded=False, clock=lambda: 0.0, settings=settings) as runtime:
        text = runtime.admin.run("settings")
    assert "handler_timeout_ms = off" in text and "deferred_max_lag_ms = off" in text


def test_registry_quoting_and_duplicates() -> None:
    reg = CommandRegistry()
    reg.register("echo", lambda args: "|".join(args), usage="echo <a> [b]", help="echo",
                 args=(1, 2))
    assert reg.run('echo "hello world" x') == "hello world|x"
    with pytest.raises(ValueError):
        reg.register("echo", lambda args: "", usage="echo", help="dup")
    assert reg.answer('echo "unclosed').startswith("error: cannot parse command line")


def test_events_from_memory_log_without_store() -> None:
    with Runtime(threaded=False, clock=lambda: 0.0) as runtime:
        runtime.bus.emit("a", tick=1)
        assert runtime.admin.run("events") == "- a: 1"
        with pytest.raises(AdminError, match="no durable event store"):
            runtime.admin.run("events.clear")
