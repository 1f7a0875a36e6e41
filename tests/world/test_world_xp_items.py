"""The XP table and the inventory model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moonbus.world.items import INVENTORY_SLOTS, ITEMS, BankStorage, Inventory, item_def
from moonbus.world.xp import MAX_LEVEL, level_for_xp, xp_for_level


@pytest.mark.parametrize(
    ("level", "xp"),
    [(1, 0), (2, 83), (3, 174), (10, 1154), (50, 101_333), (92, 6_517_253), (99, 13_034_431)],
)
def test_classic_thresholds(level: int, xp: int) -> None:
    assert xp_for_level(level) == xp
    assert level_for_xp(xp) == level
    if xp:
        assert level_for_xp(xp - 1) == level - 1


@given(st.integers(min_value=0, max_value=300_000_000))
def test_level_is_the_highest_threshold_reached(xp: int) -> None:
    level = level_for_xp(xp)
    assert 1 <= level <= MAX_LEVEL
    assert xp_for_level(level) <= xp
    if level < MAX_LEVEL:
        assert xp < xp_for_level(level + 1)


def test_bad_levels_and_xp() -> None:
    with pytest.raises(ValueError, match="between 1 and 99"):
        xp_for_level(0)
    with pytest.raises(ValueError, match="between 1 and 99"):
        xp_for_level(100)
    with pytest.raises(ValueError, match="negative"):
        level_for_xp(-1)


def test_non_stackable_items_take_a_slot_each() -> None:
    inv = Inventory()
    ore = item_def("Iron ore")
    assert inv.add(ore, 30) == INVENTORY_SLOTS
    assert inv.is_full() and inv.count("iron ORE") == 28 and not inv.can_hold(ore)
    assert [i.count() for i in inv.items()] == [1] * 28


def test_stackable_items_share_one_slot_even_when_full() -> None:
    inv = Inventory()
    feather = item_def("Feather")
    assert inv.add(feather, 5) == 5
    assert inv.add(item_def("Logs"), 27) == 27
    assert inv.is_full() and inv.can_hold(feather) and not inv.can_hold(item_def("Coal"))
    assert inv.add(feather, 10) == 15 - 5
    assert inv.count("Feather") == 15 and inv.items()[0].count() == 15
    removed = inv.remove_all()
    assert {k: n for k, (_, n) in removed.items()} == {"Feather": 15, "Logs": 27}
    assert inv.empty_slots() == 28 and inv.counts() == {}


def test_inventory_rejects_bad_amounts_and_unknown_items() -> None:
    with pytest.raises(ValueError, match="positive"):
        Inventory().add(item_def("Coal"), 0)
    with pytest.raises(KeyError, match="Unicorn"):
        item_def("Unicorn")


def test_bank_storage_counts_case_insensitively() -> None:
    bank = BankStorage()
    bank.deposit("Coal", 3)
    bank.deposit("Coal", 2)
    assert bank.count("coal") == 5 and bank.counts() == {"Coal": 5}


def test_catalogue_ids_are_unique() -> None:
    ids = [d.id for d in ITEMS.values()]
    assert len(ids) == len(set(ids))
