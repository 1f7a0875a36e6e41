"""The Lua-facing game API of the demo world, PowBot style (methods only).

Every class here is ``@lua_api``: the script host exposes exactly their public
methods. They hold no game state of their own; each call goes through
``WorldAccess.read`` (inspect under the world's lock) or ``WorldAccess.act``
(change under the lock, then emit the events the change produced, after the
lock is released). Any thread may call any method: script threads, the event
thread, the game loop.

Entity handles (``GameObject``, ``Npc``) point at one entity record. When the
entity goes away (a depleted rock, a dead NPC, a fishing spot that moved),
``is_valid()`` turns false, ``interact`` returns false and the getters keep
answering with the last known values (position, name; an NPC's health reads
0). A respawned entity is a new one: find it again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Generic, Protocol, TypeVar

from moonbus.errors import GameApiError
from moonbus.lua.exposure import lua_api
from moonbus.world import actions, chat
from moonbus.world.content import SKILLS
from moonbus.world.filters import Query, parse_query
from moonbus.world.items import Item
from moonbus.world.state import NpcState, ObjectState, WorldState, distance

__all__ = [
    "Bank",
    "Chat",
    "GameObject",
    "GameObjects",
    "Inventory",
    "Npc",
    "Npcs",
    "Player",
    "Players",
    "Skills",
    "WorldAccess",
]

T = TypeVar("T")
E = TypeVar("E", ObjectState, NpcState)


class WorldAccess(Protocol):
    """How the API reaches the world (implemented by ``World``)."""

    def read(self, fn: Callable[[WorldState], T]) -> T: ...

    def act(self, fn: Callable[[WorldState], T]) -> T: ...


def _interaction_action(options: object) -> str | None:
    if options is None:
        return None
    if isinstance(options, str):
        return options
    if isinstance(options, Mapping):
        unknown = sorted(str(k) for k in options if k != "action")
        if unknown:
            raise GameApiError(
                f"interact got unknown option(s) {', '.join(map(repr, unknown))}; "
                "the only option is 'action'"
            )
        action = options.get("action")
        if action is not None and not isinstance(action, str):
            raise GameApiError(f"interact option 'action' must be a string, got {action!r}")
        return action
    raise GameApiError(
        f"interact expects {{action=...}} or an action name, got {type(options).__name__}"
    )


class _Entity(Generic[E]):
    # Name, position, index and definition never change for one record, so they
    # are read without the lock; the rest is read under it.
    def __init__(self, world: WorldAccess, record: E) -> None:
        self._world = world
        self._record: E = record

    def name(self) -> str:
        return self._record.definition.name

    def x(self) -> int:
        return self._record.x

    def y(self) -> int:
        return self._record.y

    def id(self) -> int:
        """The definition id (all copper rocks share one)."""
        return self._record.definition.id

    def index(self) -> int:
        """This entity's own index, unique in the world (``game_action``'s ``entity_idx``)."""
        return self._record.index

    def actions(self) -> list[str]:
        return list(actions.actions_of(self._record))

    def is_valid(self) -> bool:
        return self._world.read(lambda _s: self._record.alive)

    def distance(self) -> int:
        """Tiles from the local player (diagonal steps count as one)."""
        r = self._record
        return self._world.read(lambda s: distance(s.player.x, s.player.y, r.x, r.y))

    def interact(self, options: object = None) -> bool:
        """Choose an action: ``{action="Mine"}``, ``"Mine"``, or nil for the first one.

        True when the action started (see ``actions.interact`` for when it does not).
        """
        action = _interaction_action(options)
        return self._world.act(lambda s: actions.interact(s, self._record, action))

    def __repr__(self) -> str:
        r = self._record
        return f"<{type(self).__name__} {r.definition.name!r} #{r.index} at {r.x},{r.y}>"


@lua_api
class GameObject(_Entity[ObjectState]):
    """A rock, tree, fishing spot, cabbage or bank booth."""

    def ore(self) -> str | None:
        """The ore a rock holds ("Copper"), nil for anything else."""
        return self._record.definition.ore


@lua_api
class Npc(_Entity[NpcState]):
    """An attackable NPC."""

    def health(self) -> int:
        return self._world.read(lambda _s: self._record.health)

    def max_health(self) -> int:
        return self._record.definition.max_health

    def is_in_combat(self) -> bool:
        return self._world.read(lambda _s: self._record.in_combat)


class _Finder(ABC, Generic[E]):
    """The find_* methods shared by ``game_objects`` and ``npcs``."""

    def __init__(self, world: WorldAccess) -> None:
        self._world = world

    @abstractmethod
    def _records(self, state: WorldState) -> list[E]:
        """Every entity of this finder's kind in the world state."""

    @abstractmethod
    def _wrap(self, record: E) -> _Entity[E]:
        """The Lua-facing object for one entity."""

    def _ore(self, record: E) -> str | None:
        return record.definition.ore if isinstance(record, ObjectState) else None

    def _search(self, query: Query) -> list[E]:
        def run(state: WorldState) -> list[E]:
            p = state.player
            found = []
            for r in self._records(state):
                d = distance(p.x, p.y, r.x, r.y)
                if query.matches(
                    name=r.definition.name,
                    actions=actions.actions_of(r),
                    id=r.definition.id,
                    ore=self._ore(r),
                    distance=d,
                ):
                    found.append((d, r.index, r))
            found.sort(key=lambda t: (t[0], t[1]))
            return [r for _, _, r in found]

        return self._world.read(run)

    def find_nearest(self, query: object = None) -> _Entity[E] | None:
        """The nearest match (ties: lowest index), or nil."""
        found = self._search(parse_query(query))
        return self._wrap(found[0]) if found else None

    def find_first(self, query: object = None) -> _Entity[E] | None:
        """The match with the lowest index (stable whatever the player's position), or nil."""
        found = self._search(parse_query(query))
        return self._wrap(min(found, key=lambda r: r.index)) if found else None

    def find_all(self, query: object = None) -> list[_Entity[E]]:
        """Every match, nearest first."""
        return [self._wrap(r) for r in self._search(parse_query(query))]


