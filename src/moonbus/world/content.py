"""What the demo world contains: object and NPC definitions, the map layout,
the simulated players and their lines.

Everything here is immutable data (frozen dataclasses, tuples), read by any
thread. Rates follow the classic game where it has them, with XP rounded down
to whole points so that scripts can add XP to integer counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = [
    "BANK_ACTION",
    "CHAT_NAMES",
    "FISHING_TILES",
    "NPCS",
    "NPC_LAYOUT",
    "OBJECTS",
    "OBJECT_LAYOUT",
    "PLAYER_SPAWN",
    "PRIVATE_LINES",
    "PUBLIC_LINES",
    "SKILLS",
    "GatherOption",
    "NpcDef",
    "ObjectDef",
    "Product",
]

#: Skill names, in the order the game lists them.
SKILLS: Final = (
    "attack",
    "strength",
    "defence",
    "hitpoints",
    "mining",
    "fishing",
    "woodcutting",
)

BANK_ACTION: Final = "Bank"


@dataclass(frozen=True, slots=True)
class Product:
    """One thing a gathering action can yield."""

    item: str
    level: int
    xp: int


@dataclass(frozen=True, slots=True)
class GatherOption:
    """A gathering action on an object ("Mine", "Chop down", "Net"...).

    Every ``attempt_ticks`` the player rolls ``base_chance`` (+1.5% per level
    above ``level``, at most 95%); a success yields one eligible product, chosen
    at random among those whose level the player has. After a yield the object
    depletes with ``deplete_chance``.
    """

    action: str
    skill: str | None
    level: int
    attempt_ticks: int
    base_chance: float
    deplete_chance: float
    products: tuple[Product, ...]


@dataclass(frozen=True, slots=True)
class ObjectDef:
    """A kind of game object. ``display`` is the menu's target text ("Copper rocks")."""

    id: int
    name: str
    display: str
    options: tuple[GatherOption, ...]
    respawn_ticks: int
    ore: str | None = None
    bank: bool = False
    moves: bool = False  # fishing spots wander along the shore

    @property
    def actions(self) -> tuple[str, ...]:
        return (BANK_ACTION,) if self.bank else tuple(o.action for o in self.options)

    def option(self, action: str) -> GatherOption | None:
        for o in self.options:
            if o.action.lower() == action.lower():
                return o
        return None


@dataclass(frozen=True, slots=True)
class NpcDef:
    """A kind of attackable NPC."""

    id: int
    name: str
    combat_level: int
    max_health: int
    defence: int
    accuracy: float  # chance that one of its attacks hits
    max_hit: int
    attack_ticks: int
    respawn_ticks: int
    drops: tuple[tuple[str, int], ...]


def _rock(
    id: int, ore: str, item: str, level: int, xp: int, chance: float, respawn: int
) -> ObjectDef:
    mine = GatherOption("Mine", "mining", level, 3, chance, 1.0, (Product(item, level, xp),))
    return ObjectDef(id, "Rocks", f"{ore} rocks", (mine,), respawn, ore=ore)


_NET = GatherOption(
    "Net", "fishing", 1, 5, 0.45, 0.0,
    (Product("Raw shrimps", 1, 10), Product("Raw anchovies", 15, 40)),
)
_BAIT = GatherOption(
    "Bait", "fishing", 5, 5, 0.4, 0.0,
    (Product("Raw sardine", 5, 20), Product("Raw herring", 10, 30)),
)

