"""Journal mode of the SQLite store: the memory-mapped journal, its recovery at
open (in any mode), wrapping, a full journal, torn records and bad files.
The kill -9 promise itself is tested in test_store_crash.py."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from pathlib import Path
from typing import Literal

import pytest
from tests.store.killed_child import run_then_kill

from moonbus.bus.event import Event
from moonbus.errors import ConfigError, StoreError
from moonbus.store.base import StoreSettings
from moonbus.store.factory import open_event_store
from moonbus.store.sqlite import SqliteEventStore
from moonbus.store.sqlite_journal import HEADER, MIN_JOURNAL_BYTES, Journal, journal_path
from moonbus.store.sqlite_query import Row

KEEP_ALL = StoreSettings(retention_ticks=None)


def ev(seq: int, pad: int = 10) -> Event:
    return Event.create("a" if seq % 2 else "b", {"n": seq, "pad": "x" * pad}, seq=seq,
                        tick=seq // 3, ts=seq)


def row(seq: int, pad: int = 10, tick: int | None = 0) -> Row:
    return (seq, tick, "a", seq, "host", f'{{"n":{seq},"pad":"{"x" * pad}"}}')


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "events.db")


def db_id(path: str) -> int:
    """The id in a store file's meta table (what its journal must carry)."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT value FROM meta WHERE key = 'db_id'").fetchone()[0])
    finally:
        conn.close()


def new_store(path: str) -> int:
    """Create an empty store file; its id."""
    SqliteEventStore(path, mode="durable").close()
    return db_id(path)


def test_journal_mode_stores_queries_and_removes_its_journal_at_close(db: str) -> None:
    with SqliteEventStore(db, mode="journal", settings=KEEP_ALL) as store:
        for seq in range(1, 101):
            store.append(ev(seq))
        assert os.path.exists(journal_path(db))
        assert [e.seq for e in store.query()] == list(range(1, 101))  # queries flush first
        assert store.query(after_seq=99)[0].data["n"] == 100
    assert not os.path.exists(journal_path(db))
    with SqliteEventStore(db) as store:
        assert store.last_seq() == 100


@pytest.mark.parametrize("mode", ["durable", "fast", "journal"])
def test_rows_left_in_a_journal_are_committed_when_the_file_is_opened(
    db: str, mode: Literal["durable", "fast", "journal"]
) -> None:
    with SqliteEventStore(db, settings=KEEP_ALL) as store:
        store.append_many([ev(1), ev(2), ev(3)])
    journal = Journal(journal_path(db), db_id=db_id(db))  # a journal-mode session that died
    for seq in range(2, 9):  # 2 and 3 are in the database already
        assert journal.append(row(seq, tick=None if seq == 5 else seq))
    journal.close()
    with SqliteEventStore(db, mode=mode, settings=KEEP_ALL) as store:
        events = store.query()
        assert [e.seq for e in events] == list(range(1, 9))
        assert events[4].tick is None and events[5].tick == 6
        assert events[7].data == {"n": 8, "pad": "x" * 10}
        assert store.last_seq() == 8
    assert not os.path.exists(journal_path(db))


def _torn_journal(db: str, torn: int, records: int = 5) -> None:
    """A journal of ``records`` rows whose record number ``torn`` (1-based) has a
    byte of its body changed, as a crash or a bad sector leaves it."""
    journal = Journal(journal_path(db), db_id=new_store(db))
    for seq in range(1, records + 1):
        assert journal.append(row(seq))
    journal.close()
    with open(journal_path(db), "r+b") as fp:
        fp.seek(HEADER)
        first = int.from_bytes(fp.read(4), "little") + 8  # every record has this size
        fp.seek(HEADER + (torn - 1) * first + 20)
        fp.write(b"\xff")