@lua_api
class GameObjects(_Finder[ObjectState]):
    """``game_objects``: find rocks, trees, fishing spots, cabbages, bank booths."""

    def _records(self, state: WorldState) -> list[ObjectState]:
        return list(state.objects.values())

    def _wrap(self, record: ObjectState) -> GameObject:
        return GameObject(self._world, record)


@lua_api
class Npcs(_Finder[NpcState]):
    """``npcs``: find attackable NPCs."""

    def _records(self, state: WorldState) -> list[NpcState]:
        return list(state.npcs.values())

    def _wrap(self, record: NpcState) -> Npc:
        return Npc(self._world, record)


@lua_api
class Player:
    """The local player (always valid)."""

    def __init__(self, world: WorldAccess) -> None:
        self._world = world

    def name(self) -> str:
        return self._world.read(lambda s: s.player.name)

    def x(self) -> int:
        return self._world.read(lambda s: s.player.x)

    def y(self) -> int:
        return self._world.read(lambda s: s.player.y)

    def health(self) -> int:
        return self._world.read(lambda s: s.player.health)

    def max_health(self) -> int:
        return self._world.read(lambda s: s.max_health())

    def is_animating(self) -> bool:
        """True while gathering or fighting next to the target (not while walking)."""
        return self._world.read(lambda s: s.player.is_animating)

    def is_in_combat(self) -> bool:
        return self._world.read(lambda s: s.player.is_in_combat)

    def is_moving(self) -> bool:
        """True while walking to the target of the chosen interaction."""
        return self._world.read(lambda s: s.player.is_moving)


@lua_api
class Players:
    """``players``."""

    def __init__(self, world: WorldAccess) -> None:
        self._player = Player(world)

    def local_player(self) -> Player:
        return self._player


def _name_argument(method: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise GameApiError(f"{method} expects an item or skill name, got {name!r}")
    return name


@lua_api
class Inventory:
    """``inventory``: the player's 28 slots."""

    def __init__(self, world: WorldAccess) -> None:
        self._world = world

    def items(self) -> list[Item]:
        """One item per occupied slot, in slot order."""
        return self._world.read(lambda s: s.inventory.items())

    def count(self, name: object) -> int:
        """How many of ``name`` are held (case-insensitive)."""
        wanted = _name_argument("inventory:count", name)
        return self._world.read(lambda s: s.inventory.count(wanted))

    def is_full(self) -> bool:
        return self._world.read(lambda s: s.inventory.is_full())

    def empty_slots(self) -> int:
        return self._world.read(lambda s: s.inventory.empty_slots())


@lua_api
class Skills:
    """``skills``: level and XP per skill (names as in ``content.SKILLS``, any case)."""

    def __init__(self, world: WorldAccess) -> None:
        self._world = world

    @staticmethod
    def _skill(method: str, name: object) -> str:
        skill = _name_argument(method, name).lower()
        if skill not in SKILLS:
            raise GameApiError(f"unknown skill {name!r}; skills are: {', '.join(SKILLS)}")
        return skill

    def level(self, name: object) -> int:
        skill = self._skill("skills:level", name)
        return self._world.read(lambda s: s.skills.level(skill))

    def xp(self, name: object) -> int:
        skill = self._skill("skills:xp", name)
        return self._world.read(lambda s: s.skills.xp(skill))


@lua_api
class Chat:
    """``chat``: the local player speaks (see ``moonbus.world.chat``)."""

    def __init__(self, world: WorldAccess) -> None:
        self._world = world

    def send(self, text: object) -> bool:
        """Say ``text`` in public chat on the next tick; False when 5 lines already wait."""
        return self._world.act(lambda s: chat.send(s, text))


@lua_api
class Bank:
    """``bank``: open the nearest booth, deposit the inventory, close."""

    def __init__(self, world: WorldAccess) -> None:
        self._world = world

    def is_open(self) -> bool:
        return self._world.read(lambda s: s.bank_open)

    def open(self) -> bool:
        """Walk to the nearest bank booth and open it (``bank_opened`` on arrival)."""

        def run(state: WorldState) -> bool:
            if state.bank_open:
                return True
            booth = actions.nearest_bank_booth(state)
            return booth is not None and actions.interact(state, booth, "Bank")

        return self._world.act(run)

    def close(self) -> bool:
        """Close the bank; False when it was not open."""
        return self._world.act(actions.close_bank)

    def deposit_all(self) -> bool:
        """Put the whole inventory in the bank; False when the bank is not open."""
        return self._world.act(actions.deposit_all)

    def count(self, name: object) -> int:
        """How many of ``name`` are banked (case-insensitive)."""
        wanted = _name_argument("bank:count", name)
        return self._world.read(lambda s: s.bank.count(wanted))

