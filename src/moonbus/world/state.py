"""The world's mutable state: the player, entities, skills, and the outbox of
events not yet emitted.

Thread ownership: a ``WorldState`` has no lock of its own. It is owned by one
``World`` and touched only while that world's lock is held (by the game loop in
``World.step`` or by a script thread inside an API call). Functions in the rule
modules (``actions``, ``gathering``, ``combat``, ``chat``) take the state as
their first argument and are called under that lock.

Entity records are never reused: a depleted rock or a dead NPC keeps its
record with ``alive = False`` (so a script's stale handle still reads its last
values), and its respawn is a new record with a new index.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from moonbus.world.content import (
    NPC_LAYOUT,
    NPCS,
    OBJECT_LAYOUT,
    OBJECTS,
    PLAYER_SPAWN,
    SKILLS,
    NpcDef,
    ObjectDef,
)
from moonbus.world.events import INVENTORY_CHANGED, LEVEL_UP, XP_GAINED
from moonbus.world.items import BankStorage, Inventory, Item, item_def
from moonbus.world.xp import MAX_XP, level_for_xp, xp_for_level

__all__ = [
    "Activity",
    "Entity",
    "NpcState",
    "ObjectState",
    "PendingEvent",
    "PlayerState",
    "Respawn",
    "Skills",
    "WorldState",
    "distance",
]


def distance(ax: int, ay: int, bx: int, by: int) -> int:
    """Tile distance with diagonal steps (Chebyshev): what one walking step reduces by 1."""
    return max(abs(ax - bx), abs(ay - by))


@dataclass(eq=False)
class ObjectState:
    index: int
    definition: ObjectDef
    x: int
    y: int
    alive: bool = True


@dataclass(eq=False)
class NpcState:
    index: int
    definition: NpcDef
    x: int
    y: int
    health: int
    alive: bool = True
    in_combat: bool = False
    next_attack: int = 0


Entity = ObjectState | NpcState


@dataclass(eq=False)
class Activity:
    """What the player is doing: walking to ``target``, then gathering, fighting or banking."""

    kind: Literal["gather", "combat", "bank"]
    target: Entity
    action: str  # spelled as the definition spells it
    arrived: bool = False
    next_attempt: int = 0
    damage_dealt: int = 0


@dataclass(eq=False)
class PlayerState:
    name: str
    x: int
    y: int
    health: int
    activity: Activity | None = None

    @property
    def is_moving(self) -> bool:
        return self.activity is not None and not self.activity.arrived

    @property
    def is_animating(self) -> bool:
        return self.activity is not None and self.activity.arrived

    @property
    def is_in_combat(self) -> bool:
        a = self.activity
        return a is not None and a.kind == "combat" and a.arrived


class Skills:
    """Experience per skill (whole points); levels derive from the XP table."""

    def __init__(self) -> None:
        self._xp = {name: 0 for name in SKILLS}
        self._xp["hitpoints"] = xp_for_level(10)

    def xp(self, skill: str) -> int:
        return self._xp[skill]

    def level(self, skill: str) -> int:
        return level_for_xp(self._xp[skill])

    def add(self, skill: str, amount: int) -> tuple[int, range]:
        """Add XP (capped at 200M); returns (new total, levels reached by this gain)."""
        before = self.level(skill)
        self._xp[skill] = min(MAX_XP, self._xp[skill] + amount)
        return self._xp[skill], range(before + 1, self.level(skill) + 1)


@dataclass(frozen=True, slots=True)
class PendingEvent:
    type: str
    data: dict[str, Any]
    tick: int


@dataclass(frozen=True, slots=True)
class Respawn:
    due: int
    definition: ObjectDef | NpcDef
    x: int
    y: int


@dataclass(eq=False)
class WorldState:
    """Everything that changes. Built by ``WorldState.create``; see the module docstring."""

    game_rng: random.Random
    chat_rng: random.Random
    player: PlayerState
    tick: int = 0
    skills: Skills = field(default_factory=Skills)
    inventory: Inventory = field(default_factory=Inventory)
    bank: BankStorage = field(default_factory=BankStorage)
    bank_open: bool = False
    objects: dict[int, ObjectState] = field(default_factory=dict)  # alive ones only
    npcs: dict[int, NpcState] = field(default_factory=dict)  # alive ones only
    respawns: list[Respawn] = field(default_factory=list)
    outgoing_chat: list[str] = field(default_factory=list)
    outbox: deque[PendingEvent] = field(default_factory=deque)
    next_index: int = 1

    @classmethod
    def create(cls, *, seed: int, player_name: str) -> WorldState:
        # Two streams, so the simulated chat for a seed does not depend on what scripts do.
        # Seeding with a str is deterministic across processes (hashed with SHA-512).
        state = cls(
            game_rng=random.Random(f"moonbus-world:{seed}:game"),
            chat_rng=random.Random(f"moonbus-world:{seed}:chat"),
            player=PlayerState(player_name, *PLAYER_SPAWN, health=10),
        )
        for key, x, y in OBJECT_LAYOUT:
            state.spawn(OBJECTS[key], x, y)
        for key, x, y in NPC_LAYOUT:
            state.spawn(NPCS[key], x, y)
        return state

    def event(self, type: str, **fields: Any) -> None:
        """Queue an event for emission; every payload carries ``tick``."""
        self.outbox.append(PendingEvent(type, {**fields, "tick": self.tick}, self.tick))

    def spawn(self, definition: ObjectDef | NpcDef, x: int, y: int) -> Entity:
        index, self.next_index = self.next_index, self.next_index + 1
        if isinstance(definition, ObjectDef):
            obj = ObjectState(index, definition, x, y)
            self.objects[index] = obj
            return obj
        npc = NpcState(index, definition, x, y, health=definition.max_health)
        self.npcs[index] = npc
        return npc

    def remove(self, entity: Entity, *, respawn_after: int | None) -> None:
        """Take ``entity`` out of the world; a new one appears after ``respawn_after`` ticks."""
        entity.alive = False
        if isinstance(entity, ObjectState):
            del self.objects[entity.index]
        else:
            entity.in_combat = False
            del self.npcs[entity.index]
        if respawn_after is not None:
            self.respawns.append(
                Respawn(self.tick + respawn_after, entity.definition, entity.x, entity.y)
            )

    def max_health(self) -> int:
        return self.skills.level("hitpoints")

    def give(self, item_name: str, amount: int) -> int:
        """Put items in the inventory (emits ``inventory_changed``); returns how many fit."""
        definition = item_def(item_name)
        added = self.inventory.add(definition, amount)
        if added:
            total = self.inventory.count(item_name)
            self.event(
                INVENTORY_CHANGED, item=Item(item_name, definition.id, total), change=added
            )
        return added

    def grant_xp(self, skill: str, amount: int) -> None:
        """Add XP (emits ``xp_gained`` and one ``level_up`` per level reached)."""
        if amount <= 0:
            return
        total, reached = self.skills.add(skill, amount)
        self.event(XP_GAINED, skill=skill, xp=amount, total=total)
        for level in reached:
            self.event(LEVEL_UP, skill=skill, level=level)
        if skill == "hitpoints":
            self.player.health += len(reached)
