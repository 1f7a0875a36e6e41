"""NPC brains on the script runner, applied to the demo world at the frame barrier.

Each tick the game loop (this thread) steps the world, takes a plain snapshot
of every NPC, and submits one decision job per NPC to a ``Runner``. The jobs
run on worker threads, each in its NPC's persistent Lua state (``state=
"npc-<index>"``), so an NPC remembers its home and what it has seen from one
tick to the next. A decision never touches the world directly: it comes back
through ``apply=``, and the loop runs the queued moves with ``runner.drain()``
at the end of the frame, on its own thread, where the world may be changed.

Goblins and the hill giant chase the player when they are close, hurt NPCs
flee, the others wander near home. Run it::

    PYTHONPATH=src python examples/npc_runner.py --ticks 20

The output is deterministic for a seed: decisions depend only on the snapshot
and the tick, and moves of different NPCs do not interact.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import sys
from collections.abc import Sequence
from typing import Any

from moonbus.bus import Bus
from moonbus.runner import Runner
from moonbus.world import World
from moonbus.world.state import WorldState

# Runs in the NPC's own persistent state: `home`, `seen` and `mood` survive
# between this NPC's jobs; locals do not.
DECIDE = """
local npc, player, tick = ...
home = home or {x = npc.x, y = npc.y}
seen = seen or 0

local function sign(v)
  if v > 0 then return 1 elseif v < 0 then return -1 end
  return 0
end

local dx, dy = 0, 0
local dist = math.max(math.abs(player.x - npc.x), math.abs(player.y - npc.y))
if npc.health * 2 < npc.max_health then
  mood = "fleeing"
  dx, dy = sign(npc.x - player.x), sign(npc.y - player.y)
elseif npc.aggressive and dist <= 6 then
  if mood ~= "hunting" then seen = seen + 1 end
  mood = "hunting"
  if dist > 1 then
    dx, dy = sign(player.x - npc.x), sign(player.y - npc.y)
  end
else
  mood = "wandering"
  local roll = (npc.index * 7919 + tick * 104729) % 9
  dx, dy = roll % 3 - 1, roll // 3 - 1
  if math.abs(npc.x + dx - home.x) > 3 then dx = 0 end
  if math.abs(npc.y + dy - home.y) > 3 then dy = 0 end
end
return {index = npc.index, dx = dx, dy = dy, mood = mood, seen = seen}
"""

AGGRESSIVE = frozenset({"Goblin", "Hill Giant"})
FRAME_BUDGET = 0.5  # seconds the loop waits for this tick's decisions at the barrier


def snapshot(state: WorldState) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Plain copies of the player and of every NPC (read under the world's lock)."""
    player = {"x": state.player.x, "y": state.player.y}
    npcs = [
        {
            "index": npc.index,
            "name": npc.definition.name,
            "x": npc.x,
            "y": npc.y,
            "health": npc.health,
            "max_health": npc.definition.max_health,
            "aggressive": npc.definition.name in AGGRESSIVE,
        }
        for npc in sorted(state.npcs.values(), key=lambda n: n.index)
    ]
    return player, npcs


def _move(decision: dict[str, Any], state: WorldState) -> bool:
    npc = state.npcs.get(decision["index"])
    if npc is None or npc.in_combat:
        return False  # died or got busy since the snapshot: the decision is stale
    step_x = max(-1, min(1, int(decision["dx"])))
    step_y = max(-1, min(1, int(decision["dy"])))
    npc.x, npc.y = npc.x + step_x, npc.y + step_y
    return bool(step_x or step_y)


class Game:
    """The demo world plus the NPC brains; ``tick()`` is one frame of the loop."""

    def __init__(self, runner: Runner, *, seed: int) -> None:
        self.bus = Bus()
        self.world = World(seed=seed, emit=self.bus.emit)
        self.runner = runner
        self.decide = runner.compile(DECIDE, name="npc_ai")
        self.moods: dict[int, str] = {}
        self.moved = 0

    def apply(self, decision: dict[str, Any]) -> None:
        """Runs at the frame barrier, on the game loop's thread."""
        if self.world.act(functools.partial(_move, decision)):
            self.moved += 1
        self.moods[decision["index"]] = decision["mood"]

    def tick(self) -> tuple[int, int]:
        """One frame: step, submit every NPC's decision, wait, apply. (tick, applied)."""
        now = self.world.step()
        player, npcs = self.world.read(snapshot)
        futures = [
            self.runner.submit(
                self.decide,
                args=(npc, player, now),
                state=f"npc-{npc['index']}",
                timeout=0.05,
                apply=self.apply,
            )
            for npc in npcs
        ]
        # The frame barrier: a real game would render here and take whatever
        # is ready; this demo waits (bounded) so its output is reproducible.
        cf.wait(futures, timeout=FRAME_BUDGET)
        for future in futures:
            if future.done() and future.exception() is not None:
                print(f"  decision failed: {future.exception()}", file=sys.stderr)
        return now, self.runner.drain()

    def positions(self) -> dict[str, tuple[int, int]]:
        _, npcs = self.world.read(snapshot)
        return {f"{n['name']}#{n['index']}": (n["x"], n["y"]) for n in npcs}


def simulate(
    ticks: int, *, workers: int = 2, seed: int = 7, verbose: bool = False
) -> dict[str, Any]:
    """Run ``ticks`` frames and return a summary (used by the tests)."""
    with Runner(workers=workers) as runner:
        game = Game(runner, seed=seed)
        start = game.positions()
        applied_total = 0
        for _ in range(ticks):
            now, applied = game.tick()
            applied_total += applied
            if verbose:
                hunting = sorted(i for i, m in game.moods.items() if m == "hunting")
                print(f"tick {now:3d}: {applied} decisions applied, hunting: {hunting or '-'}")
        stats = runner.statistics()
        return {
            "ticks": ticks,
            "start": start,
            "end": game.positions(),
            "applied": applied_total,
            "moved": game.moved,
            "moods": dict(sorted(game.moods.items())),
            "statistics": stats,
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    options = parser.parse_args(argv)
    summary = simulate(options.ticks, workers=options.workers, seed=options.seed, verbose=True)
    print()
    for name, (x, y) in summary["end"].items():
        sx, sy = summary["start"][name]
        print(f"{name:16s} ({sx},{sy}) -> ({x},{y})")
    stats = summary["statistics"]
    p95 = stats.latency_p95 * 1000 if stats.latency_p95 is not None else 0.0
    print(
        f"\n{summary['applied']} decisions applied, {summary['moved']} moves; runner: "
        f"{stats.done} done, {stats.failed} failed, {stats.states} NPC states, "
        f"p95 latency {p95:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
