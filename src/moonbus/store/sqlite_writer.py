"""The write side of the SQLite event store: one connection, its transactions and
what it remembers about the rows (types, per-type counts, newest tick).

Why separate: everything that changes the file goes through here, under one
lock, so the in-memory state can only be updated after a successful COMMIT
and is never seen half-changed.

Threads: every public method takes ``lock`` itself and may be called from any
thread: the appending thread (durable mode), the fast-mode writer thread,
``prune``/``clear`` callers, and ``close``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from moonbus.errors import ConfigError
from moonbus.store.base import StoreSettings
from moonbus.store.retention import PruneSchedule, plan_prune
from moonbus.store.sqlite_checkpoint import Checkpointer
from moonbus.store.sqlite_lock import WriterLock
from moonbus.store.sqlite_query import (
    COUNT_TYPE,
    INSERT,
    PRUNE_BY_COUNT,
    PRUNE_BY_TICK,
    PRUNE_BY_TICK_STEP,
    SET_META,
    TYPES,
    Row,
    read_meta,
)
from moonbus.store.sqlite_schema import (
    MEMORY,
    SET_DB_ID,
    WAL_CHECKPOINT_FRAMES,
    Synchronous,
    check_header,
    check_writable,
    open_writer,
    store_error,
    translated,
)

__all__ = ["SqliteWriter"]


class SqliteWriter:
    """Owns the write connection. See the module docstring for threads."""

    def __init__(
        self,
        path: str,
        *,
        settings: StoreSettings,
        synchronous: Synchronous,
        lock_timeout: float,
        create: bool,
        prune_every: int,
        prune_tick_step: int,
        prune_step: int = 16,
        checkpoint_every: int = 800,
        checkpoint_interval: float = 0.25,
    ) -> None:
        self.path = path
        self.settings = settings
        self.lock_timeout = lock_timeout
        self.lock = threading.Lock()
        self._schedule = PruneSchedule(every=prune_every, tick_step=prune_tick_step)
        if prune_step < 1:
            raise ConfigError(f"prune_step must be >= 1 event, not {prune_step!r}")
        # An append's prune deletes at most this many events of each type (or
        # twice the rows it adds, so a large batch never falls behind); what is
        # left is deleted by the next appends (``_prune_behind``), so no single
        # emit pays for a whole retention window's worth of deletes.
        self._prune_step = prune_step
        self._prune_behind = False
        self.appended = 0
        self.pruned = 0
        # One writer per file (SPEC §6): refused here, at open, not at the first append.
        self._writer_lock = WriterLock(path) if path != MEMORY else None
        if self._writer_lock is not None:
            check_header(path, create=create)  # a missing directory says so first
            check_writable(path)  # a read-only file says so, not the lock file
            self._writer_lock.acquire()
        try:
            self._conn = open_writer(
                path, synchronous=synchronous, lock_timeout=lock_timeout, create=create
            )
        except BaseException:
            self._release_lock()
            raise
        # WAL checkpoints run on their own thread and connection, never inside an
        # append's commit (see ``sqlite_checkpoint``). ``:memory:`` has no WAL.
        self._checkpointer: Checkpointer | None = None
        try:
            if path != MEMORY:
                with translated(path, "setting up the database", lock_timeout):
                    self._conn.execute("PRAGMA wal_autocheckpoint=0").fetchone()
                self._checkpointer = Checkpointer(
                    path,
                    writer_lock=self.lock,
                    every=checkpoint_every,
                    interval=checkpoint_interval,
                    max_frames=WAL_CHECKPOINT_FRAMES,
                    lock_timeout=lock_timeout,
                )
        except BaseException:
            self._conn.close()
            self._release_lock()
            raise
        try:
            with translated(path, "reading the store state", lock_timeout):
                conn = self._conn
                max_seq = conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
                high_water = read_meta(conn, "high_water", 0)
                # 0: a file made before stores had ids (stamped by ``stamp_id``)
                self.db_id = read_meta(conn, "db_id", 0)
                self._max_tick: int | None = conn.execute(
                    "SELECT max(tick) FROM events"
                ).fetchone()[0]
                self._ticks_ordered = bool(read_meta(conn, "ticks_ordered", 1))
                self._types: set[str] = {row[0] for row in conn.execute(TYPES)}
                # Per-type counts, kept exact by every commit/prune/clear below, so
                # that the admin summary costs O(types) instead of a table scan.
                self._counts: dict[str, int] = {
                    str(name): int(n)
                    for name, n in conn.execute("SELECT type, count(*) FROM events GROUP BY type")
                }
        except BaseException:
            self._close_checkpointer()
            self._conn.close()
            self._release_lock()
            raise
        self.committed_seq: int = max(max_seq, high_water)

    @contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error. Holds ``lock``."""
        conn = self._conn
        with translated(self.path, action, self.lock_timeout):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """The write connection, locked (for ``:memory:`` stores, which have no readers)."""
        with self.lock:
            yield self._conn

    def append_one(self, row: Row) -> None:
        """``commit([row], row[0])``, taking a short path in the usual case: no
        prune due and the ticks' order unchanged, so the row is one INSERT in
        autocommit and the bookkeeping is updated in place after it succeeded.

        Why a path of its own: a durable store runs this once per ``emit``, and
        in a game loop the first ``emit`` of a frame runs with cold CPU caches
        (the thread slept since the last frame). That emit's cost sets the p99,
        and it grows with every Python frame, context manager and temporary
        dict on the way, so this path has none of them (measured: see
        ``moonbus bench --only store_frame``).
        """
        tick = row[1]
        with self.lock:
            long_path = self._prune_behind
            newest = max_tick = self._max_tick
            if tick is not None:
                if max_tick is None or tick > max_tick:
                    newest = tick
                elif tick < max_tick and self._ticks_ordered:
                    long_path = True  # the ticks' order flag changes in the file
            if long_path or self._schedule.due(1, newest):
                self._commit_locked([row], row[0])
                return
            try:
                self._conn.execute(INSERT, row)  # autocommit: its own transaction
            except sqlite3.Error as exc:
                raise store_error(self.path, "appending", exc, self.lock_timeout) from exc
            event_type = row[2]
            counts = self._counts
            counts[event_type] = counts.get(event_type, 0) + 1
            self._types.add(event_type)
            self._max_tick = newest
            self.committed_seq = row[0]
            self.appended += 1
            if self._checkpointer is not None:
                self._checkpointer.note_commit(1)
            self._schedule.note(1, newest)

    def commit(self, rows: list[Row], high_water: int) -> None:
        """Insert rows (in seq order) in one transaction, pruning in it when due.

        ``high_water`` is the highest seq appended so far, recorded when a prune
        deletes rows so that ``last_seq`` survives.
        """
        with self.lock:
            self._commit_locked(rows, high_water)

    def _commit_locked(self, rows: list[Row], high_water: int) -> None:
        """``commit``, holding ``lock``."""
        max_tick = self._max_tick
        ordered = self._ticks_ordered
        for row in rows:
            tick = row[1]
            if tick is not None:
                if max_tick is not None and tick < max_tick:
                    ordered = False
                if max_tick is None or tick > max_tick:
                    max_tick = tick
        prune_due = self._prune_behind or self._schedule.due(len(rows), max_tick)
        behind = False
        flag_changed = ordered != self._ticks_ordered
        deleted = 0
        counts = dict(self._counts)
        if len(rows) == 1 and not prune_due and not flag_changed:
            with translated(self.path, "appending", self.lock_timeout):
                self._conn.execute(INSERT, rows[0])  # autocommit: its own transaction
            _count_rows(counts, rows)
        else:
            with self._transaction("appending") as conn:
                conn.executemany(INSERT, rows)
                _count_rows(counts, rows)
                if flag_changed:
                    conn.execute(SET_META, ("ticks_ordered", 0))
                if prune_due:
                    types = self._types.union(row[2] for row in rows)
                    high_water = max(high_water, rows[-1][0])
                    step = max(self._prune_step, 2 * len(rows))
                    deleted, behind = self._prune_in(
                        conn, types, max_tick, counts, high_water, step
                    )
        self._counts = counts
        self._types.update(row[2] for row in rows)
        self._max_tick = max_tick
        self._ticks_ordered = ordered
        self.committed_seq = rows[-1][0]
        self._committed(len(rows))
        self.appended += len(rows)
        self.pruned += deleted
        self._prune_behind = behind
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
        limit: int | None = None,
    ) -> tuple[int, bool]:
        """Run retention inside the open transaction; updates ``counts`` in place.

        With ``limit``, deletes at most ``limit`` events per type and limit kind.
        Returns (events deleted, whether some are left to delete).
        """
        deleted = 0
        behind = False
        for step in plan_prune(self.settings, types, newest_tick):
            if step.max_tick is not None:
                if limit is None:
                    gone = conn.execute(PRUNE_BY_TICK, (step.type, step.max_tick)).rowcount
                else:
                    gone = conn.execute(
                        PRUNE_BY_TICK_STEP, (step.type, step.max_tick, limit)
                    ).rowcount
                    behind = behind or gone >= limit
                deleted += gone
                if step.type in counts:
                    counts[step.type] -= gone
            if step.keep is not None:
                if step.type not in counts:
                    counts[step.type] = conn.execute(COUNT_TYPE, (step.type,)).fetchone()[0]
                excess = counts[step.type] - step.keep
                if limit is not None and excess > limit:
                    excess, behind = limit, True
                if excess > 0:
                    gone = conn.execute(PRUNE_BY_COUNT, (step.type, step.type, excess - 1)).rowcount
                    deleted += gone
                    counts[step.type] -= gone
        if deleted:
            conn.execute(SET_META, ("high_water", high_water))
        return deleted, behind

    def prune(self, high_water: int) -> int:
        """Apply retention now; returns how many events were deleted."""
        with self.lock:
            counts = dict(self._counts)
            with self._transaction("pruning") as conn:
                deleted, _ = self._prune_in(
                    conn, self._types, self._max_tick, counts, high_water
                )
            self._counts = counts
            self.pruned += deleted
            self._prune_behind = False
            self._schedule.done(self._max_tick)
            self._committed(deleted)
        return deleted

    def clear(self, event_type: str | None, high_water: int) -> int:
        """Delete all events, or all of one type, keeping the high-water seq."""
        with self.lock:
            with self._transaction("clearing") as conn:
                conn.execute(SET_META, ("high_water", high_water))
                if event_type is None:
                    deleted: int = conn.execute("DELETE FROM events").rowcount
                    conn.execute(SET_META, ("ticks_ordered", 1))
                else:
                    deleted = conn.execute(
                        "DELETE FROM events WHERE type = ?", (event_type,)
                    ).rowcount
            self._committed(deleted)
            if event_type is None:
                self._types.clear()
                self._counts = {}
                self._max_tick = None
                self._ticks_ordered = True
            else:
                self._types.discard(event_type)
                self._counts = {**self._counts, event_type: 0}
        return deleted

    def stamp_id(self, db_id: int) -> None:
        """Give a file made before stores had ids the id ``db_id`` (no-op if it has one)."""
        with self.lock:
            if self.db_id == 0:
                with self._transaction("recording the store's id") as conn:
                    conn.execute(SET_DB_ID, (db_id,))
                self.db_id = db_id

    def counts(self) -> dict[str, int]:
        """Committed events per type (types with none left are omitted), sorted by type."""
        with self.lock:
            return {t: n for t, n in sorted(self._counts.items()) if n > 0}

    def close(self, high_water: int | None = None) -> None:
        """Record ``high_water`` if it is past every committed row, then close."""
        # first, and not holding ``lock`` (a checkpoint may be waiting for it): the
        # write connection must be the last one open, so that its close
        # checkpoints the WAL and removes it, as it always did
        self._close_checkpointer()
        with self.lock:
            try:
                if high_water is not None and high_water > self.committed_seq:
                    # skipped (unwanted) events advanced the seq: keep numbering after them
                    with translated(self.path, "closing", self.lock_timeout):
                        self._conn.execute(SET_META, ("high_water", high_water))
            finally:
                self._conn.close()
                self._release_lock()

    def _committed(self, rows: int) -> None:
        """Tell the checkpointer a transaction of ``rows`` rows committed (holding ``lock``)."""
        if self._checkpointer is not None:
            self._checkpointer.note_commit(rows)

    @property
    def checkpoints(self) -> tuple[int, int]:
        """(passive WAL checkpoints run, checkpoints that failed) this session."""
        cp = self._checkpointer
        return (0, 0) if cp is None else (cp.checkpoints, cp.failures)

    def _close_checkpointer(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None

    def _release_lock(self) -> None:
        if self._writer_lock is not None:
            self._writer_lock.release()


def _count_rows(counts: dict[str, int], rows: Iterable[Row]) -> None:
    """Add committed rows to the per-type counts."""
    for row in rows:
        counts[row[2]] = counts.get(row[2], 0) + 1
