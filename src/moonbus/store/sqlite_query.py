"""SQL for reading the SQLite event store (pure query planning).

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

Rows are ``moonbus.store.event_codec.Row``; turning them into events or NDJSON
lines (and checking a row read from a file) is the codec's work, shared with
the Redis store.
"""

from __future__ import annotations

import heapq
import itertools
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from moonbus.store.event_codec import Row

__all__ = [
    "COUNT_TYPE",
    "COUNT_TYPE_AFTER_TICK",
    "INSERT",
    "PRUNE_BY_COUNT",
    "PRUNE_BY_TICK",
    "PRUNE_BY_TICK_STEP",
    "Row",
    "Select",
    "explain_query",
    "merge_rows",
    "plan_selects",
    "read_meta",
    "select_rows",
]

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
# at most ? of them, oldest first (one bounded step of an amortized prune)
PRUNE_BY_TICK_STEP = (
    "DELETE FROM events WHERE seq IN "
    "(SELECT seq FROM events WHERE type = ? AND tick <= ? ORDER BY tick LIMIT ?)"
)
PRUNE_BY_COUNT = (
    "DELETE FROM events WHERE type = ? AND seq <= "
    "(SELECT seq FROM events WHERE type = ? ORDER BY seq LIMIT 1 OFFSET ?)"
)
COUNT_TYPE = "SELECT count(*) FROM events WHERE type = ?"
COUNT_TYPE_AFTER_TICK = "SELECT count(*) FROM events WHERE type = ? AND tick > ?"
GET_META = "SELECT value FROM meta WHERE key = ?"


def read_meta(conn: sqlite3.Connection, key: str, default: int) -> int:
    """One integer from the ``meta`` table, or ``default`` when it was never set."""
    row = conn.execute(GET_META, (key,)).fetchone()
    return default if row is None else int(row[0])


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


def explain_query(
    conn: sqlite3.Connection,
    *,
    after_tick: int | None,
    after_seq: int | None,
    types: list[str] | None,
    limit: int | None,
    newest: bool,
) -> list[str]:
    """SQLite's ``EXPLAIN QUERY PLAN`` lines for the SELECTs ``select_rows`` runs
    (inside the caller's read transaction)."""
    lines: list[str] = []
    for select in plan_selects(
        after_tick=after_tick,
        after_seq=after_seq,
        types=types,
        limit=limit,
        newest=newest,
        ticks_ordered=bool(read_meta(conn, "ticks_ordered", 1)),
    ):
        plan = conn.execute("EXPLAIN QUERY PLAN " + select.sql, select.params)
        lines.extend(str(row[3]) for row in plan)
    return lines
