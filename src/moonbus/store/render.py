"""Rendering stored events as text, for ``moonbus events`` and admin answers (pure).

Every function takes events (or a summary) and returns a string; nothing here
does I/O, so the CLI, the admin registry and RCON all print the same thing.
Events are always rendered in ``seq`` order, whatever order they came in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from moonbus.bus.event import Event

__all__ = [
    "events_json",
    "events_ndjson",
    "events_table",
    "snapshot_json",
    "summary_lines",
]

_TABLE_HEADER = ("SEQ", "TICK", "TYPE", "SOURCE", "TIME (UTC)", "DATA")
_RIGHT_ALIGNED = {0, 1}


def _in_order(events: Iterable[Event]) -> list[Event]:
    return sorted(events, key=lambda event: event.seq)


def events_json(events: Iterable[Event], *, indent: int | None = None) -> str:
    """A JSON array of ``{seq, tick, type, data, ts, source}`` objects in seq order."""
    return json.dumps(
        [event.to_dict() for event in _in_order(events)],
        ensure_ascii=False,
        indent=indent,
        separators=None if indent is not None else (",", ":"),
    )


def events_ndjson(events: Iterable[Event]) -> str:
    """One compact JSON object per line, each line ending in a newline ("" for none)."""
    return "".join(event.to_json() + "\n" for event in _in_order(events))


def snapshot_json(snapshot: Mapping[str, Iterable[Event]], *, indent: int | None = None) -> str:
    """A JSON object ``{type: [events...]}``, types sorted, each list in seq order."""
    document = {
        event_type: [event.to_dict() for event in _in_order(snapshot[event_type])]
        for event_type in sorted(snapshot)
    }
    return json.dumps(
        document,
        ensure_ascii=False,
        indent=indent,
        separators=None if indent is not None else (",", ":"),
    )


def _time(ts: int) -> str:
    moment = datetime.fromtimestamp(ts / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{ts % 1000:03d}"


def events_table(events: Iterable[Event]) -> str:
    """Aligned text columns with a header line; data as compact JSON. No trailing newline."""
    rows = [
        (
            str(event.seq),
            "-" if event.tick is None else str(event.tick),
            event.type,
            event.source,
            _time(event.ts),
            json.dumps(event.to_dict()["data"], separators=(",", ":"), ensure_ascii=False),
        )
        for event in _in_order(events)
    ]
    if not rows:
        return "no events"
    table = [_TABLE_HEADER, *rows]
    widths = [max(len(row[column]) for row in table) for column in range(len(_TABLE_HEADER))]
    lines = []
    for row in table:
        cells = [
            cell.rjust(widths[column]) if column in _RIGHT_ALIGNED else cell.ljust(widths[column])
            for column, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def summary_lines(summary: Mapping[str, int], *, after_tick: int | None = None) -> str:
    """``- <type>: <count>`` one per line (types sorted), or a line saying none are stored."""
    lines = [f"- {event_type}: {summary[event_type]}" for event_type in sorted(summary)]
    if lines:
        return "\n".join(lines)
    if after_tick is None:
        return "no events stored"
    return f"no events stored after tick {after_tick}"
