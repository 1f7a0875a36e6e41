"""Helpers for the record/replay tests: small scripts that emit, call and draw random numbers.

A module of its own (not conftest) so that tests import it by a unique name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
