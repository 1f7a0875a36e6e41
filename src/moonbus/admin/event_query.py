"""``events.get``: the one event query of every front end (CLI, RCON, HTTP).

``events.get <type|pattern> [after_tick] [after_tick=N] [after_seq=N] [limit=N]``
answers the matching events as a JSON array in seq order (the text RCON and
the CLI print) and, as ``Answer.data``, ``{"events": [...], "last_seq": N}``
for the HTTP API (``GET /api/events``), so the query is written once.

* ``type`` is an event type or a bus pattern: ``*`` (every type) or
  ``prefix*`` (``player:*``), checked like a subscription pattern;
* ``after_tick`` keeps events with a greater tick, ``after_seq`` events with a
  greater seq (page forward with ``after_seq=<last_seq>``);
* ``limit`` keeps the first ``limit`` events after ``after_seq`` when it is
  given, else the newest ``limit`` (still in seq order), as ``Bus.log`` does;
* ``last_seq`` is the seq of the last event answered, ``None`` when none.

Events come from the durable event store when one is attached (flushed
first), else from the bus's bounded in-memory log. A prefix pattern against
a store is turned into the type names the store holds (its summary), so the
store still filters and limits in its own query.

Threads: any (RCON's workers, the HTTP server's thread pool); the store and
the bus log are safe to read from any thread.
"""

from __future__ import annotations

from collections.abc import Sequence

from moonbus.admin.registry import Answer, parse_int
from moonbus.bus import Bus, Event
from moonbus.bus.patterns import check_pattern, matches
from moonbus.errors import AdminError
from moonbus.store.base import EventStore
from moonbus.store.render import events_json

__all__ = ["EVENTS_GET_USAGE", "EventQuery", "parse_query", "query_events"]

EVENTS_GET_USAGE = "events.get <type> [after_tick] [after_seq=N] [limit=N]"
_KEYS = ("after_tick", "after_seq", "limit")
MAX_BOUND = 2**63 - 1  # SQLite's largest INTEGER


class EventQuery:
    """A checked ``events.get`` query (pattern plus optional bounds)."""

    __slots__ = ("after_seq", "after_tick", "limit", "pattern")

    def __init__(self, pattern: str, after_tick: int | None = None,
                 after_seq: int | None = None, limit: int | None = None) -> None:
        self.pattern = check_pattern(pattern)
        for name, value in (("after_tick", after_tick), ("after_seq", after_seq),
                            ("limit", limit)):
            if value is not None and value < 0:
                raise AdminError(f"{name} must not be negative, got {value}")
            if value is not None and value > MAX_BOUND:  # a store could not bind it (500)
                raise AdminError(f"{name} must be at most 2^63-1 ({MAX_BOUND}), got {value}")
        self.after_tick = after_tick
        self.after_seq = after_seq
        self.limit = limit


def parse_query(args: Sequence[str]) -> EventQuery:
    """The words after ``events.get``: a pattern, then a bare ``after_tick``
    (the historical form) and/or ``key=value`` bounds, each at most once."""
    values: dict[str, int] = {}
    for index, word in enumerate(args[1:]):
        key, sep, raw = word.partition("=")
        if not sep:
            if index != 0:
                raise AdminError(f"usage: {EVENTS_GET_USAGE}")
            key, raw = "after_tick", word
        if key not in _KEYS:
            raise AdminError(f"unknown events.get bound {key!r} (known: {', '.join(_KEYS)})")
        if key in values:
            raise AdminError(f"{key} is given twice")
        values[key] = parse_int(raw, key)
    return EventQuery(args[0], **values)


def _from_store(store: EventStore, q: EventQuery) -> list[Event]:
    store.flush()
    types: list[str] | None
    if q.pattern == "*":
        types = None
    elif q.pattern.endswith("*"):
        types = [t for t in store.summary(q.after_tick) if matches(q.pattern, t)]
        if not types:
            return []
    else:
        types = [q.pattern]
    return store.query(after_tick=q.after_tick, after_seq=q.after_seq, types=types,
                       limit=q.limit, newest=q.after_seq is None and q.limit is not None)


def _from_log(bus: Bus, q: EventQuery) -> list[Event]:
    events = [
        e for e in bus.log(after_seq=q.after_seq)
        if matches(q.pattern, e.type)
        and (q.after_tick is None or (e.tick is not None and e.tick > q.after_tick))
    ]
    if q.limit is not None:
        if q.after_seq is not None:
            events = events[: q.limit]
        else:
            events = events[-q.limit :] if q.limit else []
    return events


def query_events(store: EventStore | None, bus: Bus, args: Sequence[str]) -> Answer:
    """Run ``events.get`` against ``store`` (or ``bus``'s log when there is no
    store): text is the JSON array, data the page."""
    q = parse_query(args)
    events = _from_store(store, q) if store is not None else _from_log(bus, q)
    events.sort(key=lambda e: e.seq)
    return Answer(
        events_json(events),
        data={"events": [e.to_dict() for e in events],
              "last_seq": events[-1].seq if events else None},
    )
