"""Type names and patterns: exact, "*" and "prefix*"; everything else is a BusError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moonbus.bus import Bus, Event
from moonbus.bus.patterns import MAX_TYPE_LENGTH, check_pattern, check_type_name, matches
from moonbus.errors import BusError

BAD_TYPE_NAMES: list[Any] = [
    "", "a b", "tab\there", "new\nline", "star*", "*", "p*x", "x" * (MAX_TYPE_LENGTH + 1),
    None, 3, b"bytes",
]
BAD_PATTERNS: list[Any] = ["", "**", "a**", "*a", "a*b", "a b*", " *", "x" * (MAX_TYPE_LENGTH + 2),
                           None, 1.5, ["a"]]


@pytest.mark.parametrize("name", BAD_TYPE_NAMES, ids=repr)
def test_bad_type_names_are_rejected_by_emit(bus: Bus, name: Any) -> None:
    with pytest.raises(BusError, match="event type"):
        bus.emit(name)
    assert bus.last_seq == 0
    assert bus.log() == []


@pytest.mark.parametrize("pattern", BAD_PATTERNS, ids=repr)
def test_bad_patterns_are_rejected_by_on_once_and_wait_for(bus: Bus, pattern: Any) -> None:
    import asyncio

    with pytest.raises(BusError):
        bus.on(pattern, lambda e: None)
    with pytest.raises(BusError):
        bus.once(pattern, lambda e: None)
    with pytest.raises(BusError):
        asyncio.run(bus.wait_for(pattern, timeout=1))
    assert bus.subscriptions() == []


def test_a_bad_name_is_rejected_every_time_not_only_the_first(bus: Bus) -> None:
    for _ in range(3):
        with pytest.raises(BusError):
            bus.emit("bad name")
    bus.emit("good")
    with pytest.raises(BusError):
        bus.emit("bad name")
    assert bus.last_seq == 1


def test_error_message_names_the_bad_value() -> None:
    with pytest.raises(BusError, match="'a b'"):
        check_type_name("a b")
    with pytest.raises(BusError, match="got int"):
        check_type_name(3)
    with pytest.raises(BusError, match=r"1\.\.128 characters"):
        check_type_name("")


def test_longest_allowed_name_is_accepted(bus: Bus) -> None:
    name = "n" * MAX_TYPE_LENGTH
    assert check_type_name(name) == name
    assert bus.emit(name).type == name
    assert check_pattern(name + "*") == name + "*"


def test_non_callable_handler_is_rejected(bus: Bus) -> None:
    with pytest.raises(BusError, match="not callable"):
        bus.on("a", 42)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("*", "anything", True),
        ("player:*", "player:join", True),
        ("player:*", "player:", True),
        ("player:*", "player", False),
        ("player:*", "players:join", False),
        ("player*", "players:join", True),
        ("player:join", "player:join", True),
        ("player:join", "player:joined", False),
        ("player:join", "player:jo", False),
    ],
)
def test_matches(pattern: str, event_type: str, expected: bool) -> None:
    assert matches(pattern, event_type) is expected


def test_wildcard_and_prefix_subscriptions_receive_the_right_events(bus: Bus) -> None:
    got: dict[str, list[str]] = {"*": [], "player:*": [], "player:join": [], "chat*": []}
    for pattern, seen in got.items():
        bus.on(pattern, _type_recorder(seen))
    for name in ("player:join", "player:leave", "chat", "chat:private", "tick", "player"):
        bus.emit(name)
    assert got == {
        "*": ["player:join", "player:leave", "chat", "chat:private", "tick", "player"],
        "player:*": ["player:join", "player:leave"],
        "player:join": ["player:join"],
        "chat*": ["chat", "chat:private"],
    }


def _type_recorder(seen: list[str]) -> Callable[[Event], None]:
    return lambda event: seen.append(event.type)


name_chars = st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs"),
                           blacklist_characters="*")


@given(st.text(name_chars, min_size=1, max_size=20), st.text(name_chars, max_size=10))
def test_prefix_pattern_matches_exactly_the_names_starting_with_it(prefix: str, rest: str) -> None:
    name = prefix + rest
    if any(ch.isspace() for ch in name):
        return  # names with other whitespace are covered by the rejection tests
    check_type_name(name)
    assert matches(prefix + "*", name)
    assert matches("*", name)
    assert matches(name, name)
    assert not matches(name + "x", name)


def test_event_type_is_kept_exactly(bus: Bus) -> None:
    seen: list[Event] = []
    bus.on("ünïcödé:名前", seen.append)
    event = bus.emit("ünïcödé:名前")
    assert seen == [event]
    assert event.type == "ünïcödé:名前"
