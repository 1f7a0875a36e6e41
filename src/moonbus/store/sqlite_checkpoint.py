"""WAL checkpoints for the SQLite event store, off the appending thread.

Why: with SQLite's default ``wal_autocheckpoint`` the connection whose commit
takes the WAL past 1,000 pages runs the checkpoint itself, inside that
commit: it copies every page of the WAL into the database file and fsyncs
both. In a durable store that is one ``emit`` in ~250 taking 3-10 ms (the
whole tail of the emit latency: measured p99 0.35 ms and max 11 ms of the
emitter's own time, against p99 0.28 ms and max 1.7 ms without it). So the
write connection turns autocheckpoint off and a ``Checkpointer`` thread, with
a connection of its own, runs ``PRAGMA wal_checkpoint(PASSIVE)`` once the
writer has committed about ``every`` WAL frames since the last one (an
estimate: ``FRAMES_PER_COMMIT`` per transaction plus one per
``ROWS_PER_FRAME`` rows, close to what one-row commits and 1,000-row batches
of the store's rows write), and at
least every ``interval`` seconds while anything was committed since the last
(a fast-mode store commits few, large transactions).

Why this keeps every promise of the store:

* Durability is untouched: ``append`` still returns after its transaction's
  COMMIT has written it to the WAL (see ``moonbus.store.sqlite``). A
  checkpoint only copies frames that are already committed into the main
  file; a process killed in the middle of one leaves the WAL (and the
  ``-shm`` index) saying which frames are in the file, and the next open
  replays the WAL. With ``synchronous=NORMAL`` SQLite fsyncs the WAL before
  and the database after each checkpoint, exactly as the autocheckpoint did.
* A PASSIVE checkpoint never takes the write lock and never waits for a
  lock (no busy handler): it copies what it can without blocking the writer
  or the readers, so it cannot stall an ``emit``. SQLite restarts the WAL
  from its start (so the file stops growing, and ``journal_size_limit``
  truncates it) only when a write transaction begins with *every* frame
  already copied. So a checkpoint first waits (at most ``interval``) for the
  writer to be idle for ``QUIET`` seconds: a game loop's pause between two
  frames lets it reach the end of the WAL. A writer that never pauses keeps
  adding frames while the checkpoint copies, and the WAL would grow without
  bound; so when a checkpoint began with more than ``max_frames`` frames in
  the WAL (``WAL_CHECKPOINT_FRAMES``: 16 MiB) and commits came meanwhile, a
  second one copies the frames added since while holding the writer's lock,
  and the next append restarts the WAL (``locked_checkpoints``). Only such a
  writer ever waits for a checkpoint, once per ~16 MiB of WAL (SQLite's
  autocheckpoint made every writer wait once per 4 MiB). The WAL stays
  within about 16 MiB plus what is committed during one checkpoint.
* A checkpoint that fails (disk full, I/O error) loses nothing: the frames
  stay in the WAL, which grows until a later checkpoint succeeds. The
  failure is logged (once per kind of failure in a row) and counted
  (``failures``); appends go on.

Threads: the ``Checkpointer`` owns its thread and its connection; ``note_commit``
is called by whoever holds the writer's lock (any thread); ``close`` by the
store's ``close``, before the write connection closes, so that the write
connection is the last one and SQLite's own close-time checkpoint removes
the WAL as before.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from moonbus.errors import ConfigError
from moonbus.store.sqlite_schema import open_checkpointer, store_error

__all__ = ["Checkpointer"]

_log = logging.getLogger(__name__)

# WAL frames written by a commit, estimated: a one-row commit touches the table
# and three index leaves; a large batch about one page per ROWS_PER_FRAME rows.
FRAMES_PER_COMMIT = 4
ROWS_PER_FRAME = 8
# A checkpoint waits for the writer to have been idle this long (seconds), so
# that it copies the WAL to its end between two bursts of appends.
QUIET = 0.002


class Checkpointer:
    """A daemon thread running passive WAL checkpoints for one store file."""

    def __init__(
        self,
        path: str,
        *,
        writer_lock: threading.Lock,
        every: int,
        interval: float,
        max_frames: int,
        lock_timeout: float,
    ) -> None:
        if every < 1:
            raise ConfigError(f"checkpoint_every must be >= 1 frame, not {every!r}")
        if not 0 < interval < float("inf"):
            raise ConfigError(
                f"checkpoint interval must be a positive number of seconds, not {interval!r}"
            )
        self.path = path
        self.every = every
        self.interval = interval
        self.max_frames = max_frames
        self.checkpoints = 0  # checkpoints run (thread-owned, read anywhere)
        self.locked_checkpoints = 0  # of which holding the writer's lock (idem)
        self.failures = 0  # checkpoints that raised (idem)
        self._writer_lock = writer_lock
        # written under the writer's lock, read by the thread (a stale read only
        # delays a checkpoint by one look)
        self._commits = 0
        self._since = 0  # estimated frames since the last wake-up
        self._checkpointed_at = 0  # self._commits when the last checkpoint began (thread)
        self._last_error: str | None = None  # (thread)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._conn: sqlite3.Connection = open_checkpointer(path, lock_timeout=lock_timeout)
        self._thread = threading.Thread(
            target=self._run, name=f"event store {path} checkpointer", daemon=True
        )
        self._thread.start()

    def note_commit(self, rows: int) -> None:
        """One more transaction of ``rows`` rows committed (called under the
        writer's lock: cheap, never blocks)."""
        self._commits += 1
        self._since += FRAMES_PER_COMMIT + rows // ROWS_PER_FRAME
        if self._since >= self.every:
            self._since = 0
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set() or self._commits == self._checkpointed_at:
                continue
            self._wait_quiet()
            if not self._stop.is_set():
                self._checkpoint()

    def _wait_quiet(self) -> None:
        """Wait (at most ``interval``) until no commit came for ``QUIET`` seconds."""
        waited = 0.0
        while waited < self.interval:
            seen = self._commits
            if self._stop.wait(QUIET):
                return
            waited += QUIET
            if self._commits == seen:
                return

    def _checkpoint(self) -> None:
        started = self._checkpointed_at = self._commits
        try:
            frames = self._passive()
            if frames > self.max_frames and self._commits != started:
                # the writer never paused long enough: copy the few frames it
                # added meanwhile holding its lock, so its next append restarts
                # the WAL
                with self._writer_lock:
                    self._passive()
                self.locked_checkpoints += 1
        except sqlite3.Error as exc:
            self.failures += 1
            error = store_error(self.path, "checkpointing the WAL", exc)
            if error.kind != self._last_error:
                self._last_error = error.kind
                _log.warning(
                    "%s; the events stay in the WAL, which grows until a checkpoint succeeds",
                    error,
                )
            return
        if self._last_error is not None:
            self._last_error = None
            _log.info("event store %s: WAL checkpoints succeed again", self.path)

    def _passive(self) -> int:
        """One PASSIVE checkpoint, copying every frame committed when it began;
        returns how many frames the WAL held then."""
        row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
        self.checkpoints += 1
        return int(row[1])

    def close(self) -> None:
        """Stop the thread (waiting for a checkpoint in progress) and close its connection."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self._conn.close()
