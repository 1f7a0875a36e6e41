"""Fixtures for the record/replay tests: small scripts that emit, call and draw random numbers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from moonbus.app import load_app
from moonbus.cli.plan import plan_scripts
from moonbus.cli.session import Session

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Emits from a tick handler (with a constant and a random draw), calls the
# game from poll, keeps shared values and stats: what a replay compares.
PROBE = """
local STEP = 3
events.on("tick", function(e)
  if e.tick % 4 == 0 then
    shared:int("probes"):increment()
    events.emit("probe", {tick = e.tick, roll = math.random(1, 1000), step = STEP * e.tick})
  end
end)
function poll()
  local me = players:local_player()
  stats.set("level", skills:level("mining"))
  events.emit("seen", {name = me:name()})
  return 1200
end
"""

# Walks the player to the bank and back: its calls change the world, which emits.
WALKER = """
local trips = 0
events.on("bank_opened", function() events.emit("banked", {trips = trips}) end)
function poll()
  if bank:is_open() then
    bank:close()
    trips = trips + 1
    shared:int("trips"):set(trips)
    return 1800
  end
  bank:open()
  return 600
end
"""

Record = Callable[..., Path]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, "utf-8")
    return path


@pytest.fixture
def scripts(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "scripts"
    folder.mkdir()
    return {"probe": write(folder, "probe.lua", PROBE),
            "walker": write(folder, "walker.lua", WALKER)}


@pytest.fixture
def record(tmp_path: Path) -> Record:
    """``record(paths, ticks=..., tick_ms=0, app=None, seed=7)`` runs a session with
    ``--record`` and returns the recording's path."""
    count = [0]

    def run(paths: Sequence[str | Path], *, ticks: int = 60, tick_ms: int = 0,
            app: str | None = None, seed: int = 7, **options: Any) -> Path:
        count[0] += 1
        out = tmp_path / f"run{count[0]}.mbrec"
        plans = plan_scripts(tuple(str(p) for p in paths), ())
        virtual = tick_ms == 0
        session = Session(plans, seed=seed, app=load_app(app), virtual=virtual,
                          tick_seconds=0.6 if virtual else tick_ms / 1000, record=out, **options)
        import threading

        try:
            session.start()
            try:
                if virtual:
                    session.run_virtual(ticks, threading.Event())
                else:
                    session.run_realtime(ticks, threading.Event(), progress_every=0.05)
            finally:
                session.stop_scripts()
        finally:
            session.close()
        return out

    return run
