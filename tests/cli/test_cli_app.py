"""``--app MODULE:ATTR``: run, check and the panel drive a game that is not the demo world.

The example grid game (``examples/grid_game.py``, scripts in
``examples/grid/``) is run from the repository root, as its docstring tells a
user to; a tiny app written into the test's own directory checks that the
current directory is searched first (uvicorn's convention).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from moonbus.app import DEFAULT_APP, App, api_names_of, event_type_table, load_app
from moonbus.errors import ConfigError
from moonbus.world.app import app as demo_app

ROOT = Path(__file__).resolve().parents[2]
GRID = "examples.grid_game:app"
Invoke = Callable[..., Result]

TINY_APP = '''
from dataclasses import dataclass
from moonbus.app import EventSpec
from moonbus.lua.exposure import lua_api


@lua_api
class Counter:
    def __init__(self, world):
        self._world = world

    def value(self):
        return self._world.n

    def bump(self, by):
        self._world.n += by
        return self._world.n


class World:
    def __init__(self, seed, bus):
        self.n = seed
        self.tick = 0
        self._bus = bus

    def apis(self):
        return {"counter": Counter(self), "limits": {"top": 99}}

    def step(self):
        self.tick += 1
        self._bus.emit("tick", {"tick": self.tick}, tick=self.tick)
        if self.tick % 2 == 0:
            self._bus.emit("even", {"n": self.n, "tick": self.tick}, tick=self.tick)
        return self.tick

    def status_line(self):
        return f"counter at {self.n}"

    def summary(self):
        return {"n": self.n}


@dataclass(frozen=True)
class TinyApp:
    name: str = "tiny"

    def event_types(self):
        return [EventSpec("even", ("n",))]

    def create(self, *, seed, bus):
        return World(seed, bus)


app = TinyApp()
not_an_app = 42
'''

TINY_SCRIPT = """
events:on(events.EventType.EVEN, function(e) shared:int("evens"):increment() end)
function poll()
  counter:bump(1)
  stats:set("top", limits.top)
  return 600
end
"""


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch, moonbus: Invoke) -> Invoke:
    """The CLI run from the repository root (where ``examples.grid_game`` imports)."""
    monkeypatch.setattr(sys, "path", sys.path[:])
    monkeypatch.chdir(ROOT)
    return moonbus


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A one-file app in the current directory; returns its ``MODULE:ATTR``."""
    monkeypatch.setattr(sys, "path", sys.path[:])
    monkeypatch.chdir(tmp_path)
    module = f"tiny_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{module}.py").write_text(TINY_APP, "utf-8")
    monkeypatch.delitem(sys.modules, module, raising=False)
    return f"{module}:app"


def _summary(moonbus: Invoke, out: Path, *args: str | Path) -> tuple[Result, Any]:
    result = moonbus("run", *args, "--summary", out, "-q")
    return result, (json.loads(out.read_text("utf-8")) if out.exists() else None)


def test_the_demo_world_is_the_default_app() -> None:
    assert DEFAULT_APP == "moonbus.world.app:app"
    assert load_app(None) is demo_app
    assert isinstance(demo_app, App)
    assert "players" in api_names_of(demo_app)
    assert event_type_table(demo_app)["LEVEL_UP"] == "level_up"


def test_grid_game_runs_deterministically_with_its_own_events_and_summary(
    at_root: Invoke, tmp_path: Path
) -> None:
    scripts = ["examples/grid/collector.lua", "examples/grid/watcher.lua"]
    outs = []
    for n in range(2):
        result, summary = _summary(at_root, tmp_path / f"s{n}.json", "--app", GRID, *scripts,
                                   "--ticks", "100", "--tick-ms", "0", "--seed", "7")
        assert result.exit_code == 0, result.output
        outs.append((tmp_path / f"s{n}.json").read_bytes())
    assert outs[0] == outs[1]
    assert summary["ticks"] == 100
    collector = summary["scripts"]["collector"]
    assert collector["status"] == "running" and collector["handler_errors"] == 0
    assert collector["polls"] == 0  # it steers from its tick handler
    by_type = summary["events"]["by_type"]
    assert by_type["tick"] == 100 and by_type["gem_collected"] > 0
    assert collector["shared"]["collected"] == by_type["gem_collected"]
    assert summary["scripts"]["watcher"]["shared"]["spawned"] == by_type["gem_spawned"]
    assert summary["world"]["rover"]["gems"] == by_type["gem_collected"]
    _, other = _summary(at_root, tmp_path / "seed8.json", "--app", GRID, *scripts,
                        "--ticks", "100", "--tick-ms", "0", "--seed", "8")
    assert other["world"] != summary["world"]


def test_every_grid_example_runs_cleanly(at_root: Invoke, tmp_path: Path) -> None:
    for script in sorted((ROOT / "examples" / "grid").glob("*.lua")):
        result, summary = _summary(at_root, tmp_path / f"{script.stem}.json", "--app", GRID,
                                   script, "--ticks", "60", "--tick-ms", "0")
        assert result.exit_code == 0, result.output
        entry = summary["scripts"][script.stem]
        assert entry["errors"] == [] and entry["handler_errors"] == 0, entry


def test_the_demo_summary_keeps_its_four_keys(moonbus: Invoke, lua: Any, tmp_path: Path) -> None:
    script = lua("idle.lua", "function poll() return 600 end\n")
    _, summary = _summary(moonbus, tmp_path / "demo.json", script, "--ticks", "3", "--tick-ms", "0")
    assert list(summary) == ["ticks", "seed", "scripts", "events"]


