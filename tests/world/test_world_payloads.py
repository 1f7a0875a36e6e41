"""Every event type and payload field is the one SPEC §9 names, and survives the bus's Event."""

from __future__ import annotations

import json

from world_support import Recorder

from moonbus.bus.event import Event
from moonbus.world import EVENT_TYPES, Item, World
from moonbus.world.items import Item as ItemClass

SPEC_FIELDS = {
    "tick": {"tick"},
    "game_action": {"interaction", "action", "target", "scene_x", "scene_y", "entity_idx", "tick"},
    "message_received": {"msg_type", "sender", "content", "tick"},
    "inventory_changed": {"item", "change", "tick"},
    "level_up": {"skill", "level", "tick"},
    "xp_gained": {"skill", "xp", "total", "tick"},
    "combat_started": {"target", "tick"},
    "combat_ended": {"target", "reason", "damage_dealt", "tick"},
    "bank_opened": {"tick"},
    "bank_closed": {"tick"},
}


def test_event_type_table_matches_the_spec() -> None:
    assert dict(EVENT_TYPES) == {name.upper(): name for name in SPEC_FIELDS}


def session() -> Recorder:
    recorder = Recorder()
    world = World(seed=21, emit=recorder)
    apis = world.apis()
    me = apis["players"].local_player()
    goals = [("game_objects", {"ore": ["copper", "tin"]})] * 6 + [("npcs", "Goblin")]
    for _ in range(2000):
        idle = not me.is_moving() and not me.is_animating()
        if idle and goals:
            finder, query = goals[0]
            target = apis[finder].find_nearest(query)
            if target is not None and target.interact():
                goals.pop(0)
        elif idle and not recorder.of("bank_opened"):
            apis["bank"].open()
        if apis["bank"].is_open():
            apis["bank"].deposit_all()
            apis["bank"].close()
            break
        world.step()
    return recorder


def test_payload_fields_are_exactly_the_spec_ones() -> None:
    recorder = session()
    seen = {e.type for e in recorder.events}
    assert seen == set(SPEC_FIELDS), f"missing: {set(SPEC_FIELDS) - seen}"
    for e in recorder.events:
        assert set(e.data) == SPEC_FIELDS[e.type], e
        assert e.data["tick"] == e.tick and e.source == "world"
    for d in recorder.of("game_action"):
        assert all(isinstance(d[k], int) for k in ("scene_x", "scene_y", "entity_idx"))
    for d in recorder.of("inventory_changed"):
        assert isinstance(d["item"], ItemClass) and isinstance(d["change"], int)
    for d in recorder.of("combat_ended"):
        assert d["reason"] in {"killed", "fled", "died"}


def test_payloads_freeze_and_encode_through_event() -> None:
    recorder = session()
    for seq, e in enumerate(recorder.events, start=1):
        event = Event.create(e.type, e.data, seq=seq, tick=e.tick, source=e.source)
        encoded = json.loads(event.to_json())
        assert encoded["type"] == e.type and encoded["data"]["tick"] == e.tick
    change = recorder.of("inventory_changed")[0]
    event = Event.create("inventory_changed", change, seq=1, tick=change["tick"])
    assert event.data["item"].name() == change["item"].name()  # still the value object
    assert event.to_dict()["data"]["item"] == {
        "name": change["item"].name(),
        "id": change["item"].id(),
        "count": change["item"].count(),
    }


def test_item_is_a_frozen_value() -> None:
    item = Item("Coal", 453, 2)
    assert (item.name(), item.id(), item.count()) == ("Coal", 453, 2)
    assert item == Item("Coal", 453, 2) and hash(item) == hash(Item("Coal", 453, 2))
    try:
        item.item_count = 3  # type: ignore[misc]
    except AttributeError:
        pass
    else:  # pragma: no cover - the assertion below reports it
        raise AssertionError("Item is mutable")
