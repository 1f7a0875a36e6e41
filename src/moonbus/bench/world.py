"""Benchmark: the demo world's own cost per tick and per API call.

The world emits into a no-op function here, so the rows measure the game and
its locking, not the bus (the bus has its own suite). ``moonbus run --tick-ms
0`` steps as fast as the world, the bus and the scripts allow; real time needs
only 1.7 ticks a second, so the world should never be what a user waits on.
There is no peer: no other library runs this game. Runs on the calling thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from moonbus.bench.harness import BenchRow, best_of
from moonbus.world import World

__all__ = ["run"]

AREA = "world"


def _noop_emit(type: str, data: Any, *, tick: int, source: str = "world") -> None:
    return None


def _rate(repeats: int, n: int, loop: Callable[[int], None]) -> float:
    """Operations per second of the fastest of ``repeats`` runs."""

    def once() -> float:
        start = time.perf_counter()
        loop(n)
        return time.perf_counter() - start

    return n / best_of(repeats, once)


def _idle_steps(n: int) -> None:
    world = World(seed=1, emit=_noop_emit)
    for _ in range(n):
        world.step()


def _busy_steps(n: int, emit: Callable[..., Any] = _noop_emit) -> None:
    """A script's typical poll every tick: look at the player, find a rock, click it, bank."""
    world = World(seed=1, emit=emit)
    apis = world.apis()
    me = apis["players"].local_player()
    inventory, objects, bank = apis["inventory"], apis["game_objects"], apis["bank"]
    for _ in range(n):
        if inventory.is_full():
            if bank.is_open():
                bank.deposit_all()
            else:
                bank.open()
        elif not me.is_animating() and not me.is_moving():
            rock = objects.find_nearest({"action": "Mine", "ore": ["copper", "tin"]})
            if rock is not None:
                rock.interact({"action": "Mine"})
        world.step()


def _api_reads(n: int) -> None:
    world = World(seed=1, emit=_noop_emit)
    me = world.apis()["players"].local_player()
    for _ in range(n):
        me.x()


def run(quick: bool) -> list[BenchRow]:
    repeats = 1 if quick else 5
    ticks = 300 if quick else 5_000
    reads = 2_000 if quick else 200_000
    idle = _rate(repeats, ticks, _idle_steps)
    busy = _rate(repeats, ticks, _busy_steps)
    api = _rate(repeats, reads, _api_reads)
    return [
        BenchRow(AREA, "step, idle player", idle, "ticks/s", ">= 10,000 ticks/s",
                 ok=idle >= 10_000),
        BenchRow(AREA, "step + a mining script's calls", busy, "ticks/s", ">= 5,000 ticks/s",
                 ok=busy >= 5_000, note="find_nearest, interact, 3 state reads per tick"),
        BenchRow(AREA, "API read (player:x)", api, "calls/s", ">= 500,000 calls/s",
                 ok=api >= 500_000, note="one lock round trip per call"),
    ]
