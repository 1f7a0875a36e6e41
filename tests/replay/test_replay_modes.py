"""Real-time recordings, the grid app without its code, embedders, determinism, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from replay_support import EXAMPLES, Record, write

from moonbus import Runtime
from moonbus.cli import cli
from moonbus.lua.exposure import lua_api
from moonbus.replay import replay

ROOT = EXAMPLES.parent
GRID = [EXAMPLES / "grid" / n for n in ("collector.lua", "watcher.lua", "patrol.lua")]


def test_a_real_time_recording_replays_identically_in_virtual_time(
        record: Record, scripts: dict[str, Path]) -> None:
    path = record([*GRID], ticks=30, tick_ms=50, app="examples.grid_game:app")
    result = replay(path)
    assert result.identical, result.describe()
    assert result.counts["calls"] > 30
    demo = record([scripts["probe"], scripts["walker"]], ticks=30, tick_ms=50)
    result = replay(demo)
    assert result.identical, result.describe()
    assert result.counts["script_events"] > 5


def test_the_wall_clock_in_a_payload_breaks_a_real_time_replay_and_check_says_so(
        record: Record, tmp_path: Path) -> None:
    clocky = write(tmp_path, "clocky.lua",
                   'function poll() events.emit("at", {now = os.time()}) return 600 end\n')
    div = replay(record([clocky], ticks=4, tick_ms=50)).divergence
    assert div is not None and div.kind == "event" and div.script == "clocky"
    assert replay(record([clocky], ticks=4)).identical  # virtual time: the virtual clock
    done = CliRunner().invoke(cli, ["check", str(clocky)])
    assert "'os.time()' reads the wall clock in a real-time run" in done.output


def test_the_grid_app_replays_without_its_code(record: Record, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    path = record(GRID, ticks=60, app="examples.grid_game:app")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    code = ("import importlib.util, sys\n"
            "assert importlib.util.find_spec('examples') is None\n"
            "from moonbus.cli import main\n"
            f"sys.argv = ['moonbus', 'replay', {str(path)!r}]\nmain()\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("identical: ")


@lua_api
class Counter:
    """An embedder's API: answers depend on hidden state, so a replay must use the recording."""

    def __init__(self) -> None:
        self.n = 0

    def bump(self, by: int) -> int:
        self.n += by
        return self.n


def test_an_embedder_records_with_a_runtime_option(tmp_path: Path) -> None:
    path = tmp_path / "embedded.mbrec"
    now = [0.0]
    with Runtime(threaded=False, clock=lambda: now[0], seed=3, record=path) as rt:
        rt.register_api("counter", Counter())
        rt.load("game.lua", name="game", text=(
            'events.on("tick", function(e) events.emit("bumped", '
            '{n = counter:bump(e.tick), r = math.random(100)}) end)'
        )).start()
        for tick in range(1, 11):
            now[0] = tick * 0.6
            rt.bus.emit("tick", {"tick": tick}, tick=tick)
            rt.run_due(now[0])
        rt.scripts["game"].stop()
    result = replay(path)
    assert result.identical, result.describe()
    assert result.counts == {**result.counts, "script_events": 10, "calls": 10, "ticks": 10}


def test_math_random_and_os_time_are_reproducible() -> None:
    """Seeded per script and engine from the run's seed; os.time/os.clock read the
    virtual clock of a stepped runtime."""

    def draws(seed: int, name: str = "r") -> list[object]:
        now = [0.0]
        with Runtime(threaded=False, clock=lambda: now[0], seed=seed) as rt:
            rt.load("r.lua", name=name, text=(
                'events.on("go", function() events.emit("drawn", {r = math.random(1, 10^9), '
                't = os.time(), c = os.clock(), d = os.date("!%S")}) end)')).start()
            now[0] = 7.5
            rt.run_due(now[0])
            rt.bus.emit("go", {})
            return [dict(e.data) for e in rt.bus.log() if e.type == "drawn"]

    first = draws(1)
    assert first == draws(1)
    assert first[0]["t"] == 7 and first[0]["c"] == 7.5 and first[0]["d"] == "07"
    assert draws(2)[0]["r"] != first[0]["r"]
    assert draws(1, "other")[0]["r"] != first[0]["r"]


def test_cli_record_and_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               scripts: dict[str, Path]) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    out = tmp_path / "cli.mbrec"
    done = runner.invoke(cli, ["run", str(scripts["probe"]), "--ticks", "20", "--tick-ms", "0",
                               "--record", str(out), "-q"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    done = runner.invoke(cli, ["replay", str(out)], catch_exceptions=False)
    assert done.exit_code == 0 and done.output.startswith("identical: ")
    changed = write(tmp_path, "v2.lua", scripts["probe"].read_text().replace("STEP = 3",
                                                                             "STEP = 5"))
    done = runner.invoke(cli, ["replay", str(out), "--script", f"probe={changed}",
                               "--format", "json"], catch_exceptions=False)
    assert done.exit_code == 1
    doc = json.loads(done.output)
    assert doc["identical"] is False and doc["divergence"]["script"] == "probe"
    done = runner.invoke(cli, ["replay", str(out), "--script", "probe"])
    assert done.exit_code == 2 and "NAME=PATH" in done.output
    done = runner.invoke(cli, ["replay", str(tmp_path / "nope.mbrec")])
    assert done.exit_code == 2 and "no recording" in done.output


@pytest.mark.slow
def test_acceptance_2000_ticks_of_three_examples(record: Record, tmp_path: Path) -> None:
    started = time.perf_counter()
    path = record([EXAMPLES / n for n in ("mining.lua", "combat.lua", "chat_monitor.lua")],
                  ticks=2000)
    assert time.perf_counter() - started < 60
    result = replay(path)
    assert result.identical, result.describe()
    assert result.counts["ticks"] == 2000


def test_serve_records_too_and_the_event_store_keeps_item_fields(tmp_path: Path) -> None:
    out, db = tmp_path / "serve.mbrec", tmp_path / "events.db"
    done = CliRunner().invoke(cli, [
        "serve", str(EXAMPLES / "mining.lua"), "--rcon-password", "x", "--rcon-port", "0",
        "--ticks", "20", "--tick-ms", "50", "--events-db", str(db), "--record", str(out)])
    assert done.exit_code == 0, done.output
    result = replay(out)
    assert result.identical, result.describe()
    events = CliRunner().invoke(cli, ["events", "--db", str(db), "--type", "inventory_changed",
                                      "--format", "json"])
    items = [e["data"]["item"] for e in json.loads(events.output)]
    assert items and all(set(item) == {"name", "id", "count"} for item in items)
