"""A small grid game driven by Lua scripts: an example of ``moonbus --app``.

A rover moves on a walled 12 x 12 grid collecting gems; new gems appear
every few ticks. Scripts steer the rover (``rover:move("east")``, one step
per tick) and react to what happened (``events:on("gem_collected", ...)``).
Run it with::

    moonbus run --app examples.grid_game:app examples/grid/collector.lua --ticks 100 --tick-ms 0
    moonbus check --strict --app examples.grid_game:app examples/grid/*.lua
    moonbus serve --app examples.grid_game:app examples/grid/watcher.lua --rcon-password x

How it plugs in (see ``moonbus.app``): ``app`` is an immutable ``GridApp``;
``app.create(seed=..., bus=...)`` builds a fresh ``GridWorld`` for one run.
Its ``apis()`` are two ``@lua_api`` objects, ``rover`` and ``grid``; its
``step()`` advances one tick and emits ``tick`` first, then what happened.

Determinism: every chance (walls, gems) comes from ``random.Random(seed)``;
nothing reads the clock. Threads: the game loop calls ``step``; scripts call
the APIs from their threads at any time. All state sits behind one lock, and
nothing is emitted while it is held (a handler may call the API again).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moonbus.app import EventSpec
from moonbus.bus import Bus
from moonbus.errors import GameApiError
from moonbus.lua.exposure import lua_api, lua_multi

__all__ = ["GRID_EVENTS", "Grid", "GridApp", "GridWorld", "Rover", "app"]

SIZE = 12
WALLS = 14
FIRST_GEMS = 6
GEM_EVERY = 5  # ticks between new gems
MAX_GEMS = 12
DIRECTIONS: Mapping[str, tuple[int, int]] = {
    "north": (0, -1), "south": (0, 1), "east": (1, 0), "west": (-1, 0),
}

GRID_EVENTS: tuple[EventSpec, ...] = (
    EventSpec("tick", ("tick",)),
    EventSpec("rover_moved", ("x", "y", "from_x", "from_y")),
    EventSpec("rover_bumped", ("x", "y", "direction", "what")),
    EventSpec("gem_collected", ("x", "y", "total")),
    EventSpec("gem_spawned", ("x", "y")),
)


@dataclass
class _State:
    tick: int = 0
    x: int = 0
    y: int = 0
    carried: int = 0
    pending: str | None = None
    walls: set[tuple[int, int]] = field(default_factory=set)
    gems: set[tuple[int, int]] = field(default_factory=set)


class GridWorld:
    """One run's grid (an ``AppWorld``): state, the tick, and the Lua APIs."""

    def __init__(self, *, seed: int, bus: Bus) -> None:
        self._bus = bus
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._state = _State(x=SIZE // 2, y=SIZE // 2)
        s = self._state
        while len(s.walls) < WALLS:
            cell = self._random_cell()
            if cell != (s.x, s.y):
                s.walls.add(cell)
        for _ in range(FIRST_GEMS):
            s.gems.add(self._free_cell())

    def _random_cell(self) -> tuple[int, int]:
        return self._rng.randrange(SIZE), self._rng.randrange(SIZE)

    def _free_cell(self) -> tuple[int, int]:
        s = self._state
        while True:
            cell = self._random_cell()
            if cell not in s.walls and cell not in s.gems and cell != (s.x, s.y):
                return cell

    # ---------------------------------------------------------- AppWorld
    @property
    def tick(self) -> int:
        with self._lock:
            return self._state.tick

    def apis(self) -> dict[str, Any]:
        return {"rover": Rover(self), "grid": Grid(self)}

    def step(self) -> int:
        """One tick: the rover takes its queued step, a gem may appear. Game loop thread."""
        events: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            s = self._state
            s.tick += 1
            events.append(("tick", {}))
            if s.pending is not None:
                dx, dy = DIRECTIONS[s.pending]
                nx, ny = s.x + dx, s.y + dy
                if not (0 <= nx < SIZE and 0 <= ny < SIZE) or (nx, ny) in s.walls:
                    what = "wall" if (nx, ny) in s.walls else "edge"
                    events.append(("rover_bumped",
                                   {"x": s.x, "y": s.y, "direction": s.pending, "what": what}))
                else:
                    events.append(("rover_moved", {"x": nx, "y": ny, "from_x": s.x,
                                                   "from_y": s.y}))
                    s.x, s.y = nx, ny
                    if (nx, ny) in s.gems:
                        s.gems.discard((nx, ny))
                        s.carried += 1
                        events.append(("gem_collected", {"x": nx, "y": ny, "total": s.carried}))
                s.pending = None
            if s.tick % GEM_EVERY == 0 and len(s.gems) < MAX_GEMS:
                gx, gy = self._free_cell()
                s.gems.add((gx, gy))
                events.append(("gem_spawned", {"x": gx, "y": gy}))
            now = s.tick
        for kind, data in events:  # outside the lock: handlers may call the API
            self._bus.emit(kind, {**data, "tick": now}, tick=now, source="grid")
        return now

    def status_line(self) -> str:
        with self._lock:
            s = self._state
            return (f"rover at {s.x},{s.y} · {s.carried} gems carried · "
                    f"{len(s.gems)} on the board")

    def summary(self) -> Mapping[str, Any]:
        with self._lock:
            s = self._state
            return {"rover": {"x": s.x, "y": s.y, "gems": s.carried},
                    "gems_left": len(s.gems)}

    # ------------------------------------------------------ for the APIs
    def read(self) -> _State:
        """A copy of the state, taken under the lock (any thread)."""
        with self._lock:
            s = self._state
            return _State(s.tick, s.x, s.y, s.carried, s.pending, set(s.walls), set(s.gems))

    def queue_move(self, direction: str) -> bool:
        with self._lock:
            s = self._state
            dx, dy = DIRECTIONS[direction]
            nx, ny = s.x + dx, s.y + dy
            s.pending = direction
            return 0 <= nx < SIZE and 0 <= ny < SIZE and (nx, ny) not in s.walls


def _cell(x: object, y: object) -> tuple[int, int]:
    if isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, int) \
            or not isinstance(y, int):
        raise GameApiError(f"a cell is two integers x, y; got {x!r}, {y!r}")
    return x, y


