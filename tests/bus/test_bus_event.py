"""Event: immutable once built, deep-frozen data, JSON round trip."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moonbus.bus import Bus, Event
from moonbus.bus.event import EMPTY_DATA, freeze, freeze_data, thaw, to_jsonable

FIELDS = ("type", "data", "seq", "tick", "ts", "source")


@dataclass(frozen=True)
class Item:
    """A value object, encoded to JSON through its dataclass fields."""

    name: str
    count: int


class Vec:
    """A value object with an explicit JSON encoding."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __moonbus_json__(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y}


def test_create_fills_every_field() -> None:
    event = Event.create("a", {"k": 1}, seq=3, tick=7, source="world", ts=1234)
    assert (event.type, dict(event.data), event.seq, event.tick, event.ts, event.source) == (
        "a", {"k": 1}, 3, 7, 1234, "world")


def test_create_defaults_ts_to_wall_clock_ms_and_source_to_host() -> None:
    import time

    before = int(time.time() * 1000)
    event = Event.create("a", None, seq=1)
    after = int(time.time() * 1000)
    assert before <= event.ts <= after + 1
    assert event.source == "host"
    assert event.tick is None
    assert dict(event.data) == {}


def test_positional_constructor_keeps_field_order() -> None:
    event = Event("a", freeze({"k": 1}), 5, None, 10, "host")
    assert (event.type, event.seq, event.ts, event.source) == ("a", 5, 10, "host")


@pytest.mark.parametrize("field", FIELDS)
def test_event_fields_cannot_be_assigned_or_deleted(field: str) -> None:
    event = Event.create("a", {"k": 1}, seq=1, ts=0)
    with pytest.raises(AttributeError):
        setattr(event, field, "changed")
    with pytest.raises(AttributeError):
        delattr(event, field)
    assert getattr(event, field) == getattr(Event.create("a", {"k": 1}, seq=1, ts=0), field)


def test_event_takes_no_new_attributes() -> None:
    event = Event.create("a", None, seq=1, ts=0)
    with pytest.raises(AttributeError):
        event.extra = 1  # type: ignore[attr-defined]


def test_data_is_read_only_also_nested() -> None:
    event = Event.create(
        "a", {"top": 1, "inner": {"deep": {"x": 1}}, "items": [1, [2, 3], {"y": 2}]}, seq=1, ts=0
    )
    with pytest.raises(TypeError):
        event.data["top"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        del event.data["top"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        event.data["inner"]["deep"]["x"] = 2
    items = event.data["items"]
    assert items == (1, (2, 3), event.data["items"][2])
    assert isinstance(items, tuple)
    assert isinstance(items[1], tuple)
    with pytest.raises(TypeError):
        items[2]["y"] = 3
    assert not hasattr(event.data, "update")


def test_data_is_a_private_copy_of_the_callers_mapping() -> None:
    payload: dict[str, Any] = {"n": 1, "nested": {"list": [1, 2]}, "flat": "s"}
    event = Event.create("a", payload, seq=1, ts=0)
    payload["n"] = 99
    payload["added"] = True
    payload["nested"]["list"].append(3)
    payload["nested"]["new"] = 1
    assert thaw(event.data) == {"n": 1, "nested": {"list": [1, 2]}, "flat": "s"}


def test_non_string_keys_become_strings() -> None:
    payload: dict[Any, Any] = {1: "one", "nested": {2: "two"}}
    event = Event.create("a", payload, seq=1, ts=0)
    assert thaw(event.data) == {"1": "one", "nested": {"2": "two"}}


def test_value_objects_are_kept_as_they_are() -> None:
    item = Item("ore", 3)
    event = Event.create("a", {"item": item, "items": [item]}, seq=1, ts=0)
    assert event.data["item"] is item
    assert event.data["items"][0] is item


def test_cyclic_or_too_deep_data_is_rejected() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(ValueError, match="nested more than 64 levels"):
        Event.create("a", cyclic, seq=1, ts=0)
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(70):
        node["d"] = {}
        node = node["d"]
    with pytest.raises(ValueError, match="64 levels"):
        Event.create("a", deep, seq=1, ts=0)


def test_to_dict_and_to_json_shape() -> None:
    event = Event.create(
        "trade", {"item": Item("ore", 3), "at": Vec(1, 2), "tags": ["a"]},
        seq=9, tick=4, source="world", ts=77,
    )
    expected = {
        "seq": 9, "tick": 4, "type": "trade",
        "data": {"item": {"name": "ore", "count": 3}, "at": {"x": 1, "y": 2}, "tags": ["a"]},
        "ts": 77, "source": "world",
    }
    assert event.to_dict() == expected
    line = event.to_json()
    assert "\n" not in line and " " not in line
    assert json.loads(line) == expected


def test_to_json_keeps_non_ascii_text() -> None:
    event = Event.create("chat", {"msg": "héllo ✓"}, seq=1, ts=0)
    assert "héllo ✓" in event.to_json()


def test_unencodable_value_names_its_type() -> None:
    event = Event.create("a", {"obj": object()}, seq=1, ts=0)
    with pytest.raises(TypeError, match="object is not JSON-encodable"):
        event.to_json()


def test_from_dict_round_trip_with_value_objects_coming_back_as_mappings() -> None:
    event = Event.create("a", {"item": Item("ore", 3)}, seq=2, tick=None, source="s", ts=5)
    back = Event.from_dict(json.loads(event.to_json()))
    assert back.to_dict() == event.to_dict()
    assert back.data["item"] == {"name": "ore", "count": 3}
    with pytest.raises(TypeError):
        back.data["item"]["name"] = "x"


def test_event_equality_is_by_value() -> None:
    a = Event.create("a", {"k": [1]}, seq=1, ts=0)
    b = Event.create("a", {"k": [1]}, seq=1, ts=0)
    assert a == b
    assert a != Event.create("a", {"k": [1]}, seq=2, ts=0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=4), json_values, max_size=5))