OBJECTS: Final = MappingProxyType({
    "copper": _rock(11161, "Copper", "Copper ore", 1, 17, 0.5, 4),
    "tin": _rock(11360, "Tin", "Tin ore", 1, 17, 0.5, 4),
    "iron": _rock(11364, "Iron", "Iron ore", 15, 35, 0.35, 9),
    "coal": _rock(11366, "Coal", "Coal", 30, 50, 0.3, 50),
    "tree": ObjectDef(
        1276, "Tree", "Tree",
        (GatherOption("Chop down", "woodcutting", 1, 4, 0.5, 1.0, (Product("Logs", 1, 25),)),),
        15,
    ),
    "oak": ObjectDef(
        10820, "Oak", "Oak",
        (GatherOption("Chop down", "woodcutting", 15, 4, 0.35, 0.125,
                      (Product("Oak logs", 15, 37),)),),
        25,
    ),
    "fishing_spot": ObjectDef(1530, "Fishing spot", "Fishing spot", (_NET, _BAIT), 0, moves=True),
    "cabbage": ObjectDef(
        1161, "Cabbage", "Cabbage",
        (GatherOption("Pick", None, 1, 2, 1.0, 1.0, (Product("Cabbage", 1, 0),)),),
        20,
    ),
    "bank_booth": ObjectDef(10355, "Bank booth", "Bank booth", (), 0, bank=True),
})

NPCS: Final = MappingProxyType({
    "chicken": NpcDef(1173, "Chicken", 1, 3, 1, 0.15, 1, 4, 20, (("Bones", 1), ("Feather", 5))),
    "cow": NpcDef(2790, "Cow", 2, 8, 1, 0.2, 1, 4, 25, (("Bones", 1), ("Cowhide", 1))),
    "goblin": NpcDef(3029, "Goblin", 2, 5, 1, 0.25, 1, 4, 25, (("Bones", 1),)),
    "hill_giant": NpcDef(2098, "Hill Giant", 28, 35, 26, 0.7, 4, 4, 50, (("Big bones", 1),)),
})

#: Where the player appears, and reappears after dying.
PLAYER_SPAWN: Final = (20, 20)

#: (definition key, x, y) for every object at world start.
OBJECT_LAYOUT: Final = (
    ("bank_booth", 20, 25), ("bank_booth", 21, 25),
    ("copper", 30, 14), ("copper", 31, 14), ("copper", 32, 15),
    ("tin", 30, 16), ("tin", 31, 17), ("tin", 33, 16),
    ("iron", 34, 13), ("iron", 35, 14),
    ("coal", 36, 16), ("coal", 37, 17),
    ("tree", 10, 10), ("tree", 12, 10), ("tree", 11, 12), ("tree", 13, 13),
    ("oak", 8, 13), ("oak", 9, 15),
    ("fishing_spot", 6, 28), ("fishing_spot", 6, 31),
    ("cabbage", 28, 28), ("cabbage", 29, 28), ("cabbage", 30, 28),
    ("cabbage", 28, 29), ("cabbage", 29, 29), ("cabbage", 30, 29),
)

#: Shore tiles fishing spots move between.
FISHING_TILES: Final = ((6, 27), (6, 28), (6, 29), (6, 30), (6, 31), (6, 32), (6, 33))

NPC_LAYOUT: Final = (
    ("chicken", 24, 32), ("chicken", 25, 33), ("chicken", 26, 32),
    ("cow", 34, 22), ("cow", 35, 24), ("cow", 36, 23),
    ("goblin", 14, 18), ("goblin", 15, 19), ("goblin", 16, 18),
    ("hill_giant", 38, 6),
)

#: The simulated players who chat.
CHAT_NAMES: Final = (
    "Lumby Larry", "Iron Maddy", "Rune Rick", "Gnome Child", "Sir Pking", "Fally Fred",
)

#: Public lines. None contains the word "trade": trade requests are their own kind.
PUBLIC_LINES: Final = (
    "anyone know where the iron rocks are?",
    "selling iron ore 150 ea",
    "lvl 30 mining finally!",
    "buying logs",
    "goblins drop nothing good",
    "wc lvls?",
    "this world is so laggy",
    "free cabbages by the field lol",
    "gf",
    "who wants to go fishing",
)

#: Private lines; "{player}" becomes the local player's name.
PRIVATE_LINES: Final = (
    "hey {player}, nice stats",
    "{player} can you lend me a pickaxe?",
    "are you a bot {player}?",
    "want to join my clan?",
    "thanks for the ore earlier",
)
