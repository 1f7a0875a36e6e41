"""The embedded event store: committed events in one SQLite file (WAL journal).

Modes
-----
*journal* (the default for a file): ``append`` returns once the row is copied
into a memory-mapped journal (``<file>-mbjournal``; a store into a shared file
mapping is the kernel's at once, so it survives kill -9 or a crash) and handed
to a ``BatchWriter``, which commits rows in batches as in *fast* mode and then
lets the journal reuse their space. Opening the store (any mode) commits the
rows its own journal holds first (``sqlite_journal``, ``sqlite_journal_open``).
Why the default: no SQLite commit or fsync on the emitting thread, which in a
game loop sets the frame's p99 and max (``moonbus bench --only store_frame``).
The costs: other processes (``moonbus events --db``) see an event once its
batch is committed (within ``flush_interval``, 50 ms; after a kill, once a
writer opened the file again); an SQLite failure (disk full, locked) is met by
the writer thread, whose batch stays in the journal and is retried (every 50
ms doubling to 1 s): meanwhile each append, query or flush tries it at once
and raises ``StoreError`` (the failure's kind) while it fails. Other failures
break the store as in *fast* mode, the events kept in the journal.
``journal_bytes`` bounds the journal (default 8 MiB, made at open; with less
room on the disk ``mode="journal"`` is refused, the default runs durable with
a WARNING); a full journal makes an append wait (``journal_waits``); a row
over half of it is committed in its append, as in durable mode.

*durable* (``:memory:``'s default, ``mode="durable"`` for a file): ``append``
returns after its own transaction committed (a failure raises from it, other
processes see the event at once) at the cost of SQLite's commit path on the
emitting thread. With ``synchronous=NORMAL`` a commit is in the OS page cache
(``write()`` to the WAL), so it survives the process dying. Neither mode
survives a power loss for the last events (the file stays consistent);
``synchronous="full"`` fsyncs every commit (durable; the journal never is).

*fast*: ``append`` encodes the row and hands it to a ``BatchWriter``; its
thread commits up to ``batch_size`` rows per transaction. Loss window if the
process dies: the rows not yet committed, which are at most ``max_pending``
(default ``2 * batch_size``) waiting plus ``batch_size`` being written, and,
while the writer keeps up, at most ``flush_interval`` seconds of appends.
``flush()`` makes everything appended so far durable (in the sense above).
Queries flush first, so a query always sees every event appended before it.
``close()`` (or leaving the ``with`` block) writes what is pending; the writer
thread is a daemon, so a fast store that is never closed loses its pending
rows when the interpreter exits. If a batch cannot be committed (say the file
stays locked past ``lock_timeout``), the store is broken from then on: every
later call raises ``StoreError`` saying how many events were not written.

Retention (``moonbus.store.retention``) runs inside the committing transaction,
amortized: after ``prune_every`` rows or once the newest tick moved
``prune_tick_step`` ticks, as ``DELETE``s per type of at most ``prune_step``
events (or twice the rows committed), the rest left to the next commits
(``prune()`` deletes all at once). Freed pages are reused, so the file stops
growing once the window is full. The WAL is checkpointed by a thread of its
own (``sqlite_checkpoint``), never in an append, truncated to 16 MiB.

Threads and connections
-----------------------
* ``append``/``append_many`` may be called from any thread; they are
  serialised by ``_append_lock`` and must come in increasing ``seq`` order.
* The one write connection belongs to a ``SqliteWriter`` and is used only under
  its lock: by the appending thread (durable), by the ``BatchWriter`` thread
  (journal, fast), and by ``prune``, ``clear`` and ``close``.
* Queries (any thread) use read connections from a ``ReaderPool``, one per
  concurrent query, so a long export never blocks appends (WAL readers do not
  block the writer). A ``:memory:`` database cannot be shared between
  connections, so there queries use the write connection under its lock.
* One store writes a given file at a time: a second writer (another process,
  or a second store in this one) is refused at open with a ``StoreError``
  saying so (an exclusive ``flock`` on ``<file>.lock``, dropped by the kernel
  when the holder dies: ``sqlite_lock``). A file, directory or file system
  this process cannot write is refused at open too. Other processes
  (``moonbus events --db``) may open the file to read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import IO, Any, Literal

from moonbus.bus.event import Event
from moonbus.errors import ClosedError, ConfigError, StoreError
from moonbus.store.base import (
    EventStore,
    FailureCounts,
    StoreSettings,
    StoreStatistics,
    check_query,
    type_list,
)
from moonbus.store.batching import BatchWriter
from moonbus.store.event_codec import Row, encode_data, row_json_line, row_to_event
from moonbus.store.sqlite_journal import DEFAULT_JOURNAL_BYTES, Journal, RecordTooLarge
from moonbus.store.sqlite_journal_open import lost_note, open_store_journal, retry_delay
from moonbus.store.sqlite_query import (
    COUNT_TYPE_AFTER_TICK,
    TYPES,
    explain_query,
    read_meta,
    select_rows,
)
from moonbus.store.sqlite_readers import ReaderPool
from moonbus.store.sqlite_schema import MEMORY, Synchronous, translated
from moonbus.store.sqlite_writer import SqliteWriter

__all__ = ["SqliteEventStore"]

_log = logging.getLogger(__name__)

Mode = Literal["durable", "fast", "journal"]
_QUERY_KEYS = frozenset({"after_tick", "after_seq", "types", "limit", "newest"})


class SqliteEventStore(EventStore):
    """Committed events in an SQLite file (or ``":memory:"``). See the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: Mode | None = None,
        settings: StoreSettings | None = None,
        batch_size: int = 1000,
        flush_interval: float = 0.05,
        max_pending: int | None = None,
        synchronous: Synchronous = "normal",
        lock_timeout: float = 5.0,
        prune_every: int = 1000,
        prune_tick_step: int = 60,
        prune_step: int = 16,
        create: bool = True,
        journal_bytes: int = DEFAULT_JOURNAL_BYTES,
    ) -> None:
        defaulted = mode is None  # the default: journal for a file, durable for :memory:
        if mode is None:
            mode = "durable" if os.fspath(path) == MEMORY else "journal"
        if mode not in ("durable", "fast", "journal"):
            raise ConfigError(
                f"event store mode must be 'durable', 'fast' or 'journal', not {mode!r}"
            )
        if mode == "journal" and os.fspath(path) == MEMORY:
            raise ConfigError("event store mode 'journal' needs a file, not :memory:")
        if synchronous not in ("normal", "full"):
            raise ConfigError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        if not lock_timeout >= 0:
            raise ConfigError(f"lock_timeout must be >= 0 seconds, not {lock_timeout!r}")
        self.path = os.fspath(path)
        self.mode: Mode = mode
        self.settings = settings if settings is not None else StoreSettings()
        self.lock_timeout = lock_timeout
        self._append_lock = threading.Lock()  # serialises appends; guards _last_seq
        self._failures = FailureCounts()
        self._closed = False
        self._db = SqliteWriter(
            self.path,
            settings=self.settings,
            synchronous=synchronous,
            lock_timeout=lock_timeout,
            create=create,
            prune_every=prune_every,
            prune_tick_step=prune_tick_step,
            prune_step=prune_step,
        )
        self._journal: Journal | None = None
        pending: list[Row] = []  # journal rows not committed at open (full disk...)
        self.journal_orphans = 0  # foreign journals moved aside at open
        self.retries = 0  # journal-mode batch commits tried again (writer thread)
        try:
            if self.path != MEMORY:
                opened = open_store_journal(self._db, keep=mode == "journal",
                                            capacity=journal_bytes, fallback=defaulted)
                self._journal, pending = opened.journal, opened.pending
                if mode == "journal" and opened.journal is None:  # no room for it
                    self.mode = mode = "durable"
                self.journal_orphans = int(opened.orphan is not None)
        except BaseException:
            self._db.close()
            raise
        self._last_seq = pending[-1][0] if pending else self._db.committed_seq
        self._readers = None if self.path == MEMORY else ReaderPool(
            self.path, lock_timeout=lock_timeout)
        self._writer: BatchWriter[Row] | None = None
        if mode != "durable":
            try:
                self._writer = BatchWriter(
                    self._write_batch,
                    batch_size=batch_size,
                    flush_interval=flush_interval,
                    max_pending=2 * batch_size if max_pending is None else max_pending,
                    name=f"event store {self.path} writer",
                    retry_after=self._batch_failed,
                    lost_note=lost_note(self._journal),
                    initial=pending,
                )
            except BaseException:
                if self._journal is not None:
                    self._journal.close()
                self._db.close()
                raise

    @property
    def journal_waits(self) -> int:
        """Appends that found the journal full and waited for the batch writer."""
        return 0 if self._journal is None else self._journal.waits

    def __repr__(self) -> str:
        return f"SqliteEventStore({self.path!r}, mode={self.mode!r})"

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"event store {self.path} is closed")

    # ---------------------------------------------------------------- append

    def _encode(self, event: Event) -> Row:
        data: Mapping[str, Any] = event.data
        if type(data) is MappingProxyType:
            # the bus's frozen flat payload: as a dict, the C JSON encoder takes it
            # directly instead of calling back into Python (same bytes)
            data = dict(data)
        try:
            text = encode_data(data)
        except (TypeError, ValueError, RecursionError) as exc:
            raise StoreError(
                f"event store {self.path}: event seq {event.seq} ({event.type}) has data "
                f"that cannot be stored as JSON: {exc}"
            ) from exc
        return (event.seq, event.tick, event.type, event.ts, event.source, text)

    def _check_seq(self, seq: int, after: int) -> None:
        if seq <= after:
            raise StoreError(f"event store {self.path}: event seq {seq} is not after seq {after}")

    def append(self, event: Event) -> None:
        """Record one committed event. Durable mode: committed when this returns."""
        settings = self.settings
        row = self._encode(event) if settings.wants(event.type) else None
        seq = event.seq
        with self._append_lock:
            if self._closed or seq <= self._last_seq:  # the checks, only called to raise
                self._check_open()
                self._check_seq(seq, self._last_seq)
            if row is not None:
                try:
                    if self._writer is not None:
                        self._put(row)
                    else:
                        self._db.append_one(row)
                except StoreError as exc:  # nothing recorded; counted by kind
                    self._failures.note(exc)
                    raise
            self._last_seq = seq
        if row is not None and settings.log_appends:
            _log.debug("event store %s: appended seq %d (%s)", self.path, seq, event.type)

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
                self._check_seq(event.seq, last)
                last = event.seq
            try:
                if self._writer is not None:
                    for row in rows:
                        self._put(row)
                elif rows:
                    self._db.commit(rows, last)
            except StoreError as exc:
                self._failures.note(exc)
                raise
            self._last_seq = last

    def _put(self, row: Row) -> None:
        """Fast and journal modes: the row into the journal (if any), then to the
        batch writer. A full journal waits until the writer committed all it holds;
        a row too large for it is committed here (as in durable mode)."""
        writer, journal = self._writer, self._journal
        assert writer is not None
        try:
            placed = journal is None or journal.append(row)
        except RecordTooLarge:  # committed here, after the rows before it
            writer.flush()
            self._db.commit([row], row[0])
            return
        if journal is not None and not placed:
            journal.waits += 1
            writer.flush()  # every row put is committed: the journal is empty
            if not journal.append(row):
                raise StoreError(f"event store {self.path}: the journal is still full")
        try:
            writer.put(row)
        except BaseException:
            if journal is not None:
                journal.undo()  # the emit raises: its row must not come back at open
            raise

    def _write_batch(self, rows: list[Row]) -> None:
        """Fast and journal modes: called by the ``BatchWriter`` thread only."""
        self._db.commit(rows, self._last_seq)
        if self._journal is not None:
            self._journal.committed_through(rows[-1][0])

    def _batch_failed(self, exc: BaseException, attempt: int) -> float | None:
        """The ``BatchWriter``'s thread could not commit a batch: counted once per
        outage; seconds until the next attempt (journal mode, an outage that may
        end: disk full, locked...) or None (give up: the store is broken)."""
        if attempt == 1 and isinstance(exc, StoreError):
            self._failures.note(exc)
        delay = None if self._journal is None else retry_delay(exc, attempt)
        self.retries += delay is not None
        return delay

    def flush(self) -> None:
        """Block until every event appended so far is committed (fast mode)."""
        self._check_open()
        if self._writer is not None:
            self._writer.flush()

    # ------------------------------------------------------ prune and clear

    def prune(self) -> int:
        """Apply retention now; returns how many events were deleted."""
        self.flush()
        return self._db.prune(self._last_seq)

    def clear(self, event_type: str | None = None) -> int:
        """Delete all events, or all of one type; ``last_seq`` is kept."""
        if event_type is not None and not isinstance(event_type, str):
            raise ConfigError(f"event type must be a string, not {event_type!r}")
        self.flush()
        return self._db.clear(event_type, self._last_seq)

    # --------------------------------------------------------------- reading

    @contextlib.contextmanager
    def _reading(self, action: str, flush: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection inside one read transaction (a consistent snapshot),
        after everything appended so far is committed (``flush``)."""
        if flush:
            self.flush()
        if self._readers is not None:
            with self._readers.snapshot(action) as conn:
                yield conn
            return
        with self._db.connection() as conn:
            self._check_open()
            with translated(self.path, action, self.lock_timeout):
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    conn.execute("COMMIT")

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
            rows = list(select_rows(conn, after_tick=after_tick, after_seq=after_seq,
                                    types=names, limit=limit, newest=newest))
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
            return explain_query(conn, after_tick=after_tick, after_seq=after_seq,
                                 types=type_list(types), limit=limit, newest=newest)

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
            for row in select_rows(conn, after_tick=after_tick, after_seq=after_seq, types=names,
                                   limit=limit, newest=bool(query.get("newest", False))):
                fp.write(row_json_line(row))
                fp.write("\n")
                count += 1
        return count

    def summary(self, after_tick: int | None = None) -> dict[str, int]:
        """Count of stored events by type, types sorted; ``after_tick`` counts only
        events with a greater tick."""
        check_query(after_tick, None, None)
        if after_tick is None:
            self.flush()
            return self._db.counts()
        with self._reading("summarising") as conn:
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
            high_water = read_meta(conn, "high_water", 0)
        return max(stored, high_water, self._last_seq)

    def statistics(self) -> StoreStatistics:
        """Appended and pruned (this session), stored now, pending (fast and
        journal modes). A journal-mode outage still answers (monitoring):
        ``stored`` is what is committed, ``pending`` what waits in the journal."""
        try:
            self.flush()
        except StoreError:
            if self._journal is None:
                raise
        with self._reading("counting", flush=False) as conn:
            stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        pending = self._writer.pending if self._writer is not None else 0
        checkpoints, checkpoint_failures = self._db.checkpoints
        return StoreStatistics(
            appended=self._db.appended,
            pruned=self._db.pruned,
            stored=int(stored),
            pending=pending,
            append_failures=self._failures.snapshot(),
            retries=self.retries,
            checkpoints=checkpoints,
            checkpoint_failures=checkpoint_failures,
            journal_waits=self.journal_waits,
            journal_orphans=self.journal_orphans,
        )

    # ----------------------------------------------------------------- close

    def close(self) -> None:
        """Write what is pending, record the high-water seq, close every connection.

        Raises ``StoreError`` (after closing) if the fast-mode writer had failed.
        """
        with self._append_lock:
            if self._closed:
                return
            self._closed = True
        failure: StoreError | None = None
        if self._writer is not None:
            try:
                self._writer.close()
            except StoreError as exc:
                failure = exc
        if self._readers is not None:
            self._readers.close()
        if self._journal is not None:
            if failure is None:  # every row is in the database
                self._journal.reset()
            self._journal.close()
            if failure is None:
                os.unlink(self._journal.path)
        self._db.close(None if failure is not None else self._last_seq)
        if failure is not None:
            raise failure
