"""Rendering events and summaries as text (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from moonbus.bus.event import Event
from moonbus.store.render import (
    events_json,
    events_ndjson,
    events_table,
    snapshot_json,
    summary_lines,
)


@dataclass(frozen=True)
class Ore:
    name: str


def sample() -> list[Event]:
    return [
        Event.create("mine", {"ore": Ore("iron"), "n": 2}, seq=3, tick=12, ts=1_700_000_000_123),
        Event.create("chat", {"text": "héllo"}, seq=1, tick=None, source="player", ts=0),
        Event.create("mine", None, seq=2, tick=10, ts=1_700_000_000_000),
    ]


def test_events_json_is_an_array_in_seq_order() -> None:
    decoded = json.loads(events_json(sample()))
    assert [e["seq"] for e in decoded] == [1, 2, 3]
    assert decoded[2] == {
        "seq": 3,
        "tick": 12,
        "type": "mine",
        "data": {"ore": {"name": "iron"}, "n": 2},
        "ts": 1_700_000_000_123,
        "source": "host",
    }
    assert "héllo" in events_json(sample())
    assert events_json([]) == "[]"
    assert json.loads(events_json(sample(), indent=2)) == decoded
    assert "\n  " in events_json(sample(), indent=2)


def test_events_ndjson_one_line_each() -> None:
    text = events_ndjson(sample())
    lines = text.splitlines()
    assert text.endswith("\n")
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]
    assert lines[0] == sorted(sample(), key=lambda e: e.seq)[0].to_json()
    assert events_ndjson([]) == ""


def test_events_table_aligns_columns() -> None:
    table = events_table(sample())
    lines = table.splitlines()
    assert lines[0].split() == ["SEQ", "TICK", "TYPE", "SOURCE", "TIME", "(UTC)", "DATA"]
    assert lines[1].split()[:4] == ["1", "-", "chat", "player"]
    assert "1970-01-01 00:00:00.000" in lines[1]
    assert "2023-11-14 22:13:20.123" in lines[3]
    assert lines[3].endswith('{"ore":{"name":"iron"},"n":2}')
    type_column = lines[0].index("TYPE")
    assert all(line[type_column - 2 : type_column] == "  " for line in lines)
    assert lines[2][type_column:].startswith("mine")
    assert events_table([]) == "no events"


def test_snapshot_json_groups_by_type() -> None:
    events = sample()
    snapshot = {"mine": [events[0], events[2]], "chat": [events[1]]}
    decoded = json.loads(snapshot_json(snapshot))
    assert list(decoded) == ["chat", "mine"]
    assert [e["seq"] for e in decoded["mine"]] == [2, 3]


def test_summary_lines() -> None:
    assert summary_lines({"mine": 2, "chat": 10}) == "- chat: 10\n- mine: 2"
    assert summary_lines({}) == "no events stored"
    assert summary_lines({}, after_tick=40) == "no events stored after tick 40"