def test_an_app_in_the_current_directory(moonbus: Invoke, tiny: str, lua: Any,
                                         tmp_path: Path) -> None:
    script = lua("bumper.lua", TINY_SCRIPT)
    result, summary = _summary(moonbus, tmp_path / "tiny.json", "--app", tiny, script,
                               "--ticks", "10", "--tick-ms", "0", "--seed", "5")
    assert result.exit_code == 0, result.output
    assert summary["world"] == {"n": 5 + 11}  # the seed, then one bump per poll (ticks 0..10)
    entry = summary["scripts"]["bumper"]
    assert entry["shared"] == {"evens": 5} and entry["stats"] == {"top": 99}
    assert summary["events"]["by_type"] == {"even": 5, "tick": 10}


def test_the_live_panel_shows_the_apps_name_and_status_line(
    moonbus: Invoke, tiny: str, lua: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: treat the captured stdout as a terminal
    script = lua("bumper.lua", TINY_SCRIPT + 'logger:info("hello from the tiny game")\n')
    result = moonbus("run", "--app", tiny, script, "--ticks", "4", "--tick-ms", "0")
    assert result.exit_code == 0, result.output
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stdout)
    assert "tiny · tick" in screen
    assert "counter at " in screen
    assert "hello from the tiny game" in screen
    assert "moonbus run: 4 ticks" in screen


def test_the_live_panel_for_the_grid_game(at_root: Invoke,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    result = at_root("run", "--app", GRID, "examples/grid/collector.lua", "--ticks", "20",
                     "--tick-ms", "0")
    assert result.exit_code == 0, result.output
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stdout)
    assert "grid game · tick" in screen
    assert re.search(r"rover at \d+,\d+ · \d+ gems carried", screen)


def test_check_strict_knows_the_apps_globals(at_root: Invoke, tmp_path: Path) -> None:
    scripts = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples/grid").glob("*.lua"))
    clean = at_root("check", "--strict", "--app", GRID, *scripts)
    assert clean.exit_code == 0, clean.output
    assert "0 warnings" in clean.stderr
    # Without --app the grid's globals are unknown (the demo world has no rover)...
    demo = at_root("check", "--strict", *scripts)
    assert demo.exit_code == 1
    assert "unknown global 'rover'" in demo.stdout
    # ...and with it, a misspelt one is still caught.
    typo = tmp_path / "typo.lua"
    typo.write_text("function poll() rovr:move('east') return 600 end\n", "utf-8")
    caught = at_root("check", "--strict", "--app", GRID, typo)
    assert caught.exit_code == 1
    assert f"{typo}:1: warning: unknown global 'rovr'" in caught.stdout


@pytest.mark.parametrize(("spec", "message"), [
    ("nocolon", "write MODULE:ATTR"),
    ("no_such_module_xyz:app", "cannot import module 'no_such_module_xyz'"),
    ("moonbus.world.app:nope", "has no attribute 'nope'"),
    ("moonbus.world.app:DemoApp", "is the class DemoApp; name an instance"),
    ("moonbus.world.app:DEMO_EVENTS", "is a tuple, not an app"),
])
def test_a_bad_app_is_a_usage_error_before_anything_starts(
    moonbus: Invoke, lua: Any, spec: str, message: str
) -> None:
    script = lua("idle.lua", "function poll() return 600 end\n")
    for command in (["run", script, "--ticks", "1", "--tick-ms", "0"], ["check", script]):
        result = moonbus(*command, "--app", spec)
        assert result.exit_code == 2, result.output
        assert message in result.stderr


def test_load_app_reports_a_non_app_attribute(tiny: str) -> None:
    module = tiny.split(":")[0]
    with pytest.raises(ConfigError, match="is a int, not an app: it needs a name"):
        load_app(f"{module}:not_an_app")


def test_stubs_describe_the_apps_globals_and_events(at_root: Invoke, tmp_path: Path) -> None:
    result = at_root("stubs", "--app", GRID, "--out", tmp_path / "stubs")
    assert result.exit_code == 0, result.output
    meta = (tmp_path / "stubs" / "moonbus_meta" / "moonbus.lua").read_text("utf-8")
    assert "rover" in meta and "nearest_gem" in meta
    assert 'GEM_COLLECTED = "gem_collected"' in meta
    assert "players" not in meta  # the demo world's globals are not the grid game's


def test_luacheck_lints_the_grid_scripts_clean_with_the_apps_stubs(
    at_root: Invoke, tmp_path: Path
) -> None:
    luacheck = shutil.which("luacheck")
    if luacheck is None:
        pytest.skip("luacheck is not installed (apt-get install lua-check; CI has it)")
    out = tmp_path / "project"
    assert at_root("stubs", "--app", GRID, "--out", out).exit_code == 0
    shutil.copytree(ROOT / "examples" / "grid", out / "grid")
    (out / "grid" / "typo.lua").write_text("rovr:move('east')\n", "utf-8")
    done = subprocess.run([luacheck, "--no-color", "grid"], cwd=out, capture_output=True,
                          text=True, timeout=60)
    lines = [line.strip() for line in done.stdout.splitlines() if line.startswith("    grid/")]
    assert lines == ["grid/typo.lua:1:1: accessing undefined variable 'rovr'"], done.stdout
    assert "Total: 1 warning / 0 errors in 4 files" in done.stdout
