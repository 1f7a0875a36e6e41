"""Combat through the Python API: start, kill, flee, die, XP, loot, respawn."""

from __future__ import annotations

from typing import Any

from world_support import Recorder, Until

from moonbus.world import World
from moonbus.world.content import NPCS, PLAYER_SPAWN


def test_killing_a_goblin(
    world: World, apis: dict[str, Any], recorder: Recorder, step_until: Until
) -> None:
    player = apis["players"].local_player()
    goblin = apis["npcs"].find_nearest({"name": "Goblin", "action": "Attack"})
    assert goblin.actions() == ["Attack"]
    assert goblin.health() == goblin.max_health() == 5
    assert goblin.interact({"action": "Attack"}) is True
    (action,) = recorder.of("game_action")
    assert action["interaction"] == "Attack"
    assert (action["action"], action["target"], action["entity_idx"]) == (
        "Attack",
        "Goblin",
        goblin.index(),
    )
    assert not player.is_in_combat()

    step_until(player.is_in_combat, 50)
    assert recorder.of("combat_started") == [{"target": "Goblin", "tick": world.tick}]
    assert goblin.is_in_combat() and player.is_animating()

    step_until(lambda: not player.is_in_combat(), 300)
    (ended,) = recorder.of("combat_ended")
    assert ended == {"target": "Goblin", "reason": "killed", "damage_dealt": 5, "tick": world.tick}
    assert goblin.is_valid() is False and goblin.health() == 0
    assert goblin.interact("Attack") is False

    gains = recorder.of("xp_gained")
    assert {g["skill"] for g in gains} == {"attack", "strength", "defence", "hitpoints"}
    for skill in ("attack", "strength", "defence"):
        assert apis["skills"].xp(skill) == sum(g["xp"] for g in gains if g["skill"] == skill) > 0
    assert apis["inventory"].count("Bones") == 1
    # The drop follows the fight's end, in the same tick.
    after = [e for e in recorder.events if e.type not in ("tick", "message_received")]
    end = next(i for i, e in enumerate(after) if e.type == "combat_ended")
    drop = after[end + 1]
    assert drop.type == "inventory_changed" and drop.data["item"].name() == "Bones"
    assert drop.tick == ended["tick"]

    at = (goblin.x(), goblin.y())
    step_until(
        lambda: any((n.x(), n.y()) == at for n in apis["npcs"].find_all("Goblin")),
        NPCS["goblin"].respawn_ticks + 1,
    )
    fresh = next(n for n in apis["npcs"].find_all("Goblin") if (n.x(), n.y()) == at)
    assert fresh.is_valid() and fresh.health() == 5 and fresh.index() != goblin.index()


def test_chicken_feathers_stack_in_one_slot(
    world: World, apis: dict[str, Any], step_until: Until
) -> None:
    player = apis["players"].local_player()
    for _ in range(2):
        chicken = apis["npcs"].find_nearest("Chicken")
        assert chicken.interact() is True  # nil action: the first one, "Attack"
        step_until(player.is_in_combat, 50)
        step_until(lambda: not player.is_in_combat(), 300)
    assert apis["inventory"].count("Feather") == 10
    feathers = [i for i in apis["inventory"].items() if i.name() == "Feather"]
    assert [f.count() for f in feathers] == [10]
    assert apis["inventory"].count("Bones") == 2


def test_turning_away_mid_fight_is_fleeing(
    world: World, apis: dict[str, Any], recorder: Recorder, step_until: Until
) -> None:
    player = apis["players"].local_player()
    cow = apis["npcs"].find_nearest("Cow")
    cow.interact("Attack")
    step_until(player.is_in_combat, 50)
    world.step()
    tree = apis["game_objects"].find_nearest("Tree")
    assert tree.interact("Chop down") is True
    types = recorder.types()
    assert types[-2:] == ["game_action", "combat_ended"]
    ended = recorder.of("combat_ended")[-1]
    assert ended["reason"] == "fled" and ended["target"] == "Cow"
    assert ended["damage_dealt"] == NPCS["cow"].max_health - cow.health()
    assert not player.is_in_combat() and not cow.is_in_combat()
    assert cow.is_valid()
    assert player.is_moving()


def test_clicking_the_same_target_again_keeps_the_fight(
    world: World, apis: dict[str, Any], recorder: Recorder, step_until: Until
) -> None:
    player = apis["players"].local_player()
    goblin = apis["npcs"].find_nearest("Goblin")
    goblin.interact("Attack")
    step_until(player.is_in_combat, 50)
    assert goblin.interact("Attack") is True
    assert player.is_in_combat()
    assert len(recorder.of("game_action")) == 2
    assert recorder.of("combat_ended") == []


def test_dying_to_the_hill_giant(
    world: World, apis: dict[str, Any], recorder: Recorder, step_until: Until
) -> None:
    player = apis["players"].local_player()
    giant = apis["npcs"].find_nearest("Hill Giant")
    assert giant.interact("Attack") is True
    step_until(player.is_in_combat, 100)
    step_until(lambda: not player.is_in_combat(), 500)
    (ended,) = recorder.of("combat_ended")
    assert ended["reason"] == "died" and ended["target"] == "Hill Giant"
    assert ended["damage_dealt"] < NPCS["hill_giant"].max_health
    assert (player.x(), player.y()) == PLAYER_SPAWN
    assert player.health() == player.max_health() == 10
    assert giant.is_valid() and not giant.is_in_combat()
    assert not player.is_animating() and not player.is_moving()
