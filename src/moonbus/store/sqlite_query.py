"""SQL for reading the SQLite event store, and the row <-> Event codec (pure).

Query planning is explicit rather than left to SQLite's guesses, because the
obvious ``WHERE tick > ? ORDER BY seq`` makes SQLite walk the whole table in
rowid order. Instead:

* after a tick, while ticks never went backwards (``ticks_ordered``): then
  ``(tick, seq)`` order is ``seq`` order for every row with a tick, so one
  probe of the tick index finds the first matching seq and the rest is a rowid
  range read in table order (for one type: a walk of the ``(type, tick)``
  index); ``LIMIT`` stops early and nothing is sorted;
* after a tick, when some tick did go backwards: range-scan the tick index
  (``INDEXED BY``) and sort only the matching rows by seq;
* after a seq (with or without a tick): a rowid range, or the ``(type, seq)``
  index for one type;
* several types: one indexed query per type, merged by seq here.

Row layout: ``(seq, tick, type, ts, source, data_json)``. A row read from a
file is checked before it becomes an event or an output line
(:func:`check_row`): SQLite does not enforce column types, so a crafted file
can hold a text ``tick`` (which would otherwise be spliced into NDJSON) or
data that is not a JSON object; such a row is a ``StoreError`` naming its seq.
"""

from __future__ import annotations

import heapq
import itertools
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from moonbus.bus.event import Event, freeze, to_jsonable
from moonbus.errors import StoreError

__all__ = [
    "COUNT_TYPE",
    "COUNT_TYPE_AFTER_TICK",
    "INSERT",
    "PRUNE_BY_COUNT",
    "PRUNE_BY_TICK",
    "Row",
    "Select",
    "StoredData",
    "check_row",
    "decode_data",
    "encode_data",
    "merge_rows",
    "plan_selects",
    "read_meta",
    "row_json_line",
    "row_to_event",
    "select_rows",
]

Row = tuple[int, int | None, str, int, str, str]

COLUMNS = "seq, tick, type, ts, source, data"
INSERT = f"INSERT INTO events ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
TYPES = (
    "WITH RECURSIVE t(type) AS ("
    " SELECT min(type) FROM events"
    " UNION ALL"
    " SELECT (SELECT min(type) FROM events WHERE type > t.type) FROM t WHERE t.type IS NOT NULL"
    ") SELECT type FROM t WHERE type IS NOT NULL"
)
SET_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
# Retention: each an index range on (type, tick) or (type, seq), never a table scan.
PRUNE_BY_TICK = "DELETE FROM events WHERE type = ? AND tick <= ?"
PRUNE_BY_COUNT = (
    "DELETE FROM events WHERE type = ? AND seq <= "
    "(SELECT seq FROM events WHERE type = ? ORDER BY seq LIMIT 1 OFFSET ?)"
)
COUNT_TYPE = "SELECT count(*) FROM events WHERE type = ?"
COUNT_TYPE_AFTER_TICK = "SELECT count(*) FROM events WHERE type = ? AND tick > ?"
GET_META = "SELECT value FROM meta WHERE key = ?"

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def read_meta(conn: sqlite3.Connection, key: str, default: int) -> int:
    """One integer from the ``meta`` table, or ``default`` when it was never set."""
    row = conn.execute(GET_META, (key,)).fetchone()
    return default if row is None else int(row[0])


def _json_default(value: object) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    return to_jsonable(value)


# Stateless once built; reusing them saves building a codec per event.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)
_DECODER = json.JSONDecoder(object_hook=MappingProxyType)


def _c_encoder() -> Callable[[Any], str] | None:
    """The C encoder ``json.dumps`` itself uses, built once (None without the C
    accelerator). Same options as ``_ENCODER``, so the same bytes; it skips the
    per-call setup of ``JSONEncoder.encode``, which is half the cost of a small
    event. ``markers=None`` drops cycle tracking: frozen event data cannot be
    cyclic, and a value object that recurses forever fails with RecursionError."""
    make = getattr(json.encoder, "c_make_encoder", None)
    quote = getattr(json.encoder, "c_encode_basestring", None)
    if make is None or quote is None:
        return None
    encode = make(None, _json_default, quote, None, ":", ",", False, False, True)

    def run(data: Any) -> str:
        return "".join(encode(data, 0))

    return run


