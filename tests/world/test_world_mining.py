"""Gathering end to end through the Python API: walk, animate, ore, XP, level up, full inventory."""

from __future__ import annotations

from typing import Any

from world_support import Recorder, Until

from moonbus.world import World
from moonbus.world.content import OBJECTS
from moonbus.world.xp import xp_for_level


def mine_once(apis: dict[str, Any], step_until: Until, ore: str = "copper") -> Any:
    """Interact with the nearest rock of ``ore`` and step until the player is idle again."""
    player = apis["players"].local_player()
    rock = apis["game_objects"].find_nearest({"name": "Rocks", "action": "Mine", "ore": ore})
    assert rock is not None
    assert rock.interact({"action": "Mine"}) is True
    step_until(lambda: not player.is_moving() and not player.is_animating(), 200)
    return rock


def test_mining_walks_animates_then_gives_ore_and_xp(
    world: World, apis: dict[str, Any], recorder: Recorder, step_until: Until
) -> None:
    player = apis["players"].local_player()
    rock = apis["game_objects"].find_nearest({"name": "Rocks", "action": "Mine", "ore": "copper"})
    assert rock.name() == "Rocks" and rock.ore() == "Copper"
    assert rock.actions() == ["Mine"]
    start = (player.x(), player.y())
    assert rock.distance() > 1

    assert rock.interact({"action": "Mine"}) is True
    # The choice is a fact at once, before any tick.
    (action,) = recorder.of("game_action")
    assert action == {
        "interaction": "Mine Copper rocks",
        "action": "Mine",
        "target": "Copper rocks",
        "scene_x": rock.x(),
        "scene_y": rock.y(),
        "entity_idx": rock.index(),
        "tick": 0,
    }
    assert player.is_moving() and not player.is_animating()

    walked = step_until(lambda: not player.is_moving(), 100)
    # One tile per tick, diagonals allowed, stopping next to the rock.
    assert walked == max(abs(start[0] - rock.x()), abs(start[1] - rock.y())) - 1
    assert rock.distance() == 1
    assert player.is_animating()
    assert apis["inventory"].count("Copper ore") == 0

    step_until(lambda: apis["inventory"].count("Copper ore") == 1, 100)
    assert not player.is_animating()  # copper rocks give one ore, then deplete
    (change,) = recorder.of("inventory_changed")
    item = change["item"]
    assert (item.name(), item.id(), item.count(), change["change"]) == ("Copper ore", 436, 1, 1)
    (xp,) = recorder.of("xp_gained")
    assert xp == {"skill": "mining", "xp": 17, "total": 17, "tick": world.tick}
    assert apis["skills"].xp("mining") == 17
    assert apis["inventory"].items()[0].name() == "Copper ore"
    assert apis["inventory"].empty_slots() == 27
    # Ore lands after a swing (3 ticks), not on the tick the player arrived.
    assert xp["tick"] >= walked + 3
    order = recorder.types()
    assert order.index("inventory_changed") < order.index("xp_gained")


def test_mining_levels_up_per_the_xp_table(
    world: World, apis: dict[str, Any], recorder: Recorder, step_until: Until
) -> None:
    while apis["skills"].level("mining") < 3:
        ore = "copper" if apis["game_objects"].find_nearest({"ore": "copper"}) else "tin"
        if apis["game_objects"].find_nearest({"ore": ore}) is None:
            world.step()
            continue
        mine_once(apis, step_until, ore)
        assert world.tick < 1000
    ups = recorder.of("level_up")
    assert [(u["skill"], u["level"]) for u in ups] == [("mining", 2), ("mining", 3)]
    totals = [x["total"] for x in recorder.of("xp_gained")]
    first_level_two = next(t for t in totals if t >= xp_for_level(2))
    assert ups[0]["tick"] == next(
        x["tick"] for x in recorder.of("xp_gained") if x["total"] == first_level_two
    )
    assert apis["skills"].xp("mining") >= xp_for_level(3)


