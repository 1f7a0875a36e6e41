"""The demo world: a small deterministic, tick-based game for scripts to drive.

``World(seed=..., emit=bus.emit)`` builds the map (rocks, trees, fishing spots,
a cabbage field, NPCs, bank booths) and one local player. ``step()`` advances
one tick (see ``moonbus.world.tick`` for what happens in which order);
``apis()`` gives the Lua globals (``players``, ``npcs``, ``game_objects``,
``inventory``, ``skills``, ``chat``, ``bank``).

Determinism: all chance comes from ``random.Random`` streams seeded from
``seed``; nothing reads the clock. The same seed and the same sequence of API
calls between the same steps give the same events.

Threads: one thread (the game loop) calls ``step``; script threads and the
event thread call the API at any time. All state sits behind one ``RLock``,
held by ``step`` and by each API call while it reads or changes the state.
Nothing is emitted while that lock is held, because ``emit`` may run Lua
handlers synchronously, on this thread or another one that the emitting
thread waits for, and those handlers call the API again. Instead, changes
queue their events in an outbox, under the lock, in the order they happened;
after releasing it, the caller drains the outbox into ``emit``. Only one
thread drains at a time: a thread that finds another one draining leaves its
events to it and returns at once. So the bus receives the world's events in
exactly the order the world produced them, nobody blocks on an emitter, and a
call normally returns after its own events were emitted (unless another
thread was emitting at that moment; that thread then emits them). If ``emit``
raises, the event being emitted is lost and the error propagates; later
events stay queued for the next drain.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypedDict, TypeVar

from moonbus.errors import ConfigError
from moonbus.world import api, tick
from moonbus.world.content import SKILLS
from moonbus.world.state import PendingEvent, WorldState

__all__ = ["World", "WorldApis"]

T = TypeVar("T")

EmitFn = Callable[..., Any]


class WorldApis(TypedDict):
    """The Lua globals of the demo world (a plain dict at run time)."""

    players: api.Players
    npcs: api.Npcs
    game_objects: api.GameObjects
    inventory: api.Inventory
    skills: api.Skills
    chat: api.Chat
    bank: api.Bank


class World:
    """The demo game. ``emit(type, data, *, tick=..., source="world")`` is the bus's emit."""

    def __init__(self, *, seed: int, emit: EmitFn, player_name: str = "Moonbus") -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"world seed must be an integer, got {seed!r}")
        if not callable(emit):
            raise ConfigError(f"world emit must be callable, got {type(emit).__name__}")
        if not isinstance(player_name, str) or not player_name.strip():
            raise ConfigError(f"player name must be a non-empty string, got {player_name!r}")
        self._seed = seed
        self._emit = emit
        self._lock = threading.RLock()
        self._drain_lock = threading.Lock()
        self._state = WorldState.create(seed=seed, player_name=player_name.strip())

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def tick(self) -> int:
        """The last tick that ``step`` completed (0 before the first step)."""
        with self._lock:
            return self._state.tick

    def step(self) -> int:
        """Advance one tick and emit its events (``tick`` first); returns the new tick.

        Called by the game loop thread only.
        """
        with self._lock:
            tick.advance(self._state)
            now = self._state.tick
        self._drain()
        return now

    def read(self, fn: Callable[[WorldState], T]) -> T:
        """Run ``fn`` on the state under the lock; for lookups that change nothing. Any thread."""
        with self._lock:
            return fn(self._state)

    def act(self, fn: Callable[[WorldState], T]) -> T:
        """Run ``fn`` on the state under the lock, then emit what it queued. Any thread."""
        with self._lock:
            result = fn(self._state)
        self._drain()
        return result

    def apis(self) -> WorldApis:
        """The Lua globals to register, by name. Each call builds fresh API objects.

        ``for name, obj in world.apis().items(): runtime.register_api(name, obj)``
        """
        return {
            "players": api.Players(self),
            "npcs": api.Npcs(self),
            "game_objects": api.GameObjects(self),
            "inventory": api.Inventory(self),
            "skills": api.Skills(self),
            "chat": api.Chat(self),
            "bank": api.Bank(self),
        }

    def snapshot(self) -> dict[str, Any]:
        """A plain, JSON-ready picture of the player for panels and summaries. Any thread."""
        with self._lock:
            s = self._state
            p = s.player
            activity = p.activity
            return {
                "tick": s.tick,
                "player": {
                    "name": p.name,
                    "x": p.x,
                    "y": p.y,
                    "health": p.health,
                    "max_health": s.max_health(),
                    "is_animating": p.is_animating,
                    "is_moving": p.is_moving,
                    "is_in_combat": p.is_in_combat,
                    "activity": None
                    if activity is None
                    else {"action": activity.action, "target": activity.target.definition.name},
                },
                "inventory": s.inventory.counts(),
                "empty_slots": s.inventory.empty_slots(),
                "skills": {
                    name: {"level": s.skills.level(name), "xp": s.skills.xp(name)}
                    for name in SKILLS
                },
                "bank": {"open": s.bank_open, "items": s.bank.counts()},
            }

    def _next_pending(self) -> PendingEvent | None:
        with self._lock:
            return self._state.outbox.popleft() if self._state.outbox else None

    def _drain(self) -> None:
        while self._drain_lock.acquire(blocking=False):
            try:
                while (pending := self._next_pending()) is not None:
                    self._emit(pending.type, pending.data, tick=pending.tick, source="world")
            finally:
                self._drain_lock.release()
            # An event queued after our last look but before the release would be
            # stranded (its thread saw the drain lock taken): look once more.
            with self._lock:
                if not self._state.outbox:
                    return