def test_a_torn_last_record_ends_recovery_quietly(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    _torn_journal(db, torn=5)
    with caplog.at_level(logging.INFO), SqliteEventStore(db) as store:
        assert [e.seq for e in store.query()] == [1, 2, 3, 4]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_corrupt_record_in_the_middle_stops_recovery_with_a_warning(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Records 4 and 5 are whole but come after a corrupt third: they are not
    replayed (seq must have no gap) and the warning says where and how much."""
    _torn_journal(db, torn=3)
    with open(journal_path(db), "rb") as fp:
        fp.seek(HEADER)
        size = int.from_bytes(fp.read(4), "little") + 8  # every record has this size
    with caplog.at_level(logging.INFO), SqliteEventStore(db) as store:
        assert [e.seq for e in store.query()] == [1, 2]
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    text = warning.getMessage()
    assert f"offset {HEADER + 2 * size} is corrupt" in text
    assert f"{3 * size} byte(s) from there on were not replayed" in text
    assert "2 whole event(s) after it (seq 4-5" in text and journal_path(db) in text


def test_a_stale_lap_past_the_last_record_is_not_recovered(db: str) -> None:
    journal = Journal(journal_path(db), MIN_JOURNAL_BYTES, db_id=1)
    seq = 0
    while journal.append(row(seq + 1, pad=200)):  # fill it
        seq += 1
    journal.committed_through(seq)  # all in the database: the next records wrap
    for more in range(seq + 1, seq + 4):
        assert journal.append(row(more, pad=200))
    assert journal.recover(after_seq=seq) == [row(s, pad=200) for s in range(seq + 1, seq + 4)]
    journal.close()


def test_a_full_journal_waits_for_the_writer_and_wraps(db: str) -> None:
    with SqliteEventStore(
        db, mode="journal", settings=KEEP_ALL, journal_bytes=MIN_JOURNAL_BYTES,
        flush_interval=30.0, batch_size=10_000,
    ) as store:
        store.append_many([ev(1)])
        for seq in range(2, 2001):  # ~0.5 MB of records through a 64 KiB journal
            store.append(ev(seq, pad=200))
        assert store.journal_waits > 0
        assert [e.seq for e in store.query()] == list(range(1, 2001))


def test_the_ring_reuses_committed_space_without_waiting(db: str) -> None:
    with SqliteEventStore(db, mode="journal", settings=KEEP_ALL,
                          journal_bytes=MIN_JOURNAL_BYTES) as store:
        for seq in range(1, 3001):
            store.append(ev(seq, pad=100))
            if seq % 100 == 0:
                store.flush()  # the writer keeps up: committed space is reused
        assert store.journal_waits == 0
        assert store.statistics().stored == 3000


def test_journal_mode_kill_before_any_commit_loses_nothing(db: str) -> None:
    """The batch writer never commits (flush_interval 60 s, huge batches): every
    acknowledged event is only in the journal when the process is killed."""
    child_code = (
        "import sys\n"
        "from moonbus.bus.event import Event\n"
        "from moonbus.store.sqlite import SqliteEventStore\n"
        "store = SqliteEventStore(sys.argv[1], mode='journal', flush_interval=60.0,\n"
        "                         batch_size=100000)\n"
        "for seq in range(1, 201):\n"
        "    store.append(Event.create('a', {'n': seq}, seq=seq, tick=seq, ts=seq))\n"
        "    print(seq, flush=True)\n"
        "sys.stdin.read()\n"
    )
    acked = run_then_kill(child_code, db,
                          read=lambda out: [int(out.readline()) for _ in range(200)])
    assert acked == list(range(1, 201))
    with SqliteEventStore(db, create=False) as store:
        events = store.query()
    assert [e.seq for e in events] == acked
    assert all(e.data["n"] == e.seq for e in events)


def test_bad_settings_and_files_are_refused(db: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a file"):
        SqliteEventStore(":memory:", mode="journal")
    with pytest.raises(ConfigError, match="journal_bytes"):
        SqliteEventStore(db, mode="journal", journal_bytes=1024)
    with pytest.raises(ConfigError, match="journal"):
        SqliteEventStore(db, mode="journaled")  # type: ignore[arg-type]
    foreign = journal_path(db)
    Path(foreign).write_bytes(b"not a journal" * 1000)
    with pytest.raises(StoreError, match="not a moonbus journal"):
        SqliteEventStore(db, mode="journal")
    assert Path(foreign).read_bytes() == b"not a journal" * 1000  # untouched
    os.unlink(foreign)
    os.symlink(tmp_path / "elsewhere", foreign)
    with pytest.raises(StoreError, match="journal"):
        SqliteEventStore(db, mode="journal")
    assert not (tmp_path / "elsewhere").exists()


def test_a_record_larger_than_half_the_journal_is_committed_in_its_append(db: str) -> None:
    """It was refused (StoreError): the default mode refused events a commit per
    emit stores (8 MiB journal: any event over 4 MiB). Now it is committed in
    its append, after the rows appended before it, and is in the file when the
    append returns (as in durable mode)."""
    with SqliteEventStore(db, mode="journal", journal_bytes=MIN_JOURNAL_BYTES,
                          settings=KEEP_ALL, flush_interval=60.0, batch_size=10_000) as store:
        store.append(ev(1))
        store.append(ev(2, pad=MIN_JOURNAL_BYTES))
        conn = sqlite3.connect(db)  # another connection: committed already, with 1
        try:
            assert [r[0] for r in conn.execute("SELECT seq FROM events")] == [1, 2]
        finally:
            conn.close()
        store.append(ev(3))
        events = store.query()
        assert [e.seq for e in events] == [1, 2, 3]
        assert events[1].data["pad"] == "x" * MIN_JOURNAL_BYTES


def test_the_url_selects_journal_mode(db: str) -> None:
    store = open_event_store(f"sqlite:///{db}?mode=journal&journal_bytes={MIN_JOURNAL_BYTES}")
    try:
        assert isinstance(store, SqliteEventStore) and store.mode == "journal"
    finally:
        store.close()
    with pytest.raises(ConfigError, match="durable, fast or journal"):
        open_event_store(f"sqlite:///{db}?mode=other")


def test_an_append_that_raises_leaves_nothing_in_the_journal(db: str) -> None:
    """A broken batch writer: the failing emit's row is taken back from the
    journal, so it does not reappear when the file is opened again."""
    store = SqliteEventStore(db, mode="journal", settings=KEEP_ALL)
    store.append(ev(1))
    store.flush()

    def broken(rows: list[Row]) -> None:
        raise StoreError("disk full (simulated)")

    store._writer._write = broken  # type: ignore[union-attr]
    store.append(ev(2))  # accepted: the writer fails in the background
    with pytest.raises(StoreError):
        store.flush()
    for _ in range(3):  # the bus retries the same seq: each attempt raises
        with pytest.raises(StoreError):
            store.append(ev(3))
    with pytest.raises(StoreError):
        store.close()
    assert os.path.exists(journal_path(db))  # kept: seq 2 was acknowledged
    with SqliteEventStore(db, settings=KEEP_ALL) as again:
        assert [e.seq for e in again.query()] == [1, 2]


def test_records_up_to_half_the_journal_always_fit_once_it_is_empty(db: str) -> None:
    with SqliteEventStore(db, mode="journal", settings=KEEP_ALL,
                          journal_bytes=MIN_JOURNAL_BYTES) as store:
        big = (MIN_JOURNAL_BYTES - HEADER) // 2 - 200
        for seq in range(1, 8):  # each one lands wherever the last one left the tail
            store.append(ev(seq, pad=big if seq % 2 else 300))
        assert [e.seq for e in store.query()] == list(range(1, 8))
        assert store.journal_waits > 0


def test_without_posix_fallocate_the_journal_is_written_out_in_full(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "posix_fallocate", raising=False)
    journal = Journal(journal_path(db), MIN_JOURNAL_BYTES)
    try:
        assert os.path.getsize(journal_path(db)) == MIN_JOURNAL_BYTES
        assert os.stat(journal_path(db)).st_blocks * 512 >= MIN_JOURNAL_BYTES  # no hole
        assert journal.append(row(1))
        assert journal.recover(after_seq=0) == [row(1)]
    finally:
        journal.close()


# ------------------------------------------- a journal only replays into its own db
def _dead_session_journal(db: str, ident: int, seqs: range) -> bytes:
    """What a journal-mode session of the database ``ident`` left when killed;
    the journal file's bytes."""
    journal = Journal(journal_path(db), MIN_JOURNAL_BYTES, db_id=ident)
    for seq in seqs:
        assert journal.append(row(seq))
    journal.close()
    return Path(journal_path(db)).read_bytes()


def _make_legacy(path: str) -> None:
    """Turn a journal file into the format before ids (magic MBJRNL01, no id)."""
    with open(path, "r+b") as fp:
        fp.write(b"MBJRNL01")
        fp.seek(24)
        fp.write(bytes(8))


@pytest.mark.parametrize("mode", ["durable", "journal"])
def test_a_journal_of_another_database_is_moved_aside_not_replayed(
    db: str, mode: Literal["durable", "journal"], caplog: pytest.LogCaptureFixture
) -> None:
    """The user deleted events.db, the journal of its killed session stayed: a
    new events.db must not receive the old file's events."""
    old = new_store(db)
    left = _dead_session_journal(db, old, range(1, 6))
    os.unlink(db)
    with caplog.at_level(logging.WARNING), SqliteEventStore(db, mode=mode) as store:
        assert store.query() == [] and store.last_seq() == 0
        assert store.journal_orphans == 1
        assert store.statistics().journal_orphans == 1  # also in /metrics
        store.append(ev(1))
    orphan = f"{journal_path(db)}.orphan-{old:016x}"
    assert Path(orphan).read_bytes() == left  # kept as it was, for whoever wants it
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert journal_path(db) in warning and orphan in warning and f"id {old:016x}" in warning
    assert f"{db}:" in warning and f"{db_id(db):016x}" in warning
    with SqliteEventStore(db) as again:  # its own (fresh) journal: no second warning
        assert [e.seq for e in again.query()] == [1] and again.journal_orphans == 0


def test_a_db_copied_next_to_a_foreign_journal_keeps_its_events(db: str, tmp_path: Path) -> None:
    other = str(tmp_path / "other.db")
    with SqliteEventStore(other, settings=KEEP_ALL) as store:
        store.append_many([ev(1), ev(2)])
    _dead_session_journal(db, new_store(db), range(1, 9))  # db's own killed session
    os.replace(other, db)  # copied over it; the journal stayed
    with SqliteEventStore(db, settings=KEEP_ALL) as store:
        assert [e.seq for e in store.query()] == [1, 2]
        assert store.journal_orphans == 1
    taken = [p.name for p in tmp_path.iterdir() if ".orphan-" in p.name]
    assert len(taken) == 1
    # the same again: the first orphan's name is taken, the second gets "-1"
    _dead_session_journal(db, 12345, range(3, 5))
    Path(journal_path(db) + ".orphan-0000000000003039").write_bytes(b"taken")
    with SqliteEventStore(db, settings=KEEP_ALL) as store:
        assert [e.seq for e in store.query()] == [1, 2]
    assert os.path.exists(journal_path(db) + ".orphan-0000000000003039-1")


def test_a_legacy_journal_replays_into_a_legacy_database_which_then_gets_an_id(
    db: str,
) -> None:
    new_store(db)
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM meta WHERE key = 'db_id'")  # a file from before ids
    conn.commit()
    conn.close()
    _dead_session_journal(db, 0, range(1, 4))
    _make_legacy(journal_path(db))
    with SqliteEventStore(db, settings=KEEP_ALL) as store:
        assert [e.seq for e in store.query()] == [1, 2, 3]
        assert store.journal_orphans == 0
        ident = db_id(db)
        assert ident != 0
        with open(journal_path(db), "rb") as fp:  # rewritten in the current format
            head = fp.read(32)
        assert head[:8] == b"MBJRNL02" and int.from_bytes(head[24:], "little") == ident


def test_a_legacy_journal_next_to_a_database_with_an_id_is_moved_aside(db: str) -> None:
    _dead_session_journal(db, new_store(db), range(1, 4))
    _make_legacy(journal_path(db))
    with SqliteEventStore(db) as store:
        assert store.query() == [] and store.journal_orphans == 1
    assert os.path.exists(journal_path(db) + ".orphan-legacy")


def test_a_legacy_database_without_a_journal_gets_an_id_at_open(db: str) -> None:
    new_store(db)
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM meta WHERE key = 'db_id'")
    conn.commit()
    conn.close()
    with SqliteEventStore(db, mode="durable"):
        pass
    assert db_id(db) != 0


def test_no_room_for_the_journal_falls_back_to_durable_only_by_default(
    db: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(StoreError, match="cannot allocate") as refused:
        SqliteEventStore(db, mode="journal")  # asked for: refused
    assert refused.value.kind == "disk_full"
    assert not os.path.exists(journal_path(db))  # the empty file made is gone
    with caplog.at_level(logging.WARNING), SqliteEventStore(db) as store:
        assert store.mode == "durable"
        store.append(ev(1))
        assert [e.seq for e in store.query()] == [1]
    assert "runs in durable mode" in caplog.text and not os.path.exists(journal_path(db))