def test_depleted_rock_is_stale_and_respawns_as_a_new_entity(
    world: World, apis: dict[str, Any], recorder: Recorder, step_until: Until
) -> None:
    rock = mine_once(apis, step_until)
    assert apis["inventory"].count("copper ore") == 1
    assert rock.is_valid() is False
    # Getters keep the last known values; interact fails softly and emits nothing.
    assert (rock.name(), rock.ore(), rock.actions()) == ("Rocks", "Copper", ["Mine"])
    before = len(recorder.events)
    assert rock.interact({"action": "Mine"}) is False
    assert len(recorder.events) == before
    at = (rock.x(), rock.y())
    step_until(
        lambda: any(
            (o.x(), o.y()) == at for o in apis["game_objects"].find_all({"ore": "copper"})
        ),
        OBJECTS["copper"].respawn_ticks + 1,
    )
    (again,) = [o for o in apis["game_objects"].find_all({"ore": "copper"}) if (o.x(), o.y()) == at]
    assert again.is_valid() and again.index() != rock.index()
    assert rock.is_valid() is False


def test_level_requirement_refuses_without_a_game_action(
    apis: dict[str, Any], recorder: Recorder
) -> None:
    iron = apis["game_objects"].find_nearest({"ore": "iron"})
    assert iron.interact({"action": "Mine"}) is False
    oak = apis["game_objects"].find_nearest("Oak")
    assert oak.interact("Chop down") is False
    spot = apis["game_objects"].find_nearest("Fishing spot")
    assert spot.interact("Bait") is False  # needs fishing 5
    assert recorder.of("game_action") == []
    assert not apis["players"].local_player().is_moving()


def test_unknown_action_fails_softly(apis: dict[str, Any], recorder: Recorder) -> None:
    rock = apis["game_objects"].find_nearest({"ore": "tin"})
    assert rock.interact({"action": "Chop down"}) is False
    assert recorder.of("game_action") == []


def test_full_inventory_stops_mining_and_refuses_more(
    world: World, apis: dict[str, Any], recorder: Recorder, step_until: Until
) -> None:
    inventory = apis["inventory"]
    while not inventory.is_full():
        rocks = apis["game_objects"].find_all({"action": "Mine", "ore": ["copper", "tin"]})
        if not rocks:
            world.step()
            continue
        mine_once(apis, step_until, rocks[0].ore())
        assert world.tick < 2000
    assert inventory.empty_slots() == 0
    assert inventory.count("Copper ore") + inventory.count("Tin ore") == 28
    assert len(inventory.items()) == 28
    step_until(lambda: apis["game_objects"].find_nearest({"ore": "copper"}) is not None, 10)
    rock = apis["game_objects"].find_nearest({"ore": "copper"})
    actions_before = len(recorder.of("game_action"))
    assert rock.interact({"action": "Mine"}) is False
    assert len(recorder.of("game_action")) == actions_before


def test_full_inventory_stops_an_ongoing_fishing_action(
    world: World, apis: dict[str, Any], recorder: Recorder, step_until: Until
) -> None:
    player = apis["players"].local_player()
    inventory = apis["inventory"]
    while not inventory.is_full():
        if not player.is_animating() and not player.is_moving():
            spot = apis["game_objects"].find_nearest({"name": "Fishing spot", "action": "Net"})
            assert spot.interact({"action": "Net"}) is True
        world.step()
        assert world.tick < 3000
    # The catch that filled the last slot ended the activity on the same tick.
    assert not player.is_animating()
    assert inventory.count("Raw shrimps") + inventory.count("Raw anchovies") == 28
    last = recorder.of("inventory_changed")[-1]
    assert last["tick"] == world.tick
    world.step()
    assert not player.is_animating()
    spot = apis["game_objects"].find_nearest("Fishing spot")
    assert spot.interact("Net") is False
