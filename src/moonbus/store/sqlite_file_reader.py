"""A moonbus SQLite store file opened strictly for reading.

Why a class of its own: reading a store file someone hands you (``moonbus
events --db``, an offline ``moonbus admin --events-db``) must never change it
and must end, whatever the file holds. :class:`SqliteEventStore` is a writer:
opening it switches the file to WAL and would run whatever a crafted schema
defines. This reader opens through
:func:`~moonbus.store.sqlite_schema.open_read_only` (regular file, ``mode=ro``,
exact schema, no views or triggers), bounds every operation with a
:class:`~moonbus.store.sqlite_schema.WorkLimit` (``max_seconds``), and checks
every row it returns (:func:`~moonbus.store.event_codec.check_row`, data
decoded): a bad row is a ``StoreError`` naming its seq and the problem.
Writing (``append``, ``clear``, ``prune``) raises ``StoreError``.

Threads: one connection, serialised by a lock; any thread may call.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from moonbus.bus.event import Event
from moonbus.errors import ClosedError, StoreError
from moonbus.store.base import EventStore, StoreStatistics, check_query, type_list
from moonbus.store.event_codec import check_row, decode_data, row_to_event
from moonbus.store.sqlite_query import COUNT_TYPE_AFTER_TICK, TYPES, read_meta, select_rows
from moonbus.store.sqlite_schema import WorkLimit, open_read_only, store_error

__all__ = ["DEFAULT_READ_SECONDS", "MAX_DATA_DEPTH", "SqliteFileReader"]

DEFAULT_READ_SECONDS = 60.0
MAX_DATA_DEPTH = 64  # what event data may have (``moonbus.bus.event.freeze``)


def _deeper_than(value: object, limit: int) -> bool:
    """True when ``value`` nests containers more than ``limit`` levels deep.
    Iterative, so any depth is measured without recursion."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[object] = item.values()
        elif isinstance(item, tuple | list):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class SqliteFileReader(EventStore):
    """Read-only access to one store file. See the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_seconds: float = DEFAULT_READ_SECONDS,
        lock_timeout: float = 5.0,
    ) -> None:
        self.path = os.fspath(path)
        self.lock_timeout = lock_timeout
        self._limit = WorkLimit(self.path, max_seconds)
        self._lock = threading.Lock()
        self._closed = False
        self._conn = open_read_only(self.path, lock_timeout=lock_timeout, limit=self._limit)
        self.rows_refused = 0  # bad rows met (a counter)

    def __repr__(self) -> str:
        return f"SqliteFileReader({self.path!r})"

    @property
    def interrupted(self) -> int:
        """Operations stopped by the read time limit."""
        return self._limit.interrupted

    @contextmanager
    def _reading(self, action: str) -> Iterator[sqlite3.Connection]:
        """The connection inside one read transaction, under the time limit."""
        with self._lock:
            if self._closed:
                raise ClosedError(f"event store {self.path} is closed")
            conn = self._conn
            self._limit.start()
            try:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._limit.interrupted and "interrupt" in str(exc).lower():
                    raise self._limit.error(action) from exc
                raise store_error(self.path, action, exc, self.lock_timeout) from exc
            except (ValueError, TypeError) as exc:  # a meta value that is not a number
                raise StoreError(
                    f"event store {self.path}: a bad value in the file while {action}: {exc}"
                ) from exc

    def _refuse_row(self, row: tuple[object, ...], problem: str) -> StoreError:
        self.rows_refused += 1
        return StoreError(f"event store {self.path}: stored event seq {row[0]!r}: {problem}")

    # ------------------------------------------------------------ reading

    def query(
        self,
        *,
        after_tick: int | None = None,
        after_seq: int | None = None,
        types: str | Sequence[str] | None = None,
        limit: int | None = None,
        newest: bool = False,
    ) -> list[Event]:
        """Events oldest first (see ``EventStore.query``); every row is checked."""
        check_query(after_tick, after_seq, limit)
        names = type_list(types)
        if limit == 0 or names == []:
            return []
        events: list[Event] = []
        with self._reading("querying") as conn:
            for row in select_rows(
                conn,
                after_tick=after_tick,
                after_seq=after_seq,
                types=names,
                limit=limit,
                newest=newest,
            ):
                problem = check_row(row)
                if problem is not None:
                    raise self._refuse_row(row, problem)
                try:
                    data = decode_data(row[5])
                except ValueError as exc:
                    raise self._refuse_row(row, str(exc)) from None
                if _deeper_than(data, MAX_DATA_DEPTH):
                    raise self._refuse_row(
                        row, f"the data is nested more than {MAX_DATA_DEPTH} levels deep"
                    )
                events.append(row_to_event(row, data))
        return events

    def summary(self, after_tick: int | None = None) -> dict[str, int]:
        """Count of stored events by type, types sorted."""
        check_query(after_tick, None, None)
        counts: dict[str, int] = {}
        with self._reading("summarising") as conn:
            if after_tick is None:
                rows = conn.execute("SELECT type, count(*) FROM events GROUP BY type ORDER BY type")
                for name, count in rows:
                    counts[str(name)] = int(count)
                return counts
            for (name,) in conn.execute(TYPES).fetchall():
                count = conn.execute(COUNT_TYPE_AFTER_TICK, (name, after_tick)).fetchone()[0]
                if count:
                    counts[str(name)] = int(count)
        return counts

    def last_seq(self) -> int:
        """Highest seq stored or recorded as the high-water mark."""
        with self._reading("reading the last seq") as conn:
            stored = conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
            high_water = read_meta(conn, "high_water", 0)
        return max(stored, high_water)

    def statistics(self) -> StoreStatistics:
        """Rows stored now; nothing is appended or pruned by a reader."""
        with self._reading("counting") as conn:
            stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        return StoreStatistics(appended=0, pruned=0, stored=int(stored), pending=0)

    # ------------------------------------------------------------ writing

    def _read_only(self, action: str) -> StoreError:
        return StoreError(f"event store {self.path} is opened read-only; cannot {action}")

    def append(self, event: Event) -> None:
        """Refused: a reader never writes."""
        raise self._read_only(f"append event seq {event.seq}")

    def clear(self, event_type: str | None = None) -> int:
        """Refused: a reader never writes."""
        raise self._read_only("clear events")

    def prune(self) -> int:
        """Refused: a reader never writes."""
        raise self._read_only("prune events")

    def flush(self) -> None:
        """Nothing to write."""

    def close(self) -> None:
        """Close the connection. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()