_FAST_ENCODE = _c_encoder()


def encode_data(data: Mapping[str, Any]) -> str:
    """Event data as compact JSON, byte-identical to ``Event.to_dict()['data']`` encoded
    with ``Event.to_json``'s options. The C encoder does the work; read-only
    mappings and value objects go through ``default``."""
    if type(data) is StoredData:
        return data.text
    if _FAST_ENCODE is not None:
        return _FAST_ENCODE(data)
    return _ENCODER.encode(data)


def decode_data(text: str) -> Mapping[str, Any]:
    """Stored JSON back to frozen event data (mappings read-only, arrays as tuples).

    Raises ``ValueError`` with a clear reason when the text is not a JSON
    object, has trailing bytes, or is nested too deeply to decode (JSON's own
    recursion limit, or the 64 levels event data may have).
    """
    if text == "{}":
        return _EMPTY
    try:
        if "[" in text:
            frozen: Any = freeze(json.loads(text))
        else:
            # No arrays anywhere: freezing is just wrapping each object, done while
            # parsing. raw_decode: our own compact JSON has no whitespace to skip.
            frozen, end = _DECODER.raw_decode(text)
            if end != len(text):
                raise ValueError(f"extra data after the JSON value at offset {end}")
    except RecursionError:
        raise ValueError("the data is nested too deeply to decode") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"the data is not valid JSON ({exc})") from None
    if not isinstance(frozen, Mapping):
        raise ValueError(f"the data is a JSON {type(frozen).__name__}, not an object")
    return frozen


class StoredData(Mapping[str, Any]):
    """Read-only event data that is decoded from its stored JSON on first use.

    Queries often need only seq, tick and type (counting, paging, re-exporting),
    so paying for JSON decoding of every row up front is wasted work. Any read
    (``[]``, ``len``, iteration, ``==``) decodes once into frozen data (nested
    mappings read-only, arrays as tuples). Safe to share between threads: two
    threads racing on the first read decode equal values and either one is kept.
    """

    __slots__ = ("_data", "seq", "text")

    def __init__(
        self, text: str, seq: int | None = None, decoded: Mapping[str, Any] | None = None
    ) -> None:
        self.text = text
        self.seq = seq
        self._data = decoded  # given when the caller already decoded ``text``

    def _decoded(self) -> Mapping[str, Any]:
        data = self._data
        if data is None:
            try:
                data = self._data = decode_data(self.text)
            except ValueError as exc:
                raise StoreError(f"stored event seq {self.seq}: {exc}") from None
        return data

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __contains__(self, key: object) -> bool:
        return key in self._decoded()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StoredData):
            return self.text == other.text or self._decoded() == other._decoded()
        if isinstance(other, Mapping):
            return dict(self._decoded()) == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"StoredData({dict(self._decoded())!r})"


def check_row(row: tuple[Any, ...]) -> str | None:
    """What is wrong with the column types of a row read from a file (None when
    nothing). Cheap: a few type checks; the data's JSON is checked when decoded."""
    seq, tick, event_type, ts, source, data = row
    if type(seq) is not int:
        return f"seq {seq!r} is not an integer"
    for name, value, ok in (
        ("tick", tick, tick is None or type(tick) is int),
        ("type", event_type, type(event_type) is str),
        ("ts", ts, type(ts) is int),
        ("source", source, type(source) is str),
        ("data", data, type(data) is str),
    ):
        if not ok:
            return f"its {name} is a {type(value).__name__}, not what the store writes"
    return None


def _checked(row: Row) -> Row:
    problem = check_row(row)
    if problem is not None:
        raise StoreError(f"stored event seq {row[0]}: {problem}")
    return row


def row_to_event(row: Row, decoded: Mapping[str, Any] | None = None) -> Event:
    """Rebuild the committed event from its row (data decoded on first use, or
    ``decoded`` when the caller already did)."""
    seq, tick, event_type, ts, source, data = _checked(row)
    return Event(event_type, StoredData(data, seq, decoded), seq, tick, ts, source)


