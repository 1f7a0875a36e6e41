"""Items: the ``Item`` value object scripts receive, the item catalogue, the
28-slot inventory and the bank's storage.

``Item`` is immutable and safe to hand to any thread (it travels inside event
payloads). ``Inventory`` and ``BankStorage`` are plain mutable models with no
locking of their own: they belong to a ``WorldState`` and are only touched
under the world's lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from moonbus.lua.exposure import lua_api

__all__ = ["INVENTORY_SLOTS", "ITEMS", "BankStorage", "Inventory", "Item", "ItemDef", "item_def"]

INVENTORY_SLOTS: Final = 28


@lua_api
@dataclass(frozen=True, slots=True)
class Item:
    """An item as scripts see it: ``item:name()``, ``item:id()``, ``item:count()``.

    In ``inventory:items()`` one ``Item`` stands for one occupied slot and
    ``count`` is that slot's stack size (1 for items that do not stack). In an
    ``inventory_changed`` payload ``count`` is how many of that item the
    inventory holds after the change. JSON form: ``{"name", "id", "count"}``.
    """

    item_name: str
    item_id: int
    item_count: int

    def name(self) -> str:
        """The item's name, e.g. ``"Copper ore"``."""
        return self.item_name

    def id(self) -> int:
        """The item's id, e.g. 436 for copper ore."""
        return self.item_id

    def count(self) -> int:
        """Stack size (see the class docstring for what it counts where)."""
        return self.item_count

    def __moonbus_json__(self) -> dict[str, object]:
        return {"name": self.item_name, "id": self.item_id, "count": self.item_count}


@dataclass(frozen=True, slots=True)
class ItemDef:
    """A kind of item in the catalogue."""

    id: int
    name: str
    stackable: bool = False


ITEMS: Final = MappingProxyType(
    {
        d.name: d
        for d in (
            ItemDef(436, "Copper ore"),
            ItemDef(438, "Tin ore"),
            ItemDef(440, "Iron ore"),
            ItemDef(453, "Coal"),
            ItemDef(1511, "Logs"),
            ItemDef(1521, "Oak logs"),
            ItemDef(317, "Raw shrimps"),
            ItemDef(321, "Raw anchovies"),
            ItemDef(327, "Raw sardine"),
            ItemDef(345, "Raw herring"),
            ItemDef(1965, "Cabbage"),
            ItemDef(526, "Bones"),
            ItemDef(532, "Big bones"),
            ItemDef(1739, "Cowhide"),
            ItemDef(2132, "Raw beef"),
            ItemDef(2138, "Raw chicken"),
            ItemDef(314, "Feather", stackable=True),
        )
    }
)


def item_def(name: str) -> ItemDef:
    """The catalogue entry for ``name`` (KeyError names the item if unknown)."""
    try:
        return ITEMS[name]
    except KeyError:
        raise KeyError(f"no item named {name!r} in the demo world's catalogue") from None


class Inventory:
    """28 slots; a stackable item takes one slot whatever its count."""

    def __init__(self) -> None:
        self._slots: list[tuple[ItemDef, int] | None] = [None] * INVENTORY_SLOTS

    def items(self) -> list[Item]:
        """One ``Item`` per occupied slot, in slot order."""
        return [Item(d.name, d.id, n) for d, n in self._occupied()]

    def count(self, name: str) -> int:
        """How many ``name`` the inventory holds (case-insensitive; 0 for unknown names)."""
        wanted = name.lower()
        return sum(n for d, n in self._occupied() if d.name.lower() == wanted)

    def counts(self) -> dict[str, int]:
        """Item name → total held, in order of first slot."""
        totals: dict[str, int] = {}
        for d, n in self._occupied():
            totals[d.name] = totals.get(d.name, 0) + n
        return totals

    def empty_slots(self) -> int:
        return sum(1 for s in self._slots if s is None)

    def is_full(self) -> bool:
        return self.empty_slots() == 0

    def can_hold(self, definition: ItemDef) -> bool:
        """True when at least one more ``definition`` fits."""
        if definition.stackable and any(d == definition for d, _ in self._occupied()):
            return True
        return not self.is_full()

    def add(self, definition: ItemDef, amount: int) -> int:
        """Add up to ``amount``; returns how many fit (the rest is not added)."""
        if amount <= 0:
            raise ValueError(f"amount to add must be positive, got {amount}")
        if definition.stackable:
            for i, slot in enumerate(self._slots):
                if slot is not None and slot[0] == definition:
                    self._slots[i] = (definition, slot[1] + amount)
                    return amount
            return self._fill_empty(definition, amount, per_slot=amount)
        return self._fill_empty(definition, amount, per_slot=1)

    def remove_all(self) -> dict[str, tuple[ItemDef, int]]:
        """Empty the inventory; returns item name → (definition, total removed)."""
        removed: dict[str, tuple[ItemDef, int]] = {}
        for d, n in self._occupied():
            prev = removed.get(d.name, (d, 0))[1]
            removed[d.name] = (d, prev + n)
        self._slots = [None] * INVENTORY_SLOTS
        return removed

    def _fill_empty(self, definition: ItemDef, amount: int, *, per_slot: int) -> int:
        added = 0
        for i, slot in enumerate(self._slots):
            if added >= amount:
                break
            if slot is None:
                self._slots[i] = (definition, per_slot)
                added += per_slot
        return added

    def _occupied(self) -> Iterator[tuple[ItemDef, int]]:
        return (s for s in self._slots if s is not None)


class BankStorage:
    """What the player has banked: item name → count (unbounded, everything stacks)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def deposit(self, name: str, amount: int) -> None:
        self._counts[name] = self._counts.get(name, 0) + amount

    def count(self, name: str) -> int:
        """How many ``name`` are banked (case-insensitive; 0 for unknown names)."""
        wanted = name.lower()
        return sum(n for k, n in self._counts.items() if k.lower() == wanted)

    def counts(self) -> dict[str, int]:
        return dict(self._counts)
