"""Per-frame cost of moonbus in a 60 fps stepped game loop.

What a game developer asks first: "how much of my 16.7 ms frame does
scripting cost?". The loop drives 30 entities, each with one script whose
``tick`` handler reads its entity through a host API and moves it; the host
emits one ``tick`` a frame and calls ``run_due()``, as a stepped game does
(``Runtime.frame``, ``docs/embedding.md``). The peer is the same rules written as plain Python
functions called from the same loop: the cost of the rules themselves,
without scripting. Rows give the mean and the p99 time a frame spends in
moonbus (emit + handlers + run_due), with the event store in its fast mode
(``?mode=fast``, batched background writes) and in its ``?mode=durable`` (a
commit per emit: the costliest store on the frame; the default journal mode
is measured per emit by ``store_frame``); the ratio is plain Python / moonbus (below 1: the price of
running the rules as sandboxed scripts).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from moonbus.bench.harness import BenchRow
from moonbus.lua.exposure import lua_api, lua_multi
from moonbus.runtime import Runtime

__all__ = ["run"]

AREA = "frame"
ENTITIES = 30
FPS = 60
RULES_LUA = """
local id = options.id
events:on("tick", function(e)
  local x, y, hp = world:state(id)
  if hp < 30 then
    world:move(id, -1, 0)
  elseif x < 50 then
    world:move(id, 1, 0)
  else
    world:move(id, 0, (e.frame % 2 == 0) and 1 or -1)
  end
end)
"""


@lua_api
class EntityWorld:
    """Thirty entities on a grid; the scripts' (and the peer's) only way to act."""

    def __init__(self) -> None:
        self._pos = [[i, i] for i in range(ENTITIES)]
        self._hp = [20 + 3 * i for i in range(ENTITIES)]

    @lua_multi
    def state(self, entity: int) -> tuple[int, int, int]:
        """Position and health of one entity."""
        x, y = self._pos[entity]
        return x, y, self._hp[entity]

    def move(self, entity: int, dx: int, dy: int) -> None:
        """Move one entity by (dx, dy)."""
        p = self._pos[entity]
        p[0] += dx
        p[1] += dy


def _python_rule(world: EntityWorld, entity: int, frame: int) -> None:
    x, _y, hp = world.state(entity)
    if hp < 30:
        world.move(entity, -1, 0)
    elif x < 50:
        world.move(entity, 1, 0)
    else:
        world.move(entity, 0, 1 if frame % 2 == 0 else -1)


def _python_frames(frames: int) -> list[float]:
    world = EntityWorld()
    times = []
    for frame in range(frames):
        start = time.perf_counter()
        for entity in range(ENTITIES):
            _python_rule(world, entity, frame)
        times.append(time.perf_counter() - start)
    return times


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _moonbus_frames(frames: int, events_url: str, directory: Path) -> list[float]:
    clock = _Clock()
    script = directory / "entity.lua"
    script.write_text(RULES_LUA, encoding="utf-8")
    times = []
    with Runtime(threaded=False, clock=clock, events=events_url) as rt:
        world = EntityWorld()
        rt.register_api("world", world)
        for i in range(ENTITIES):
            rt.load(script, {"id": i}, name=f"entity{i}").start()
        step = rt.frame
        for frame in range(frames):
            clock.now = frame / FPS
            start = time.perf_counter()
            step(frame, {"frame": frame})
            times.append(time.perf_counter() - start)
        for host in rt.scripts.values():
            if host.info().handler_errors:
                raise RuntimeError(f"bench script failed: {host.errors}")
    return times


def _p99(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _rows(label: str, ours: list[float], peer: list[float]) -> list[BenchRow]:
    rows = []
    for stat, fn, target_us in (("mean", statistics.fmean, 500.0), ("p99", _p99, 2000.0)):
        value, theirs = fn(ours) * 1e6, fn(peer) * 1e6
        rows.append(BenchRow(
            area=AREA,
            name=f"60 fps frame, {ENTITIES} scripted entities, {label}: {stat}",
            value=value, unit="us/frame", target=f"<= {target_us:,.0f} us (of a 16,667 us frame)",
            peer="same rules in plain Python", peer_value=theirs,
            ratio=theirs / value if value else None, ok=value <= target_us,
            note="moonbus: rt.frame() = emit(tick) + 30 Lua handlers calling a host API + run_due",
        ))
    return rows


def run(quick: bool) -> list[BenchRow]:
    """The per-frame rows; ``quick`` runs 60 frames instead of 1,800 (30 s of game)."""
    frames = 60 if quick else 1_800
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        peer = _python_frames(frames)
        for label, url in (("store fast", f"sqlite:///{directory / 'fast.db'}?mode=fast"),
                           ("store durable",
                            f"sqlite:///{directory / 'durable.db'}?mode=durable")):
            ours = _moonbus_frames(frames, url, directory)
            rows += _rows(label, ours, peer)
    return rows
