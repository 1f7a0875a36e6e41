"""Gathering rules: mining, woodcutting, fishing and picking.

Called with the world's lock held (see ``state``). A gathering activity makes
one attempt every ``attempt_ticks`` once the player stands next to the target;
each success yields one item and its XP, and may deplete the target.
"""

from __future__ import annotations

from moonbus.world.content import GatherOption, Product
from moonbus.world.items import item_def
from moonbus.world.state import Activity, ObjectState, WorldState

__all__ = ["eligible_products", "gather_option", "gather_tick", "has_room"]

_MAX_CHANCE = 0.95
_CHANCE_PER_LEVEL = 0.015


def gather_option(activity: Activity) -> GatherOption:
    target = activity.target
    assert isinstance(target, ObjectState)
    option = target.definition.option(activity.action)
    assert option is not None, f"{target.definition.name} has no action {activity.action!r}"
    return option


def _level(state: WorldState, option: GatherOption) -> int:
    return state.skills.level(option.skill) if option.skill else option.level


def eligible_products(state: WorldState, option: GatherOption) -> list[Product]:
    level = _level(state, option)
    return [p for p in option.products if p.level <= level]


def has_room(state: WorldState, option: GatherOption) -> bool:
    """True when at least one product the player could get still fits."""
    return any(state.inventory.can_hold(item_def(p.item)) for p in eligible_products(state, option))


def gather_tick(state: WorldState, activity: Activity) -> None:
    """One tick of an arrived gathering activity; ends it when the target or room runs out."""
    if state.tick < activity.next_attempt:
        return
    option = gather_option(activity)
    activity.next_attempt = state.tick + option.attempt_ticks
    bonus = _CHANCE_PER_LEVEL * (_level(state, option) - option.level)
    chance = min(_MAX_CHANCE, option.base_chance + bonus)
    if state.game_rng.random() >= chance:
        return
    products = eligible_products(state, option)
    product = products[state.game_rng.randrange(len(products))]
    if state.give(product.item, 1) == 0:
        state.player.activity = None  # inventory full: nothing gained, the player stops
        return
    if option.skill is not None:
        state.grant_xp(option.skill, product.xp)
    target = activity.target
    depletes = option.deplete_chance >= 1.0 or state.game_rng.random() < option.deplete_chance
    if depletes:
        state.remove(target, respawn_after=target.definition.respawn_ticks)
        state.player.activity = None
    elif not has_room(state, option):
        state.player.activity = None
