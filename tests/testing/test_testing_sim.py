"""The test kit for script authors (``moonbus.testing``): the ``Sim`` and its fixture.

A ``Sim`` must show a script exactly what ``moonbus run --tick-ms 0`` shows it
(same world, clock and scheduling), and its assertion helpers must say what
happened when they fail. The last test runs the plugin the way a script
author's project does: a folder outside this repository, ``pytest -p
moonbus.testing``, one Lua script and one test file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from moonbus.cli import cli
from moonbus.errors import ConfigError, ScriptSyntaxError
from moonbus.testing import SimFactory
from moonbus.testing.sim import Sim

ROOT = Path(__file__).resolve().parents[2]
MINING = ROOT / "examples" / "mining.lua"

ECHO = """
events.on("ping", function(e)
  events.emit("pong", { n = e.n * 2 })
  logger.info("ping " .. e.n)
end)
function on_start()
  events.on("ping", function(e) shared:int("deferred"):add(e.n) end)
end
function poll()
  shared:int("polls"):increment()
  return 600
end
"""


def test_a_sim_sees_what_moonbus_run_in_virtual_time_sees(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    done = CliRunner().invoke(cli, ["run", str(MINING), "--ticks", "300", "--tick-ms", "0",
                                    "--seed", "3", "--summary", str(out), "-q"])
    assert done.exit_code == 0, done.output
    summary = json.loads(out.read_text("utf-8"))
    with Sim(seed=3) as sim:
        mining = sim.load(MINING)
        assert sim.advance(300) == 300
        assert sim.shared("mining").dump() == summary["scripts"]["mining"]["shared"]
        events = {t: len(sim.emitted(t)) for t in summary["events"]["by_type"]}
        sim.stop()
        assert sim.stats(mining) == summary["scripts"]["mining"]["stats"]
    assert events == summary["events"]["by_type"]


def test_emit_reaches_both_kinds_of_handler_and_emitted_filters(
    moonbus_sim: SimFactory,
) -> None:
    sim = moonbus_sim(seed=0)
    echo = sim.load("echo.lua", text=ECHO)
    sim.emit("ping", {"n": 5})
    (pong,) = sim.assert_emitted("pong", source=echo, where={"n": 10}, count=1)
    assert pong.source == "script:echo" and pong.tick == 0
    assert sim.emitted("p*ng", source="host") == sim.emitted("ping")
    assert sim.shared(echo).int("deferred").get() == 5  # the main-engine handler ran too
    assert sim.assert_logged("ping 5", script=echo, level="info").engine == "event"
    sim.advance(3)
    assert sim.shared("echo").int("polls").get() == 4  # on start, then once a tick
    sim.assert_no_errors()


@pytest.mark.parametrize("delivery", ["immediate", "deferred"])
def test_both_delivery_modes_give_the_same_run(moonbus_sim: SimFactory, delivery: str) -> None:
    sim = moonbus_sim(seed=1, event_delivery=delivery)
    sim.load("echo.lua", text=ECHO)
    for n in range(1, 4):
        sim.emit("ping", {"n": n})
        sim.advance(2)
    assert [e.data["n"] for e in sim.emitted("pong")] == [2, 4, 6]
    assert sim.shared("echo").dump() == {"deferred": 6, "polls": 7}


def test_failed_assertions_say_what_happened_instead(moonbus_sim: SimFactory) -> None:
    sim = moonbus_sim()
    echo = sim.load("echo.lua", text=ECHO)
    sim.emit("ping", {"n": 1})
    with pytest.raises(AssertionError, match=r"expected at least 1 event\(s\) 'pong' from "
                       r"script:echo with \{'n': 3\} by tick 0, found 0") as info:
        sim.assert_emitted("pong", source=echo, where={"n": 3})
    assert "'n': 2" in str(info.value) and "events by type: {'ping': 1, 'pong': 1}" in str(
        info.value)
    with pytest.raises(AssertionError, match=r"expected no 'pong' event, found 1"):
        sim.assert_not_emitted("pong")
    with pytest.raises(AssertionError, match=r"no log line from echo contains 'pong 1'(.|\n)*"
                                             r"\[echo info t=0\] ping 1"):
        sim.assert_logged("pong 1", script=echo)
    with pytest.raises(AssertionError, match=r"never still false after 5 ticks \(tick 5\)"):
        sim.advance_until(lambda: False, max_ticks=5, what="never")
    assert sim.advance_until(lambda: sim.tick >= 7, max_ticks=5) == 7


def test_script_errors_surface(moonbus_sim: SimFactory) -> None:
    sim = moonbus_sim()
    with pytest.raises(ScriptSyntaxError, match=r"broken\.lua:2"):
        sim.load("broken.lua", text="local x = 1\nx = = 2\n")
    bad = sim.load("bad.lua", text='events.on("ping", function(e) error("no " .. e.n) end)\n')
    sim.emit("ping", {"n": 4})
    with pytest.raises(AssertionError, match=r"bad \(running\): handler for 'ping': .*no 4"):
        sim.assert_no_errors(bad)
    assert sim.logs(bad, level="error")[0].msg.startswith("handler for 'ping'")
    with pytest.raises(ConfigError, match="level must be one of"):
        sim.logs(level="warning")
    with pytest.raises(ConfigError, match="ticks must be >= 0"):
        sim.advance(-1)


def test_relative_paths_are_read_from_root(moonbus_sim: SimFactory) -> None:
    sim = moonbus_sim(root=ROOT / "examples")
    assert sim.load("combat.lua", {"target": "Cow"}).options["target"] == "Cow"
    assert sim.status("combat") == "running"


def test_an_app_is_named_as_for_the_command_line_or_given_as_an_object(
    moonbus_sim: SimFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)  # MODULE:ATTR is imported from the working directory first
    sim = moonbus_sim(app="examples.grid_game:app", seed=1)
    assert sim.app.name == "grid game"
    rover = sim.load("rover.lua", text="function poll() rover:move('east') return 600 end")
    sim.advance(3)
    assert sim.emitted("rover_moved") or sim.emitted("rover_bumped")
    sim.assert_no_errors(rover)
    again = moonbus_sim(app=sim.app, seed=1)  # the App object itself
    assert again.app is sim.app and "rover" in again.world.apis()
    with pytest.raises(ConfigError, match="cannot import module 'nope'"):
        moonbus_sim(app="nope:app")


PROJECT_SCRIPT = """
events.on("chat", function(e)
  if e.text == "hello" then events.emit("greeting", { to = e.sender }) end
end)
function poll()
  shared:int("ticks_seen"):increment()
  return 600