def row_json_line(row: Row) -> str:
    """The row as one NDJSON line (no newline), identical to ``Event.to_json()``,
    built without decoding the stored data (its columns are type-checked, so
    nothing but the data text is spliced in)."""
    seq, tick, event_type, ts, source, data = _checked(row)
    tick_text = "null" if tick is None else str(tick)
    return (
        f'{{"seq":{seq},"tick":{tick_text},"type":{json.dumps(event_type, ensure_ascii=False)},'
        f'"data":{data},"ts":{ts},"source":{json.dumps(source, ensure_ascii=False)}}}'
    )


@dataclass(frozen=True)
class Select:
    """One SELECT to run; ``descending`` rows come newest first and must be reversed."""

    sql: str
    params: tuple[object, ...]
    descending: bool


def _select(
    event_type: str | None,
    *,
    after_tick: int | None,
    after_seq: int | None,
    limit: int | None,
    newest: bool,
    ticks_ordered: bool,
) -> Select:
    where: list[str] = []
    params: list[object] = []
    if event_type is not None:
        where.append("type = ?")
        params.append(event_type)
    if after_tick is not None:
        where.append("tick > ?")
        params.append(after_tick)
    if after_seq is not None:
        where.append("seq > ?")
        params.append(after_seq)
    descending = newest and limit is not None
    direction = " DESC" if descending else ""
    index = ""
    order = f"seq{direction}"
    if event_type is None:
        if after_tick is not None and ticks_ordered:
            # Every row with tick > T lies at or after the first such row in seq
            # order, so this is a rowid range read in table order.
            where.append(
                "seq >= (SELECT seq FROM events WHERE tick > ? ORDER BY tick, seq LIMIT 1)"
            )
            params.append(after_tick)
        elif after_tick is not None and after_seq is None:
            index = " INDEXED BY events_tick"
    elif after_tick is not None and after_seq is None:
        if ticks_ordered:
            order = f"tick{direction}, seq{direction}"
        else:
            index = " INDEXED BY events_type_tick"
    else:
        index = " INDEXED BY events_type_seq"
    sql = f"SELECT {COLUMNS} FROM events{index}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {order}"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return Select(sql, tuple(params), descending)


def plan_selects(
    *,
    after_tick: int | None,
    after_seq: int | None,
    types: list[str] | None,
    limit: int | None,
    newest: bool,
    ticks_ordered: bool,
) -> list[Select]:
    """The SELECTs answering one query: one for all types, or one per type."""
    options: dict[str, Any] = {
        "after_tick": after_tick,
        "after_seq": after_seq,
        "limit": limit,
        "newest": newest,
        "ticks_ordered": ticks_ordered,
    }
    if types is None:
        return [_select(None, **options)]
    return [_select(event_type, **options) for event_type in types]


def select_rows(
    conn: sqlite3.Connection,
    *,
    after_tick: int | None,
    after_seq: int | None,
    types: list[str] | None,
    limit: int | None,
    newest: bool,
) -> Iterator[Row]:
    """Run the SELECTs answering one query on ``conn`` and stream the rows in seq order."""
    ordered = bool(read_meta(conn, "ticks_ordered", 1))
    selects = plan_selects(
        after_tick=after_tick,
        after_seq=after_seq,
        types=types,
        limit=limit,
        newest=newest,
        ticks_ordered=ordered,
    )
    streams: list[Iterable[Row]] = []
    for select in selects:
        cursor = conn.execute(select.sql, select.params)
        streams.append(cursor.fetchall()[::-1] if select.descending else cursor)
    if len(streams) == 1:
        return iter(streams[0])
    return merge_rows(streams, limit=limit, newest=newest)


def merge_rows(
    streams: Iterable[Iterable[Row]], *, limit: int | None, newest: bool
) -> Iterator[Row]:
    """Merge per-type row streams (each ascending by seq) into one seq-ordered stream,
    keeping the first (or with ``newest``, the last) ``limit`` rows."""
    merged = heapq.merge(*streams, key=lambda row: row[0])
    if limit is None:
        return merged
    if newest:
        rows = list(merged)
        return iter(rows[max(0, len(rows) - limit) :])
    return itertools.islice(merged, limit)
