"""Opening an SQLite store's journal: replaying what it holds into its own
database, and only its own.

Why a module of its own: at open a store finds ``<db>-mbjournal`` and commits
the acknowledged rows it holds (any mode: those emits returned). A journal
left by *another* database (the file was deleted or replaced while the journal
stayed, or a database was copied next to a foreign journal) must not be
committed into this one: its rows would be wrong events under numbers this
database may already use. So each database has a random id in its ``meta``
table (``db_id``, given when the file is created), each journal carries its
database's id in its header, and a journal whose id is not this database's is
moved aside, not replayed: renamed to ``<db>-mbjournal.orphan-<its id in
hex>`` (``-1``, ``-2``... if that name is taken), logged at WARNING naming
both files, counted (``SqliteEventStore.journal_orphans``), and a fresh
journal is made. Its rows stay readable there for whoever knows where they
belong; nothing deletes them.

Journals written before ids existed (magic ``MBJRNL01``, no id): such a
journal is replayed only into a database that has no id yet either (a file
made by the same older moonbus); the database then gets its id and the journal
is rewritten in the current format. A legacy journal next to a database that
has an id (created or stamped by this version) cannot be that database's
current journal and is moved aside as above, under ``.orphan-legacy``.

Rows that cannot be committed at open (a full disk, the file locked: an
outage that may end) stay in the journal in journal mode: the open goes on
and hands them to the store's batch writer, which retries them like any
failed batch (``JournalOpen.pending``). Another mode (or a legacy database)
cannot leave them to a writer: the open fails (``JournalReplayError``,
counting them). Why: a server that crashed on a full disk must be able to
start again there, as a durable-mode store does, refusing emits until there
is room, and lose nothing.

Threads: called once, by the thread opening the store, holding the store's
writer lock (``sqlite_lock``), so no other store uses the journal.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from moonbus.errors import StoreError
from moonbus.store.event_codec import Row
from moonbus.store.sqlite_journal import DEFAULT_JOURNAL_BYTES, Journal, journal_path
from moonbus.store.sqlite_schema import new_db_id

if TYPE_CHECKING:
    from moonbus.store.sqlite_writer import SqliteWriter

__all__ = ["JournalOpen", "JournalReplayError", "lost_note", "open_journal",
           "open_store_journal", "retry_delay"]

_log = logging.getLogger(__name__)

MAX_ORPHAN_NAMES = 1000  # ".orphan-<id>-1" ... before giving up with a StoreError
# Journal-mode batch commits that failed for one of these reasons are tried
# again (their rows are safe in the journal meanwhile; appends raise until then).
RETRIED_KINDS = frozenset({"disk_full", "locked", "io", "read_only"})
RETRY_FIRST, RETRY_MAX = 0.05, 1.0  # seconds between attempts: doubling up to the max


def retry_delay(exc: BaseException, attempt: int) -> float | None:
    """Seconds before a journal-mode store's writer tries a failed batch again
    (``attempt`` failed so far), None to give up: a failure that is not an
    outage which may end (corrupt file, a bug) breaks the store."""
    if not isinstance(exc, StoreError) or exc.kind not in RETRIED_KINDS:
        return None
    return min(RETRY_MAX, RETRY_FIRST * 2.0 ** (attempt - 1))


class JournalReplayError(StoreError):
    """The rows a journal holds could not be committed at open (the cause's
    ``kind``): they stay in it, the store is not opened. Not a reason to fall
    back to durable mode, which would meet the same failure."""


class JournalOpen:
    """What ``open_journal`` found: the journal to keep (journal mode; None if
    there was no room for it and the store falls back to durable mode) and the
    path a foreign journal was moved to (None: there was none)."""

    def __init__(self, journal: Journal | None, orphan: str | None,
                 pending: list[Row] | None = None) -> None:
        self.journal = journal
        self.orphan = orphan
        # rows the journal holds that could not be committed at open (journal
        # mode, an outage that may end): the store's batch writer retries them
        self.pending: list[Row] = pending or []


def lost_note(journal: Journal | None) -> str:
    """What became of the events a broken batch writer did not commit."""
    if journal is None:
        return "were not written"
    return (f"were not written: they stay in {journal.path} and are committed when the "
            "store is opened again")


def open_store_journal(
    db: SqliteWriter, *, keep: bool, capacity: int, fallback: bool
) -> JournalOpen:
    """``open_journal`` for the store whose write side is ``db`` (a file).

    ``fallback`` (journal mode by default, not asked for): a disk without room
    for a new journal of ``capacity`` bytes does not refuse the open; the store
    runs in durable mode this session (no journal, logged at WARNING), which
    on a full disk still opens, refuses each emit while it is full and
    recovers by itself."""
    def opening(keep: bool) -> JournalOpen:
        return open_journal(
            db.path,
            db.db_id or new_db_id(),
            db.committed_seq,
            lambda rows: db.commit(rows, rows[-1][0]),
            keep=keep,
            stamp=db.stamp_id,
            legacy_db=db.db_id == 0,
            capacity=capacity,
        )

    try:
        return opening(keep)
    except StoreError as exc:
        if not (keep and fallback and exc.kind == "disk_full") or isinstance(
            exc, JournalReplayError
        ):
            raise
        _log.warning(
            "event store %s: %s; this session runs in durable mode (a commit per emit) "
            "instead of the default journal mode", db.path, exc,
        )
        return opening(False)


def open_journal(
    db_path: str,
    db_id: int,
    committed_seq: int,
    commit: Callable[[list[Row]], None],
    *,
    keep: bool,
    stamp: Callable[[int], None],
    legacy_db: bool,
    capacity: int = DEFAULT_JOURNAL_BYTES,
) -> JournalOpen:
    """Commit (with ``commit``) the rows the journal of ``db_path`` holds above
    ``committed_seq`` if it is this database's (``db_id``; see the module
    docstring), else move it aside. ``legacy_db``: the database has no id yet;
    ``stamp(db_id)`` records ``db_id`` in it (called after a legacy journal's
    rows are committed, before the journal is rewritten). Returns the emptied
    journal (``keep``: journal mode) or removes it."""
    path = journal_path(os.path.realpath(db_path))  # one journal, however it is named
    orphan: str | None = None
    journal: Journal | None = None
    try:  # the journal holds the database's events: no more readable than it
        mode = os.stat(db_path).st_mode & 0o666
    except OSError:
        mode = 0o600
    if os.path.lexists(path):
        journal = Journal(path, capacity, db_id, mode)
        theirs = journal.file_db_id
        if (theirs == db_id) if theirs is not None else legacy_db:
            pending = _replay(journal, db_path, committed_seq, commit, stamp, legacy_db, keep)
            if pending:
                return JournalOpen(journal, None, pending)
        else:
            journal.close()
            journal = None
            orphan = _move_aside(path, theirs)
            _log.warning(
                "event store %s: its journal %s belongs to another database (%s; this "
                "database's id is %016x), so it was not replayed: moved to %s",
                db_path, path,
                "no id: an older moonbus wrote it" if theirs is None else f"id {theirs:016x}",
                db_id, orphan,
            )
    if legacy_db:
        stamp(db_id)
    if not keep:
        if journal is not None:
            journal.close()
            os.unlink(path)
        return JournalOpen(None, orphan)
    if journal is None:
        journal = Journal(path, capacity, db_id, mode)
        try:
            journal.reset()
        except BaseException:
            journal.close()
            raise
    return JournalOpen(journal, orphan)


def _replay(
    journal: Journal,
    db_path: str,
    committed_seq: int,
    commit: Callable[[list[Row]], None],
    stamp: Callable[[int], None],
    legacy_db: bool,
    keep: bool,
) -> list[Row]:
    """Commit the journal's rows above ``committed_seq``, then empty it. If they
    cannot be committed for a reason that may pass (full disk, locked) and the
    journal is kept (journal mode, a database with an id), it is kept as it is
    and they are returned, for the batch writer to retry; else the open fails."""
    try:
        rows = journal.recover(committed_seq)
        if rows:
            try:
                commit(rows)
            except StoreError as exc:
                if keep and not legacy_db and exc.kind in RETRIED_KINDS:
                    _log.warning(
                        "event store %s: the %d event(s) left in its journal (seq %d-%d) "
                        "cannot be committed yet (%s); they stay in it and are retried",
                        db_path, len(rows), rows[0][0], rows[-1][0], exc,
                    )
                    journal.resume()
                    return rows
                raise JournalReplayError(
                    f"event store {db_path}: the {len(rows)} event(s) left in its journal "
                    f"(seq {rows[0][0]}-{rows[-1][0]}) cannot be committed ({exc}); they "
                    f"stay in {journal.path} for the next open", kind=exc.kind,
                ) from exc
            _log.info(
                "event store %s: committed %d event(s) left in its journal (seq %d-%d)",
                db_path, len(rows), rows[0][0], rows[-1][0],
            )
        if legacy_db:
            stamp(journal.db_id)  # before the journal says so
        journal.reset()
        return []
    except BaseException:
        journal.close()
        raise


def _move_aside(path: str, their_id: int | None) -> str:
    """Rename the journal at ``path`` to a free ``.orphan-...`` name; that name."""
    base = f"{path}.orphan-{'legacy' if their_id is None else f'{their_id:016x}'}"
    for n in range(MAX_ORPHAN_NAMES):
        target = base if n == 0 else f"{base}-{n}"
        if os.path.lexists(target):
            continue
        try:
            os.rename(path, target)
        except OSError as exc:
            raise StoreError(
                f"event store journal {path}: it belongs to another database and "
                f"cannot be moved aside to {target} ({exc})"
            ) from exc
        return target
    raise StoreError(
        f"event store journal {path}: it belongs to another database and "
        f"{MAX_ORPHAN_NAMES} names {base}[-N] are taken; move them away"
    )
