"""Combat rules: the player against one NPC, "controlled" style.

Called with the world's lock held (see ``state``). The player swings every
four ticks; each point of damage gives 4/3 XP (rounded down) to attack,
strength, defence and hitpoints. The NPC answers on its own timer. A fight ends
when the NPC dies ("killed"), the player dies ("died") or the player turns to
something else ("fled"); drops go straight into the inventory when they fit.
NPCs never attack first and do not move.
"""

from __future__ import annotations

from typing import Literal

from moonbus.world.content import PLAYER_SPAWN
from moonbus.world.events import COMBAT_ENDED, COMBAT_STARTED
from moonbus.world.state import Activity, NpcState, WorldState

__all__ = ["PLAYER_ATTACK_TICKS", "combat_tick", "end_combat", "engage"]

PLAYER_ATTACK_TICKS = 4
_COMBAT_SKILLS = ("attack", "strength", "defence", "hitpoints")


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _target(activity: Activity) -> NpcState:
    npc = activity.target
    assert isinstance(npc, NpcState)
    return npc


def engage(state: WorldState, activity: Activity) -> None:
    """The player reached the NPC: the fight starts (``combat_started``)."""
    npc = _target(activity)
    npc.in_combat = True
    activity.next_attempt = state.tick + 1
    npc.next_attack = state.tick + 2
    state.event(COMBAT_STARTED, target=npc.definition.name)


def end_combat(
    state: WorldState, activity: Activity, reason: Literal["killed", "fled", "died"]
) -> None:
    npc = _target(activity)
    npc.in_combat = False
    if state.player.activity is activity:
        state.player.activity = None
    state.event(
        COMBAT_ENDED, target=npc.definition.name, reason=reason, damage_dealt=activity.damage_dealt
    )


def combat_tick(state: WorldState, activity: Activity) -> None:
    """One tick of an engaged fight: the player's swing, then the NPC's."""
    npc = _target(activity)
    rng = state.game_rng
    if state.tick >= activity.next_attempt:
        activity.next_attempt = state.tick + PLAYER_ATTACK_TICKS
        accuracy = _clamp(
            0.45 + 0.02 * (state.skills.level("attack") - npc.definition.defence), 0.1, 0.95
        )
        if rng.random() < accuracy:
            max_hit = 1 + state.skills.level("strength") // 8
            damage = min(rng.randint(1, max_hit), npc.health)
            npc.health -= damage
            activity.damage_dealt += damage
            for skill in _COMBAT_SKILLS:
                state.grant_xp(skill, 4 * damage // 3)
        if npc.health <= 0:
            state.remove(npc, respawn_after=npc.definition.respawn_ticks)
            end_combat(state, activity, "killed")
            for item, amount in npc.definition.drops:
                state.give(item, amount)  # what does not fit is lost
            return
    if state.tick >= npc.next_attack:
        npc.next_attack = state.tick + npc.definition.attack_ticks
        accuracy = _clamp(
            npc.definition.accuracy - 0.005 * (state.skills.level("defence") - 1), 0.05, 0.95
        )
        if rng.random() < accuracy:
            damage = rng.randint(1, npc.definition.max_hit)
            state.player.health = max(0, state.player.health - damage)
            if state.player.health == 0:
                end_combat(state, activity, "died")
                player = state.player
                player.x, player.y = PLAYER_SPAWN
                player.health = state.max_health()
