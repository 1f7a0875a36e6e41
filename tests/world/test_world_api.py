"""The Lua-facing API: exposure, filters, arguments, inventory, skills, bank, stale handles."""

from __future__ import annotations

from typing import Any

import pytest
from world_support import Recorder, Until

from moonbus.errors import ConfigError, GameApiError
from moonbus.lua.exposure import exposed_methods, is_lua_api
from moonbus.world import World, api
from moonbus.world.content import PLAYER_SPAWN
from moonbus.world.state import distance


def test_apis_are_the_registered_globals(world: World) -> None:
    apis = world.apis()
    assert set(apis) == {"players", "npcs", "game_objects", "inventory", "skills", "chat", "bank"}
    assert all(is_lua_api(a) for a in apis.values())


@pytest.mark.parametrize(
    ("cls", "methods"),
    [
        (api.Players, {"local_player"}),
        (
            api.Player,
            {"name", "x", "y", "health", "max_health", "is_animating", "is_in_combat", "is_moving"},
        ),
        (api.GameObjects, {"find_nearest", "find_first", "find_all"}),
        (api.Npcs, {"find_nearest", "find_first", "find_all"}),
        (
            api.GameObject,
            {"name", "x", "y", "id", "index", "actions", "interact", "is_valid", "distance", "ore"},
        ),
        (
            api.Npc,
            {"name", "x", "y", "id", "index", "actions", "interact", "is_valid", "distance",
             "health", "max_health", "is_in_combat"},
        ),
        (api.Inventory, {"items", "count", "is_full", "empty_slots"}),
        (api.Skills, {"level", "xp"}),
        (api.Chat, {"send"}),
        (api.Bank, {"is_open", "open", "close", "deposit_all", "count"}),
    ],
)
def test_exactly_these_methods_reach_lua(cls: type, methods: set[str]) -> None:
    assert exposed_methods(cls) == methods


def test_bad_world_arguments(recorder: Recorder) -> None:
    with pytest.raises(ConfigError, match="seed"):
        World(seed="1", emit=recorder)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seed"):
        World(seed=True, emit=recorder)
    with pytest.raises(ConfigError, match="callable"):
        World(seed=1, emit=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="player name"):
        World(seed=1, emit=recorder, player_name=" ")


def test_local_player_starts_at_spawn(apis: dict[str, Any]) -> None:
    me = apis["players"].local_player()
    assert (me.name(), me.x(), me.y()) == ("Moonbus", *PLAYER_SPAWN)
    assert me.health() == me.max_health() == 10
    assert not (me.is_animating() or me.is_moving() or me.is_in_combat())


def test_find_nearest_first_and_all(apis: dict[str, Any]) -> None:
    objects = apis["game_objects"]
    me = apis["players"].local_player()
    trees = objects.find_all({"name": "Tree"})
    assert len(trees) == 4
    dists = [t.distance() for t in trees]
    assert dists == sorted(dists)
    assert objects.find_nearest("Tree").index() == trees[0].index()
    assert objects.find_first("Tree").index() == min(t.index() for t in trees)
    for t in trees:
        assert t.distance() == distance(me.x(), me.y(), t.x(), t.y())
    assert objects.find_nearest({"name": "Unicorn"}) is None
    assert objects.find_first("Unicorn") is None
    assert objects.find_all("Unicorn") == []
    everything = objects.find_all()
    assert len(everything) == len(objects.find_all(None)) == 26


def test_filter_keys(apis: dict[str, Any]) -> None:
    objects = apis["game_objects"]
    assert {o.name() for o in objects.find_all({"name": ["tree", "OAK"]})} == {"Tree", "Oak"}
    assert {o.name() for o in objects.find_all({"action": "chop down"})} == {"Tree", "Oak"}
    assert len(objects.find_all({"ore": "Copper"})) == 3
    assert len(objects.find_all({"ore": {1: "copper", 2: "tin"}})) == 6  # a Lua array as a dict
    copper_id = objects.find_nearest({"ore": "copper"}).id()
    assert {o.ore() for o in objects.find_all({"id": copper_id})} == {"Copper"}
    assert len(objects.find_all({"id": float(copper_id)})) == 3
    near = objects.find_all({"within": 6})
    assert near and all(o.distance() <= 6 for o in near)
    assert objects.find_all({"name": "Bank booth", "action": "Bank"})[0].actions() == ["Bank"]
    assert objects.find_all({"name": "Tree", "action": "Mine"}) == []
    assert apis["npcs"].find_nearest({"action": "attack", "name": "cow"}).name() == "Cow"


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ({"nmae": "Tree"}, "unknown filter key.*'nmae'"),
        ({"name": 3}, "'name' must be a non-empty string"),
        ({"name": ""}, "'name' must be a non-empty string"),
        ({"id": "x"}, "'id' must be a whole number"),
        ({"id": 1.5}, "'id' must be a whole number"),
        ({"within": -1}, "'within' cannot be negative"),
        ({"within": True}, "'within' must be a whole number"),
        (42, "a filter must be a table"),
    ],
)
def test_bad_filters_name_the_problem(apis: dict[str, Any], query: object, problem: str) -> None:
    with pytest.raises(GameApiError, match=problem):
        apis["game_objects"].find_nearest(query)
    with pytest.raises(GameApiError, match=problem):
        apis["npcs"].find_all(query)


