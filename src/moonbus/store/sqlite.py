"""The embedded event store: committed events in one SQLite file (WAL journal).

Modes
-----
*durable* (default): ``append`` returns after the row's transaction has
committed. The journal is WAL with ``synchronous=NORMAL``: a commit appends the
transaction to the WAL file through ``write()``, so it sits in the operating
system's page cache and survives the *process* dying at any instant (kill -9,
a crash, an exception) because the OS still writes it out; on the next open
SQLite replays the WAL. What NORMAL does not promise is surviving a power loss
or kernel crash (the last commits may roll back; the file stays consistent).
Pass ``synchronous="full"`` to fsync the WAL on every commit for that too.

*fast*: ``append`` encodes the row and hands it to a ``BatchWriter``; its
thread commits up to ``batch_size`` rows per transaction. Loss window if the
process dies: the rows not yet committed, which are at most ``max_pending``
(default ``2 * batch_size``) waiting plus ``batch_size`` being written, and,
while the writer keeps up, at most ``flush_interval`` seconds of appends.
``flush()`` makes everything appended so far durable (in the sense above).
Queries flush first, so a query always sees every event appended before it.

Retention (see ``moonbus.store.retention``) runs inside the committing
transaction, amortized: after ``prune_every`` committed rows or once the newest
tick moved ``prune_tick_step`` ticks, as one index-range ``DELETE`` per type.
Freed pages go to SQLite's freelist and are reused by later rows, so the file
stops growing once the retention window is full; the WAL is checkpointed
automatically and truncated to 16 MiB (``journal_size_limit``).

Threads and connections
-----------------------
* ``append``/``append_many`` may be called from any thread; they are
  serialised by ``_append_lock`` and must come in increasing ``seq`` order.
* The one write connection is used only while holding ``_write_lock``: by the
  appending thread (durable), by the writer thread (fast), and by ``prune``,
  ``clear`` and ``close``.
* Queries (any thread) use read connections from a small pool, one per
  concurrent query, so a long export never blocks appends (WAL readers do not
  block the writer). A ``:memory:`` database cannot be shared between
  connections, so there queries use the write connection under ``_write_lock``.
* One process should write a given file through one store; other processes
  (``moonbus events --db``) may open it to read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any, Literal

from moonbus.bus.event import Event
from moonbus.errors import ClosedError, ConfigError, StoreError
from moonbus.store.base import (
    EventStore,
    StoreSettings,
    StoreStatistics,
    check_query,
    type_list,
)
from moonbus.store.batching import BatchWriter
from moonbus.store.retention import PruneSchedule, plan_prune
from moonbus.store.sqlite_query import (
    COUNT_TYPE,
    COUNT_TYPE_AFTER_TICK,
    GET_META,
    INSERT,
    PRUNE_BY_COUNT,
    PRUNE_BY_TICK,
    SET_META,
    TYPES,
    Row,
    encode_data,
    merge_rows,
    plan_selects,
    row_json_line,
    row_to_event,
)
from moonbus.store.sqlite_schema import (
    MEMORY,
    Synchronous,
    open_reader,
    open_writer,
    translated,
)

__all__ = ["SqliteEventStore"]

_log = logging.getLogger(__name__)

Mode = Literal["durable", "fast"]
_QUERY_KEYS = frozenset({"after_tick", "after_seq", "types", "limit", "newest"})


class SqliteEventStore(EventStore):
    """Committed events in an SQLite file (or ``":memory:"``). See the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: Mode = "durable",
        settings: StoreSettings | None = None,
        batch_size: int = 1000,
        flush_interval: float = 0.05,
        max_pending: int | None = None,
        synchronous: Synchronous = "normal",
        lock_timeout: float = 5.0,
        prune_every: int = 1000,
        prune_tick_step: int = 60,
        create: bool = True,
    ) -> None:
        if mode not in ("durable", "fast"):
            raise ConfigError(f"event store mode must be 'durable' or 'fast', not {mode!r}")
        if synchronous not in ("normal", "full"):
            raise ConfigError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        if not lock_timeout >= 0:
            raise ConfigError(f"lock_timeout must be >= 0 seconds, not {lock_timeout!r}")
        self.path = os.fspath(path)
        self.mode: Mode = mode
        self.settings = settings if settings is not None else StoreSettings()
        self.lock_timeout = lock_timeout
        self._schedule = PruneSchedule(every=prune_every, tick_step=prune_tick_step)
        self._append_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers: set[sqlite3.Connection] = set()
        self._closed = False
        self._appended = 0
        self._pruned = 0
        self._conn = open_writer(
            self.path, synchronous=synchronous, lock_timeout=lock_timeout, create=create
        )
        try:
            self._load_state()
        except BaseException:
            self._conn.close()
            raise
        self._writer: BatchWriter[Row] | None = None
        if mode == "fast":
            self._writer = BatchWriter(
                self._write_batch,
                batch_size=batch_size,
                flush_interval=flush_interval,
                max_pending=2 * batch_size if max_pending is None else max_pending,
                name=f"event store {self.path} writer",
            )

    def __repr__(self) -> str:
        return f"SqliteEventStore({self.path!r}, mode={self.mode!r})"

    # ----------------------------------------------------------------- state

    def _load_state(self) -> None:
        conn = self._conn
        with translated(self.path, "reading the store state", self.lock_timeout):
            max_seq = conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
            high_water = self._meta(conn, "high_water", 0)
            self._max_tick: int | None = conn.execute("SELECT max(tick) FROM events").fetchone()[0]
            self._ticks_ordered = bool(self._meta(conn, "ticks_ordered", 1))
            self._types: set[str] = {row[0] for row in conn.execute(TYPES)}
        self._committed_seq: int = max(max_seq, high_water)
        self._last_seq: int = self._committed_seq
        self._counts: dict[str, int] = {}

    @staticmethod
    def _meta(conn: sqlite3.Connection, key: str, default: int) -> int:
        row = conn.execute(GET_META, (key,)).fetchone()
        return default if row is None else int(row[0])

    def _high_water(self) -> int:
        return max(self._committed_seq, self._last_seq)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"event store {self.path} is closed")

    # ---------------------------------------------------------------- append

    def _encode(self, event: Event) -> Row:
        try:
            data = encode_data(event.data)
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"event store {self.path}: event seq {event.seq} ({event.type}) has data "
                f"that cannot be stored as JSON: {exc}"
            ) from exc
        return (event.seq, event.tick, event.type, event.ts, event.source, data)

    def _check_seq(self, seq: int) -> None:
        if seq <= self._last_seq:
            raise StoreError(
                f"event store {self.path}: event seq {seq} is not after the last "
                f"stored seq {self._last_seq}"
            )

    def append(self, event: Event) -> None:
        """Record one committed event. Durable mode: committed when this returns."""
        if not self.settings.wants(event.type):
            with self._append_lock:
                self._check_open()
                self._check_seq(event.seq)
                self._last_seq = event.seq
            return
        row = self._encode(event)
        with self._append_lock:
            self._check_open()
            self._check_seq(event.seq)
            if self._writer is not None:
                self._writer.put(row)
            else:
                with self._write_lock:
                    self._commit([row])
            self._last_seq = event.seq
        if self.settings.log_appends:
            _log.debug("event store %s: appended seq %d (%s)", self.path, event.seq, event.type)

    def append_many(self, events: Iterable[Event]) -> None:
        """Record several events in order. The whole batch is checked first (nothing
        is recorded if a seq is out of order); durable mode commits it in one
        transaction."""
        batch = list(events)
        rows = [self._encode(event) for event in batch if self.settings.wants(event.type)]
        with self._append_lock:
            self._check_open()
            last = self._last_seq
            for event in batch:
                if event.seq <= last:
                    raise StoreError(
                        f"event store {self.path}: event seq {event.seq} is not after seq {last}"
                    )
                last = event.seq
            if self._writer is not None:
                for row in rows:
                    self._writer.put(row)
            elif rows:
                with self._write_lock:
                    self._commit(rows)
            self._last_seq = last

    def _write_batch(self, rows: list[Row]) -> None:
        """Fast mode: called by the writer thread only."""
        with self._write_lock:
            self._commit(rows)

    def _commit(self, rows: list[Row]) -> None:
        """Insert rows in one transaction, pruning in it when due. Holds ``_write_lock``."""
        max_tick = self._max_tick
        ordered = self._ticks_ordered
        for row in rows:
            tick = row[1]
            if tick is not None:
                if max_tick is not None and tick < max_tick:
                    ordered = False
                if max_tick is None or tick > max_tick:
                    max_tick = tick
        prune_due = self._schedule.due(len(rows), max_tick)
        flag_changed = ordered != self._ticks_ordered
        conn = self._conn
        deleted = 0
        counts = self._counts
        with translated(self.path, "appending", self.lock_timeout):
            if len(rows) == 1 and not prune_due and not flag_changed:
                conn.execute(INSERT, rows[0])  # autocommit: its own transaction
                if rows[0][2] in counts:
                    counts[rows[0][2]] += 1
            else:
                counts = dict(counts)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(INSERT, rows)
                    for row in rows:
                        if row[2] in counts:
                            counts[row[2]] += 1
                    if flag_changed:
                        conn.execute(SET_META, ("ticks_ordered", 0))
                    if prune_due:
                        types = self._types.union(row[2] for row in rows)
                        deleted = self._prune_in(
                            conn, types, max_tick, counts, max(rows[-1][0], self._last_seq)
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        self._counts = counts
        self._types.update(row[2] for row in rows)
        self._max_tick = max_tick
        self._ticks_ordered = ordered
        self._committed_seq = rows[-1][0]
        self._appended += len(rows)
        self._pruned += deleted
        if prune_due:
            self._schedule.done(max_tick)
        else:
            self._schedule.note(len(rows), max_tick)

    def _prune_in(
        self,
        conn: sqlite3.Connection,
        types: set[str],
        newest_tick: int | None,
        counts: dict[str, int],
        high_water: int,
    ) -> int:
        """Run retention inside the open transaction; updates ``counts`` in place."""
        deleted = 0
        for step in plan_prune(self.settings, types, newest_tick):
            if step.max_tick is not None:
                gone = conn.execute(PRUNE_BY_TICK, (step.type, step.max_tick)).rowcount
                deleted += gone
                if step.type in counts:
                    counts[step.type] -= gone
            if step.keep is not None:
                if step.type not in counts:
                    counts[step.type] = conn.execute(COUNT_TYPE, (step.type,)).fetchone()[0]
                excess = counts[step.type] - step.keep
                if excess > 0:
                    gone = conn.execute(PRUNE_BY_COUNT, (step.type, step.type, excess - 1)).rowcount
                    deleted += gone
                    counts[step.type] -= gone
        if deleted:
            conn.execute(SET_META, ("high_water", high_water))
        return deleted

    # ------------------------------------------------------ prune and clear

    def prune(self) -> int:
        """Apply retention now; returns how many events were deleted."""
        self.flush()
        with self._write_lock:
            self._check_open()
            conn = self._conn
            counts = dict(self._counts)
            with translated(self.path, "pruning", self.lock_timeout):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    deleted = self._prune_in(
                        conn, self._types, self._max_tick, counts, self._high_water()
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            self._counts = counts
            self._pruned += deleted
            self._schedule.done(self._max_tick)
        return deleted

    def clear(self, event_type: str | None = None) -> int:
        """Delete all events, or all of one type; ``last_seq`` is kept."""
        if event_type is not None and not isinstance(event_type, str):
            raise ConfigError(f"event type must be a string, not {event_type!r}")
        self.flush()
        with self._write_lock:
            self._check_open()
            conn = self._conn
            with translated(self.path, "clearing", self.lock_timeout):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(SET_META, ("high_water", self._high_water()))
                    if event_type is None:
                        deleted = conn.execute("DELETE FROM events").rowcount
                        conn.execute(SET_META, ("ticks_ordered", 1))
                    else:
                        deleted = conn.execute(
                            "DELETE FROM events WHERE type = ?", (event_type,)
                        ).rowcount
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            if event_type is None:
                self._types.clear()
                self._counts = {}
                self._max_tick = None
                self._ticks_ordered = True
            else:
                self._types.discard(event_type)
                self._counts = {**self._counts, event_type: 0}
        return deleted

    def flush(self) -> None:
        """Block until every event appended so far is committed (fast mode)."""
        self._check_open()
        if self._writer is not None:
            self._writer.flush()

    # --------------------------------------------------------------- reading

    def _borrow(self) -> sqlite3.Connection:
        with self._pool_lock:
            self._check_open()
            if self._idle_readers:
                return self._idle_readers.pop()
        conn = open_reader(self.path, lock_timeout=self.lock_timeout)
        with self._pool_lock:
            self._readers.add(conn)
        return conn

    def _give_back(self, conn: sqlite3.Connection) -> None:
        with self._pool_lock:
            if self._closed:
                self._readers.discard(conn)
                conn.close()
            else:
                self._idle_readers.append(conn)

    @contextlib.contextmanager
    def _reading(self, action: str) -> Iterator[sqlite3.Connection]:
        """A connection inside one read transaction (a consistent snapshot)."""
        self.flush()
        if self.path == MEMORY:
            with self._write_lock:
                self._check_open()
                with translated(self.path, action, self.lock_timeout):
                    self._conn.execute("BEGIN")
                    try:
                        yield self._conn
                    finally:
                        self._conn.execute("COMMIT")
            return
        conn = self._borrow()
        try:
            with translated(self.path, action, self.lock_timeout):
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
        finally:
            self._give_back(conn)

    def _rows(
        self,
        conn: sqlite3.Connection,
        *,
        after_tick: int | None,
        after_seq: int | None,
        types: list[str] | None,
        limit: int | None,
        newest: bool,
    ) -> Iterator[Row]:
        ordered = bool(self._meta(conn, "ticks_ordered", 1))
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

    def query(
        self,
        *,
        after_tick: int | None = None,
        after_seq: int | None = None,
        types: str | Sequence[str] | None = None,
        limit: int | None = None,
        newest: bool = False,
    ) -> list[Event]:
        """Events oldest first; see ``EventStore.query``."""
        check_query(after_tick, after_seq, limit)
        names = type_list(types)
        if limit == 0 or names == []:
            self._check_open()
            return []
        with self._reading("querying") as conn:
            rows = list(
                self._rows(
                    conn,
                    after_tick=after_tick,
                    after_seq=after_seq,
                    types=names,
                    limit=limit,
                    newest=newest,
                )
            )
        return [row_to_event(row) for row in rows]

    def query_plan(
        self,
        *,
        after_tick: int | None = None,
        after_seq: int | None = None,
        types: str | Sequence[str] | None = None,
        limit: int | None = None,
        newest: bool = False,
    ) -> list[str]:
        """SQLite's ``EXPLAIN QUERY PLAN`` lines for the SELECTs ``query`` would run."""
        check_query(after_tick, after_seq, limit)
        with self._reading("explaining a query") as conn:
            ordered = bool(self._meta(conn, "ticks_ordered", 1))
            lines: list[str] = []
            for select in plan_selects(
                after_tick=after_tick,
                after_seq=after_seq,
                types=type_list(types),
                limit=limit,
                newest=newest,
                ticks_ordered=ordered,
            ):
                plan = conn.execute("EXPLAIN QUERY PLAN " + select.sql, select.params)
                lines.extend(str(row[3]) for row in plan)
        return lines

    def export_ndjson(self, fp: IO[str], **query: Any) -> int:
        """Stream matching events as NDJSON lines without decoding their data."""
        unknown = set(query) - _QUERY_KEYS
        if unknown:
            raise ConfigError(f"unknown export option(s): {', '.join(sorted(unknown))}")
        after_tick = query.get("after_tick")
        after_seq = query.get("after_seq")
        limit = query.get("limit")
        check_query(after_tick, after_seq, limit)
        names = type_list(query.get("types"))
        if limit == 0 or names == []:
            return 0
        count = 0
        with self._reading("exporting") as conn:
            for row in self._rows(
                conn,
                after_tick=after_tick,
                after_seq=after_seq,
                types=names,
                limit=limit,
                newest=bool(query.get("newest", False)),
            ):
                fp.write(row_json_line(row))
                fp.write("\n")
                count += 1
        return count

    def summary(self, after_tick: int | None = None) -> dict[str, int]:
        """Count of stored events by type, types sorted; ``after_tick`` counts only
        events with a greater tick."""
        check_query(after_tick, None, None)
        with self._reading("summarising") as conn:
            if after_tick is None:
                rows = conn.execute(
                    "SELECT type, count(*) FROM events GROUP BY type ORDER BY type"
                ).fetchall()
                return {str(name): int(count) for name, count in rows}
            counts: dict[str, int] = {}
            for (name,) in conn.execute(TYPES).fetchall():
                count = conn.execute(COUNT_TYPE_AFTER_TICK, (name, after_tick)).fetchone()[0]
                if count:
                    counts[str(name)] = int(count)
        return counts

    def last_seq(self) -> int:
        """Highest seq ever appended or stored (kept across clear, prune and reopen)."""
        with self._reading("reading the last seq") as conn:
            stored = conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
            high_water = self._meta(conn, "high_water", 0)
        return max(stored, high_water, self._last_seq)

    def statistics(self) -> StoreStatistics:
        """Appended and pruned (this session), stored now, pending (fast mode)."""
        with self._reading("counting") as conn:
            stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        pending = self._writer.pending if self._writer is not None else 0
        return StoreStatistics(
            appended=self._appended, pruned=self._pruned, stored=int(stored), pending=pending
        )

    # ----------------------------------------------------------------- close

    def close(self) -> None:
        """Write what is pending, record the high-water seq, close every connection."""
        with self._append_lock:
            if self._closed:
                return
            failure: StoreError | None = None
            if self._writer is not None:
                try:
                    self._writer.close()
                except StoreError as exc:
                    failure = exc
            self._closed = True
        with self._write_lock:
            try:
                if self._last_seq > self._committed_seq and failure is None:
                    # events of unwanted types advanced the seq: keep numbering after them
                    with translated(self.path, "closing", self.lock_timeout):
                        self._conn.execute(SET_META, ("high_water", self._last_seq))
            finally:
                with self._pool_lock:
                    for conn in self._idle_readers:
                        self._readers.discard(conn)
                        conn.close()
                    self._idle_readers.clear()
                self._conn.close()
        if failure is not None:
            raise failure