@lua_api
class Rover:
    """``rover`` in Lua: where it is, what it carries, and one step per tick."""

    def __init__(self, world: GridWorld) -> None:
        self._world = world

    @lua_multi
    def position(self) -> tuple[int, int]:
        """``local x, y = rover:position()``"""
        s = self._world.read()
        return s.x, s.y

    def gems(self) -> int:
        return self._world.read().carried

    def move(self, direction: object) -> bool:
        """Queue one step ("north", "south", "east", "west") for the next tick;
        false when a wall or the edge is in the way (the rover bumps into it)."""
        if not isinstance(direction, str) or direction not in DIRECTIONS:
            raise GameApiError(
                f"rover:move expects one of {', '.join(DIRECTIONS)}, got {direction!r}"
            )
        return self._world.queue_move(direction)


@lua_api
class Grid:
    """``grid`` in Lua: the board."""

    def __init__(self, world: GridWorld) -> None:
        self._world = world

    def size(self) -> int:
        return SIZE

    def is_wall(self, x: object, y: object) -> bool:
        return _cell(x, y) in self._world.read().walls

    def has_gem(self, x: object, y: object) -> bool:
        return _cell(x, y) in self._world.read().gems

    def gems_left(self) -> int:
        return len(self._world.read().gems)

    def nearest_gem(self) -> dict[str, int] | None:
        """``{x=, y=}`` of the closest gem (Manhattan distance, then x, then y), or nil."""
        s = self._world.read()
        if not s.gems:
            return None
        gx, gy = min(s.gems, key=lambda g: (abs(g[0] - s.x) + abs(g[1] - s.y), g))
        return {"x": gx, "y": gy}


@dataclass(frozen=True)
class GridApp:
    """The grid game's description and world factory (an ``App``)."""

    @property
    def name(self) -> str:
        return "grid game"

    def event_types(self) -> Sequence[EventSpec]:
        return GRID_EVENTS

    def create(self, *, seed: int, bus: Bus) -> GridWorld:
        return GridWorld(seed=seed, bus=bus)


app = GridApp()