def test_json_round_trip_property(data: dict[str, Any]) -> None:
    event = Event.create("t", data, seq=1, ts=0)
    assert thaw(event.data) == data
    assert to_jsonable(event.data) == data
    assert Event.from_dict(json.loads(event.to_json())) == event


def test_bus_rejects_data_that_is_not_a_mapping(bus: Bus) -> None:
    from moonbus.errors import BusError

    with pytest.raises(BusError, match="must be a mapping, got list"):
        bus.emit("a", [1, 2])  # type: ignore[arg-type]
    assert bus.last_seq == 0


def test_bus_rejects_cyclic_data_without_consuming_a_seq(bus: Bus) -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(ValueError, match="cyclic"):
        bus.emit("a", cyclic)
    assert bus.emit("a").seq == 1


class Tag(str):
    """A str subclass: the fast path must not keep it as a key."""


payload_keys = st.one_of(st.text(max_size=3), st.integers(-3, 3),
                         st.builds(Tag, st.text(max_size=2)), st.booleans(), st.none())
payload_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3) | st.floats(allow_nan=False)
    | st.builds(Item, st.text(max_size=2), st.integers(0, 5)) | st.builds(Tag, st.text(max_size=2)),
    lambda children: st.lists(children, max_size=3) | st.tuples(children)
    | st.dictionaries(st.text(max_size=2), children, max_size=3),
    max_leaves=8,
)


def _shape(value: Any) -> Any:
    """Value plus the exact type of every key and container, for strict comparison."""
    if isinstance(value, Mapping):
        return ("map", type(value), sorted(((type(k), k, _shape(v)) for k, v in value.items()),
                                           key=repr))
    if isinstance(value, tuple):
        return ("tuple", type(value), [_shape(v) for v in value])
    return (type(value), value)


@given(st.dictionaries(payload_keys, payload_values, max_size=5))
def test_emit_freezes_exactly_like_freeze(data: dict[Any, Any]) -> None:
    """The bus inlines freeze_data's short path; the result must be the same."""
    with Bus() as bus:
        event = bus.emit("t", data)
    assert _shape(event.data) == _shape(freeze(data) if data else EMPTY_DATA)
    assert _shape(freeze_data(data)) == _shape(event.data)
    assert isinstance(event.data, MappingProxyType)


def test_an_event_inside_data_stays_an_event() -> None:
    cause = Event.create("cause", {"k": [1]}, seq=1, tick=2, source="s", ts=3)
    event = Event.create("effect", {"cause": cause, "chain": [cause]}, seq=2, ts=4)
    assert event.data["cause"] is cause
    assert event.data["chain"][0] is cause
    assert thaw(event.data)["cause"] is cause
    assert event.to_dict()["data"]["cause"] == cause.to_dict()
    assert json.loads(event.to_json())["data"]["chain"] == [cause.to_dict()]


def test_events_are_not_hashable_but_compare_by_value() -> None:
    event = Event.create("a", None, seq=1, ts=0)
    with pytest.raises(TypeError):
        hash(event)