@pytest.mark.parametrize(
    ("options", "problem"),
    [({"actoin": "Mine"}, "unknown option.*'actoin'"), ({"action": 1}, "must be a string"),
     (3.5, "expects")],
)
def test_bad_interact_options(apis: dict[str, Any], options: object, problem: str) -> None:
    rock = apis["game_objects"].find_nearest({"ore": "copper"})
    with pytest.raises(GameApiError, match=problem):
        rock.interact(options)


def test_skills(apis: dict[str, Any]) -> None:
    skills = apis["skills"]
    assert skills.level("mining") == 1 and skills.xp("mining") == 0
    assert skills.level("Hitpoints") == 10 and skills.xp("hitpoints") == 1154
    with pytest.raises(GameApiError, match="unknown skill 'minning'; skills are: attack"):
        skills.level("minning")
    with pytest.raises(GameApiError, match="expects an item or skill name"):
        skills.xp(None)


def test_inventory_arguments(apis: dict[str, Any]) -> None:
    inventory = apis["inventory"]
    assert inventory.items() == [] and inventory.empty_slots() == 28 and not inventory.is_full()
    assert inventory.count("Unicorn horn") == 0
    with pytest.raises(GameApiError):
        inventory.count(5)


def test_bank_walks_opens_deposits_and_closes(
    world: World, apis: dict[str, Any], recorder: Recorder, step_until: Until
) -> None:
    bank, inventory = apis["bank"], apis["inventory"]
    assert bank.deposit_all() is False and bank.close() is False
    cabbage = apis["game_objects"].find_nearest("Cabbage")
    assert cabbage.interact("Pick") is True
    assert recorder.of("game_action")[0]["interaction"] == "Pick Cabbage"
    step_until(lambda: inventory.count("cabbage") == 1, 100)
    assert recorder.of("xp_gained") == []  # picking gives no XP

    assert bank.open() is True
    assert recorder.of("game_action")[-1]["interaction"] == "Bank Bank booth"
    assert not bank.is_open() and apis["players"].local_player().is_moving()
    step_until(bank.is_open, 100)
    assert recorder.of("bank_opened") == [{"tick": world.tick}]
    assert bank.open() is True  # already open: nothing new
    assert len(recorder.of("bank_opened")) == 1

    assert bank.deposit_all() is True
    change = recorder.of("inventory_changed")[-1]
    assert (change["item"].name(), change["item"].count(), change["change"]) == ("Cabbage", 0, -1)
    assert inventory.empty_slots() == 28 and bank.count("CABBAGE") == 1
    assert world.snapshot()["bank"] == {"open": True, "items": {"Cabbage": 1}}

    assert bank.close() is True and not bank.is_open()
    assert recorder.of("bank_closed") == [{"tick": world.tick}]


def test_choosing_another_action_closes_the_bank(
    world: World, apis: dict[str, Any], recorder: Recorder, step_until: Until
) -> None:
    apis["bank"].open()
    step_until(apis["bank"].is_open, 100)
    apis["game_objects"].find_nearest("Tree").interact("Chop down")
    assert recorder.types()[-2:] == ["game_action", "bank_closed"]
    assert not apis["bank"].is_open()


def test_moved_fishing_spot_is_stale(
    world: World, apis: dict[str, Any], step_until: Until
) -> None:
    spot = apis["game_objects"].find_first("Fishing spot")
    where = (spot.x(), spot.y())
    step_until(lambda: not spot.is_valid(), 2000)
    assert (spot.x(), spot.y()) == where  # last known position
    assert spot.interact("Net") is False
    assert len(apis["game_objects"].find_all("Fishing spot")) == 2


def test_snapshot_is_plain_data(world: World, apis: dict[str, Any], step_until: Until) -> None:
    rock = apis["game_objects"].find_nearest({"ore": "tin"})
    rock.interact()
    world.step()
    snap = world.snapshot()
    assert snap["tick"] == 1
    assert snap["player"]["is_moving"] is True
    assert snap["player"]["activity"] == {"action": "Mine", "target": "Rocks"}
    assert snap["skills"]["hitpoints"] == {"level": 10, "xp": 1154}
    assert snap["inventory"] == {} and snap["empty_slots"] == 28
    step_until(lambda: apis["inventory"].count("Tin ore") == 1, 200)
    assert world.snapshot()["inventory"] == {"Tin ore": 1}
    assert world.snapshot()["skills"]["mining"] == {"level": 1, "xp": 17}
