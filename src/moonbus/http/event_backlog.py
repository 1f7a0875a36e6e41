"""What a resuming SSE client missed: committed events after its ``Last-Event-ID``.

Read on a worker thread (the server's thread pool), never on the event loop:
a durable store query can take milliseconds. Frames are encoded here too, so
the loop thread only writes bytes.

Where the events come from: the bus's in-memory log holds the newest events
(all types, also other processes' on a shared Redis store), so the part of the
backlog it covers is read from it; events older than its oldest one come from
the durable event store when one is attached (``EventStore.query`` in pages
of ``page`` events, after ``flush`` so a fast-mode store has written them).
Without a store, events older than the log are gone: the client gets one
``event: gap`` frame saying which seqs it cannot have, then what the log has.

No gap, no duplicate with the live feed: the caller joins the hub *before*
reading (so every event committed from then on is queued for the client),
and each page carries ``covered``, the newest seq the backlog has accounted
for; live events up to it are skipped (``StreamClient.covered``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from json import encoder as json_encoder
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any

from moonbus.bus.event import Event, to_jsonable

if TYPE_CHECKING:
    from moonbus.bus.bus import Bus
    from moonbus.store.base import EventStore

__all__ = ["BacklogPage", "encode_event", "gap_frame", "read_backlog"]


@dataclass(frozen=True)
class BacklogPage:
    """Encoded frames of one page and the newest seq accounted for so far."""

    frames: bytes
    covered: int
    count: int  # events in ``frames``


def _jsonable(value: object) -> object:
    """The encoder's fallback for what JSON has no type for (frozen mappings,
    value objects): ``to_jsonable``, which the encoder then writes."""
    return to_jsonable(value)


# One C encoder, built once: ``json.dumps`` with options builds a new one per
# call, which cost more than the encoding itself (about 3x per event). It
# holds no state between calls (no circular-reference markers), so any thread
# may use it. Compact, UTF-8, NaN as ``Event.to_json`` writes it.
_MAKE_ENCODER: Any = getattr(json_encoder, "c_make_encoder", None)
_ENCODE: Any = None if _MAKE_ENCODER is None else _MAKE_ENCODER(
    None, _jsonable, encode_basestring, None, ":", ",", False, False, True)


def _event_json(event: Event) -> str:
    """``Event.to_json()``, the same text, for less: the fixed fields are
    formatted, only the type, data and source go through the C encoder, and
    frozen mappings are converted only where they are (``_jsonable``)."""
    if _ENCODE is None:  # no C accelerator (PyPy): the reference encoder
        return event.to_json()
    tick = "null" if event.tick is None else str(int(event.tick))
    data = "".join(_ENCODE(event.data, 0))
    return (f'{{"seq":{int(event.seq)},"tick":{tick},"type":{encode_basestring(event.type)},'
            f'"data":{data},"ts":{int(event.ts)},"source":{encode_basestring(event.source)}}}')


def encode_event(event: Event) -> tuple[int, bytes]:
    """``(seq, SSE frame)``: ``id: <seq>``, ``event: event``, ``data: <event JSON>``.

    The JSON is what ``GET /api/events`` answers: a non-finite float in the
    data (a script's ``0/0``) is the text ``"NaN"``/``"Infinity"``, never the
    bare ``NaN`` that ``Event.to_json`` writes and ``JSON.parse`` refuses (the
    console would drop the event). Only text that holds those words takes the
    slower, exact path."""
    text = _event_json(event)
    if "NaN" in text or "Infinity" in text:
        from moonbus.http.responses import json_bytes  # needs starlette: only here

        data = json_bytes(event.to_dict())
    else:
        data = text.encode("utf-8")
    return event.seq, b"id: %d\nevent: event\ndata: %s\n\n" % (event.seq, data)


def gap_frame(after_seq: int, first_seq: int, reason: str) -> bytes:
    """``event: gap``: the seqs after ``after_seq`` and before ``first_seq`` are lost."""
    data = json.dumps({"after_seq": after_seq, "first_seq": first_seq, "reason": reason})
    return f"event: gap\ndata: {data}\n\n".encode()


def _page(events: list[Event], wants: Callable[[Event], bool] | None, covered: int) -> BacklogPage:
    chosen = events if wants is None else [e for e in events if wants(e)]
    return BacklogPage(b"".join(encode_event(e)[1] for e in chosen), covered, len(chosen))


def read_backlog(
    bus: Bus,
    store: EventStore | None,
    after_seq: int,
    wants: Callable[[Event], bool] | None,
    page: int,
) -> Iterator[BacklogPage]:
    """Pages of the committed events after ``after_seq`` that ``wants`` selects,
    in seq order (see the module docstring). Worker thread."""
    log = bus.log(after_seq=after_seq)
    if not log:
        return
    first = log[0].seq
    if first > after_seq + 1:
        if store is None:
            yield BacklogPage(gap_frame(after_seq, first, (
                "older events are no longer in the in-memory log and no event store "
                "is attached")), after_seq, 0)
        else:
            store.flush()
            cursor = after_seq
            while cursor < first - 1:
                events = store.query(after_seq=cursor, limit=page)
                older = [e for e in events if e.seq < first]
                if older:
                    cursor = older[-1].seq
                    yield _page(older, wants, cursor)
                if len(older) < len(events) or len(events) < page:
                    break
    for start in range(0, len(log), page):
        chunk = log[start:start + page]
        yield _page(chunk, wants, chunk[-1].seq)