end
"""

PROJECT_TEST = '''
from pathlib import Path

HERE = Path(__file__).parent


def test_greets(moonbus_sim):
    sim = moonbus_sim(seed=0)
    bot = sim.load(HERE / "greeter.lua")
    sim.emit("chat", {"text": "hello", "sender": "Ann"})
    sim.assert_emitted("greeting", source=bot, where={"to": "Ann"})
    sim.advance(ticks=10)
    assert sim.shared("greeter").int("ticks_seen").get() == 11


def test_reports_what_was_emitted(moonbus_sim):
    sim = moonbus_sim()
    sim.load(HERE / "greeter.lua")
    sim.emit("chat", {"text": "bye", "sender": "Bob"})
    sim.assert_emitted("greeting")
'''


@pytest.mark.slow
def test_the_plugin_works_in_a_project_outside_this_repository(tmp_path: Path) -> None:
    (tmp_path / "greeter.lua").write_text(PROJECT_SCRIPT, "utf-8")
    (tmp_path / "test_greeter.py").write_text(textwrap.dedent(PROJECT_TEST), "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "moonbus.testing", "-p", "no:cacheprovider",
         "-q", "test_greeter.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out  # one test passes, the other fails on purpose
    assert "1 failed, 1 passed" in out, out
    assert "expected at least 1 event(s) 'greeting' by tick 0, found 0" in out, out
    assert "events by type: {'chat': 1}" in out, out
