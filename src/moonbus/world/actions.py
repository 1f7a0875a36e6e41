"""What the local player does: choosing an interaction, walking, arriving, the bank.

Called with the world's lock held (see ``state``). ``interact`` is the one way
an activity starts; it emits ``game_action`` at once (the menu choice is a fact
even when the target is far away), then the player walks one tile per tick
(diagonals allowed, no collision) until next to the target, where the activity
begins: gathering, fighting, or opening the bank.
"""

from __future__ import annotations

from typing import Literal

from moonbus.world import combat, gathering
from moonbus.world.content import BANK_ACTION
from moonbus.world.events import BANK_CLOSED, BANK_OPENED, GAME_ACTION, INVENTORY_CHANGED
from moonbus.world.items import Item
from moonbus.world.state import Activity, Entity, NpcState, ObjectState, WorldState, distance

__all__ = [
    "ATTACK_ACTION",
    "actions_of",
    "advance_player",
    "close_bank",
    "deposit_all",
    "interact",
    "nearest_bank_booth",
]

ATTACK_ACTION = "Attack"


def actions_of(entity: Entity) -> tuple[str, ...]:
    if isinstance(entity, NpcState):
        return (ATTACK_ACTION,)
    return entity.definition.actions


def _canonical_action(entity: Entity, action: str | None) -> str | None:
    actions = actions_of(entity)
    if action is None:
        return actions[0] if actions else None
    for a in actions:
        if a.lower() == action.lower():
            return a
    return None


def _can_start(state: WorldState, target: Entity, action: str) -> bool:
    if isinstance(target, NpcState):
        return True
    if target.definition.bank:
        return True
    option = target.definition.option(action)
    assert option is not None
    if option.skill is not None and state.skills.level(option.skill) < option.level:
        return False
    return gathering.has_room(state, option)


def interact(state: WorldState, target: Entity, action: str | None) -> bool:
    """Choose ``action`` on ``target``. True when the action started (or is already running).

    False, with nothing emitted, when the target is gone, has no such action,
    needs a higher level, or the inventory has no room for what it yields.
    Choosing the activity already under way records the click (``game_action``)
    and keeps its progress. Choosing anything else leaves a fight ("fled") and
    closes the bank.
    """
    if not target.alive:
        return False
    chosen = _canonical_action(target, action)
    if chosen is None or not _can_start(state, target, chosen):
        return False
    if isinstance(target, NpcState):
        name, interaction = target.definition.name, ATTACK_ACTION
    else:
        name = target.definition.display
        interaction = f"{chosen} {name}"
    state.event(
        GAME_ACTION,
        interaction=interaction,
        action=chosen,
        target=name,
        scene_x=target.x,
        scene_y=target.y,
        entity_idx=target.index,
    )
    current = state.player.activity
    if current is not None and current.target is target and current.action == chosen:
        return True
    if isinstance(target, ObjectState) and target.definition.bank and state.bank_open:
        return True
    _leave_current(state)
    activity = Activity(_kind(target, chosen), target, chosen)
    state.player.activity = activity
    if _adjacent(state, target):
        _arrive(state, activity)
    return True


def _kind(target: Entity, action: str) -> Literal["gather", "combat", "bank"]:
    if isinstance(target, NpcState):
        return "combat"
    return "bank" if action == BANK_ACTION else "gather"


def _leave_current(state: WorldState) -> None:
    current = state.player.activity
    if current is not None and current.kind == "combat" and current.arrived:
        combat.end_combat(state, current, "fled")
    state.player.activity = None
    close_bank(state)


def _adjacent(state: WorldState, target: Entity) -> bool:
    return distance(state.player.x, state.player.y, target.x, target.y) <= 1


def _arrive(state: WorldState, activity: Activity) -> None:
    activity.arrived = True
    if activity.kind == "bank":
        state.player.activity = None
        state.bank_open = True
        state.event(BANK_OPENED)
    elif activity.kind == "combat":
        combat.engage(state, activity)
    else:
        activity.next_attempt = state.tick + gathering.gather_option(activity).attempt_ticks


def _step_toward(state: WorldState, target: Entity) -> None:
    player = state.player
    player.x += (target.x > player.x) - (target.x < player.x)
    player.y += (target.y > player.y) - (target.y < player.y)


def advance_player(state: WorldState) -> None:
    """One tick of the player's activity: a step of walking, or a gathering/combat tick."""
    activity = state.player.activity
    if activity is None:
        return
    if not activity.target.alive:
        # Depleted, moved away or killed before the player got there.
        state.player.activity = None
        return
    if not activity.arrived:
        _step_toward(state, activity.target)
        if _adjacent(state, activity.target):
            _arrive(state, activity)
        return
    if activity.kind == "combat":
        combat.combat_tick(state, activity)
    else:
        gathering.gather_tick(state, activity)


def nearest_bank_booth(state: WorldState) -> ObjectState | None:
    booths = [o for o in state.objects.values() if o.definition.bank]
    if not booths:
        return None
    p = state.player
    return min(booths, key=lambda o: (distance(p.x, p.y, o.x, o.y), o.index))


def close_bank(state: WorldState) -> bool:
    """Close the bank if it is open (emits ``bank_closed``); True when it was open."""
    if not state.bank_open:
        return False
    state.bank_open = False
    state.event(BANK_CLOSED)
    return True


def deposit_all(state: WorldState) -> bool:
    """Move the whole inventory into the bank; False when the bank is not open.

    Emits one ``inventory_changed`` per kind of item (``change`` negative,
    ``item:count()`` 0).
    """
    if not state.bank_open:
        return False
    for name, (definition, amount) in state.inventory.remove_all().items():
        state.bank.deposit(name, amount)
        state.event(INVENTORY_CHANGED, item=Item(name, definition.id, 0), change=-amount)
    return True
