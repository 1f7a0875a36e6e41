"""One game tick, in a fixed order.

Called by ``World.step`` with the world's lock held (see ``state``):

1. the tick counter advances and ``tick`` is queued first;
2. the local player's chat lines from the last tick;
3. depleted objects and dead NPCs whose time has come respawn (as new entities);
4. fishing spots may move along the shore (the old spot becomes stale);
5. the player's activity: a step of walking, a gathering attempt, a round of combat;
6. health regenerates (player 1 per 20 ticks, NPCs out of combat 1 per 10);
7. the simulated players may say something.
"""

from __future__ import annotations

from moonbus.world import actions, chat
from moonbus.world.content import FISHING_TILES
from moonbus.world.events import TICK
from moonbus.world.state import WorldState

__all__ = ["FISHING_SPOT_MOVE_CHANCE", "advance"]

FISHING_SPOT_MOVE_CHANCE = 1 / 40
_PLAYER_REGEN_TICKS = 20
_NPC_REGEN_TICKS = 10


def advance(state: WorldState) -> None:
    state.tick += 1
    state.event(TICK)
    _respawn(state)
    _move_fishing_spots(state)
    actions.advance_player(state)
    _regenerate(state)
    chat.chat_tick(state)


def _respawn(state: WorldState) -> None:
    due = [r for r in state.respawns if r.due <= state.tick]
    if due:
        state.respawns = [r for r in state.respawns if r.due > state.tick]
        for r in due:
            state.spawn(r.definition, r.x, r.y)


def _move_fishing_spots(state: WorldState) -> None:
    spots = sorted((o for o in state.objects.values() if o.definition.moves), key=lambda o: o.index)
    for spot in spots:
        if state.game_rng.random() >= FISHING_SPOT_MOVE_CHANCE:
            continue
        taken = {(o.x, o.y) for o in state.objects.values() if o.definition.moves}
        free = [t for t in FISHING_TILES if t not in taken]
        if not free:
            continue
        x, y = free[state.game_rng.randrange(len(free))]
        state.remove(spot, respawn_after=None)
        state.spawn(spot.definition, x, y)


def _regenerate(state: WorldState) -> None:
    player = state.player
    if state.tick % _PLAYER_REGEN_TICKS == 0 and player.health < state.max_health():
        player.health += 1
    if state.tick % _NPC_REGEN_TICKS == 0:
        for npc in state.npcs.values():
            if not npc.in_combat and npc.health < npc.definition.max_health:
                npc.health += 1
