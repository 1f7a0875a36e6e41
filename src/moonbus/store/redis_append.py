"""Building the Redis event store's append calls (pure: no I/O).

An append is one run of an append script (``redis_scripts``) for a batch of
events: the fixed keys, then the seq and tick index of each distinct type of
the batch, and per event ``EVENT_FIELDS`` values. Each call also carries the
store instance's origin id and an *op number* with the lowest op number still
in flight, so that a call re-sent after a lost reply is recognised by the
script (and answered as the first time) instead of being applied twice.

Threads: ``OpNumbers`` may be used from any thread (it locks); the functions
are pure.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from moonbus.bus.event import Event
from moonbus.errors import StoreError
from moonbus.store.event_codec import encode_data
from moonbus.store.redis_scripts import Keys

__all__ = ["OpNumbers", "append_call", "refused_append"]


class OpNumbers:
    """Op numbers of one store instance, and which are still in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 1
        self._in_flight: set[int] = set()

    def start(self) -> tuple[int, int]:
        """A new op number and the lowest op number in flight (itself included):
        every op below that one has its answer and will never be re-sent."""
        with self._lock:
            op = self._next
            self._next += 1
            self._in_flight.add(op)
            return op, min(self._in_flight)

    def finish(self, op: int) -> None:
        with self._lock:
            self._in_flight.discard(op)


def _json(event: Event, url: str) -> bytes:
    try:
        return encode_data(event.data).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise StoreError(
            f"event store {url}: event {event.type!r} has data that cannot be stored as "
            f"JSON: {exc}"
        ) from exc


def append_call(
    keys: Keys,
    ops_key: bytes,
    events: Sequence[Event],
    *,
    explicit: bool,
    wants: Callable[[str], bool],
    url: str,
) -> tuple[list[bytes], list[bytes]]:
    """The KEYS and the per-event ARGV of one append script run (the caller puts
    origin, op number and floor in front of the ARGV). ``explicit``: the events'
    own seqs are sent (``append_put``); else the server assigns them.
    Raises ``StoreError`` (nothing sent) when an event's data is not JSON."""
    type_index: dict[str, int] = {}
    names = [keys.stream, keys.seq, keys.count, keys.meta, keys.transit, ops_key]
    fields: list[bytes] = []
    for event in events:
        index = type_index.get(event.type)
        if index is None:
            index = type_index[event.type] = len(type_index) + 1
            names.extend(keys.of_type(event.type))
        fields += (
            b"%d" % event.seq if explicit else b"",
            event.type.encode("utf-8"),
            b"%d" % index,
            b"" if event.tick is None else b"%d" % event.tick,
            b"%d" % event.ts,
            event.source.encode("utf-8"),
            _json(event, url),
            b"1" if wants(event.type) else b"0",
        )
    return names, fields


def refused_append(message: str, *, url: str, first: int) -> StoreError:
    """The ``StoreError`` for an append script's error reply ``message``
    (``redis_scripts``: ``MOONBUS lost <counter> <floor>``, ``MOONBUS seq
    <current>``, or anything Redis itself refused). ``first``: the batch's
    first seq (explicit appends)."""
    if message.startswith("MOONBUS lost "):
        counter, floor = (int(part) for part in message.split()[2:4])
        return StoreError(
            f"event store {url} lost its data: seq went back from {floor} to {counter} "
            "(Redis restarted without its data?); events up to there are gone from the "
            f"stream. The seq counter is moved back up to {floor}, so numbering and delivery "
            "go on after it; this event was not appended (emit it again)",
            kind="data_loss",
        )
    if message.startswith("MOONBUS seq "):
        return StoreError(
            f"event store {url}: event seq {first} is not after seq {message.rsplit(' ', 1)[-1]}"
        )
    return StoreError(f"event store {url}: Redis refused the append: {message}", kind="refused")
