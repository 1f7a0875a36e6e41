"""Hostile cases for the SQLite store's journal (``sqlite_journal``,
``sqlite_journal_open``): the ring's edges, paths that name one database twice,
and what a careless operator leaves next to a store file."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from tests.store.killed_child import run_then_kill, said_done

from moonbus.bus.event import Event
from moonbus.errors import StoreError
from moonbus.store.base import StoreSettings
from moonbus.store.sqlite import SqliteEventStore
from moonbus.store.sqlite_journal import HEADER, MIN_JOURNAL_BYTES, Journal

KEEP_ALL = StoreSettings(retention_ticks=None)
_FIXED = 8 + 33 + 2  # record header, body's fixed part, type "a" and source "h"


def _row(seq: int, size: int) -> tuple[int, int, str, int, str, str]:
    """A row whose journal record is ``size`` bytes."""
    return (seq, 0, "a", seq, "h", "x" * (size - _FIXED))


def ev(seq: int) -> Event:
    return Event.create("a", {"n": seq}, seq=seq, tick=seq, ts=seq)


@pytest.mark.parametrize("slack", [4, 5, 6, 7, 8, 100])
def test_a_wrap_marker_in_the_last_bytes_of_the_ring_is_followed(
    tmp_path: Path, slack: int
) -> None:
    """The writer wraps when a record does not fit before the end, leaving at
    least 4 bytes there for the marker; recovery must follow a marker in the
    last 4-7 bytes too (it read 8 bytes there and stopped: the records after
    the wrap, acknowledged, were reported corrupt and not replayed)."""
    path = str(tmp_path / "j")
    journal = Journal(path, MIN_JOURNAL_BYTES, 7)
    journal.reset()
    seq = 0
    while MIN_JOURNAL_BYTES - journal._tail > 2000:
        seq += 1
        assert journal.append(_row(seq, 500))
    journal.committed_through(seq)  # in the database: the ring's start is free
    seq += 1
    assert journal.append(_row(seq, MIN_JOURNAL_BYTES - journal._tail - slack))
    assert MIN_JOURNAL_BYTES - journal._tail == slack
    for n in (1, 2, 3):
        assert journal.append(_row(seq + n, 200))
    assert journal._tail == HEADER + 3 * 200  # wrapped
    journal.close()  # the process dies here
    again = Journal(path, MIN_JOURNAL_BYTES, 7)
    try:
        assert [r[0] for r in again.recover(seq - 1)] == [seq, seq + 1, seq + 2, seq + 3]
        assert again.corrupt_bytes == 0
    finally:
        again.close()


def test_a_second_writer_through_a_symlink_is_refused(tmp_path: Path) -> None:
    """The writer lock was ``<path>.lock`` of the path as given: a store opened
    as ``link.db`` (a symlink to ``a.db``) took a lock of its own and wrote
    the same file, and every batch of one of them failed on UNIQUE(seq)."""
    real = tmp_path / "a.db"
    SqliteEventStore(str(real)).close()
    (tmp_path / "link.db").symlink_to("a.db")
    (tmp_path / "dir").symlink_to(tmp_path)
    with SqliteEventStore(str(real), settings=KEEP_ALL):
        for other in ("link.db", "dir/a.db", "dir/link.db"):
            with pytest.raises(StoreError, match="another writer"):
                SqliteEventStore(str(tmp_path / other))
    with SqliteEventStore(str(tmp_path / "link.db"), settings=KEEP_ALL), \
            pytest.raises(StoreError, match="another writer"):
        SqliteEventStore(str(real))


def test_a_journal_left_through_a_symlink_is_replayed_by_the_real_path(tmp_path: Path) -> None:
    """A session that opened the store through a symlink and was killed: its
    acknowledged events come back when the store is opened by its real name
    (the journal was ``link.db-mbjournal``, which ``a.db`` never looked at)."""
    real = tmp_path / "a.db"
    SqliteEventStore(str(real)).close()
    (tmp_path / "link.db").symlink_to("a.db")
    child_code = (
        "import sys\n"
        "from moonbus.bus.event import Event\n"
        "from moonbus.store.sqlite import SqliteEventStore\n"
        "store = SqliteEventStore(sys.argv[1], flush_interval=60.0, batch_size=100000)\n"
        "for seq in range(1, 51):\n"
        "    store.append(Event.create('a', {'n': seq}, seq=seq, tick=seq, ts=seq))\n"
        "print('done', flush=True)\n"
        "sys.stdin.read()\n"
    )
    run_then_kill(child_code, str(tmp_path / "link.db"), read=said_done)
    with SqliteEventStore(str(real), settings=KEEP_ALL) as store:
        assert [e.seq for e in store.query()] == list(range(1, 51))
    assert not (tmp_path / "link.db-mbjournal").exists()


def test_the_journal_is_no_more_readable_than_its_database(tmp_path: Path) -> None:
    """It was made 0644 whatever the database's mode: an operator's chmod 600
    of events.db (player data) left every recent event readable by any local
    user in events.db-mbjournal (SQLite's -wal and -shm copy the db's mode)."""
    db = tmp_path / "events.db"
    SqliteEventStore(str(db)).close()
    db.chmod(0o600)
    journal = tmp_path / "events.db-mbjournal"
    with SqliteEventStore(str(db), settings=KEEP_ALL) as store:
        store.append(ev(1))
        store.flush()
        assert journal.stat().st_mode & 0o777 == 0o600
    journal.touch(0o644)  # an older moonbus's journal (empty: taken as new)
    journal.chmod(0o644)
    with SqliteEventStore(str(db), settings=KEEP_ALL):
        assert journal.stat().st_mode & 0o777 == 0o600


def test_journal_rows_that_cannot_be_committed_at_open_are_retried_by_the_writer(
    tmp_path: Path,
) -> None:
    """Another connection holds the write lock when the store opens: the rows its
    journal holds stay there and go to the batch writer (the open was refused);
    calls raise StoreError (locked) meanwhile, and they land once it lets go."""
    db = str(tmp_path / "events.db")
    with SqliteEventStore(db, settings=KEEP_ALL) as store:
        store.append(ev(1))
        db_id = store._db.db_id
    journal = Journal(db + "-mbjournal", MIN_JOURNAL_BYTES, db_id)
    journal.reset()
    for seq in range(2, 40):
        assert journal.append((seq, seq, "a", seq, "h", f'{{"n": {seq}}}'))
    journal.close()  # a session killed before its writer committed 2-39
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        store = SqliteEventStore(db, settings=KEEP_ALL, lock_timeout=0.05)
    except BaseException:
        other.close()
        raise
    try:
        assert store.mode == "journal"
        with pytest.raises(StoreError) as caught:
            store.flush()
        assert caught.value.kind == "locked"
        other.execute("ROLLBACK")
        store.append(ev(40))
        assert [e.seq for e in store.query()] == list(range(1, 41))
    finally:
        other.close()
        store.close()
    with SqliteEventStore(db, settings=KEEP_ALL) as store:
        assert [e.seq for e in store.query()] == list(range(1, 41))


def test_records_past_a_corrupt_one_do_not_come_back_after_the_next_session(
    tmp_path: Path,
) -> None:
    """A flaky disk corrupts the first record after a dead session's wrap: the
    open replays up to it and warns that the ones after it are not replayed.
    Those stayed in the ring. The next session numbers on from the corrupt
    one's seq and starts writing where it was; with events of one size (common
    in a game) its first record ends exactly where the old next one starts.
    Killed then, the next recovery followed the chain into the old session's
    records (seqs still increasing) and committed them after the new one: two
    histories mixed under one numbering."""
    path = str(tmp_path / "j")
    journal = Journal(path, MIN_JOURNAL_BYTES, 7)
    journal.reset()
    seq = 0
    while journal._tail != HEADER + 143 or seq < 10:  # until the ring wrapped
        seq += 1
        assert journal.append((seq, seq, "a", seq, "h", "o" * 100))  # 143-byte records
        journal.committed_through(seq - 5)  # the writer keeps 5 behind
    wrapped = seq  # the first record at HEADER
    for more in range(1, 6):
        assert journal.append((seq + more, seq + more, "a", seq + more, "h", "o" * 100))
    journal.close()
    with open(path, "r+b") as fp:  # a byte of the record at HEADER goes bad
        fp.seek(HEADER + 30)
        fp.write(b"\xee")
    journal = Journal(path, MIN_JOURNAL_BYTES, 7)
    assert [r[0] for r in journal.recover(wrapped - 5)][-1] == wrapped - 1
    assert journal.corrupt_bytes > 0
    journal.reset()  # committed through wrapped - 1; the next session goes on
    assert journal.append((wrapped, 0, "a", 0, "h", "n" * 100))
    journal.close()  # killed before its writer committed it
    again = Journal(path, MIN_JOURNAL_BYTES, 7)
    try:
        rows = again.recover(wrapped - 1)
        assert [(r[0], r[5][0]) for r in rows] == [(wrapped, "n")]
    finally:
        again.close()


def test_resume_after_a_corrupt_record_wipes_around_the_records_kept(tmp_path: Path) -> None:
    """The same as a reset after a corrupt record, when the rows before it could
    not be committed at open (``resume``): the ring outside them is zeroed."""
    path = str(tmp_path / "j")
    journal = Journal(path, MIN_JOURNAL_BYTES, 7)
    journal.reset()
    for seq in range(1, 21):
        assert journal.append((seq, seq, "a", seq, "h", "o" * 100))
    journal.close()
    with open(path, "r+b") as fp:  # record 5 goes bad
        fp.seek(HEADER + 4 * 143 + 30)
        fp.write(b"\xee")
    journal = Journal(path, MIN_JOURNAL_BYTES, 7)
    assert [r[0] for r in journal.recover(0)] == [1, 2, 3, 4]
    journal.resume()  # 1-4 go to the writer; the next session appends 5, same size
    assert journal.append((5, 0, "a", 0, "h", "n" * 100))
    journal.close()
    again = Journal(path, MIN_JOURNAL_BYTES, 7)
    try:
        assert [(r[0], r[5][0]) for r in again.recover(0)] == [
            (1, "o"), (2, "o"), (3, "o"), (4, "o"), (5, "n")]
    finally:
        again.close()


def test_a_journal_cut_short_says_so(tmp_path: Path) -> None:
    """It said "not a moonbus journal file" about a moonbus journal whose file
    is shorter than its header's capacity: the operator was sent looking for
    a foreign file instead of a truncated journal."""
    db = str(tmp_path / "events.db")
    SqliteEventStore(db).close()
    journal = Journal(db + "-mbjournal", MIN_JOURNAL_BYTES, 7)
    journal.reset()
    journal.close()
    for size in (HEADER + 200, 100):
        os.truncate(db + "-mbjournal", size)
        with pytest.raises(StoreError, match=f"header says {MIN_JOURNAL_BYTES} bytes but the "
                                             f"file has {size}"):
            SqliteEventStore(db)
