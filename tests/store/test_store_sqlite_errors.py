"""Files that are not ours, corrupt or locked: a clear StoreError, and the bytes untouched."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from moonbus.bus.event import Event
from moonbus.errors import StoreError
from moonbus.store.sqlite import SqliteEventStore
from moonbus.store.sqlite_schema import APPLICATION_ID


def snapshot(path: Path) -> dict[str, bytes]:
    """The bytes of the database and any WAL/SHM files next to it."""
    files = {}
    for suffix in ("", "-wal", "-shm", "-journal"):
        candidate = Path(str(path) + suffix)
        if candidate.exists():
            files[suffix] = candidate.read_bytes()
    return files


def make_store(path: Path, n: int = 200) -> None:
    with SqliteEventStore(str(path)) as store:
        store.append_many(
            Event.create("a", {"n": seq, "pad": "x" * 300}, seq=seq, tick=seq)
            for seq in range(1, n + 1)
        )


def test_text_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes\n" * 50)
    before = snapshot(path)
    with pytest.raises(StoreError, match=rf"{path}.*not an SQLite database"):
        SqliteEventStore(str(path))
    assert snapshot(path) == before


def test_other_applications_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "game.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE players (name TEXT)")
    conn.execute("INSERT INTO players VALUES ('ada')")
    conn.commit()
    conn.close()
    before = snapshot(path)
    with pytest.raises(StoreError, match=rf"{path}.*not a moonbus event store"):
        SqliteEventStore(str(path))
    assert snapshot(path) == before


def test_newer_schema_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    make_store(path, 3)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = snapshot(path)
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteEventStore(str(path))
    assert snapshot(path) == before


def test_truncated_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    make_store(path)
    path.write_bytes(path.read_bytes()[:60])
    before = snapshot(path)
    with pytest.raises(StoreError, match=rf"{path}.*corrupt or not an SQLite database"):
        SqliteEventStore(str(path))
    assert snapshot(path) == before


def test_corrupt_schema_page_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    make_store(path)
    data = bytearray(path.read_bytes())
    data[100:4096] = bytes([0xA5]) * (4096 - 100)  # page 1 after the header: sqlite_master
    path.write_bytes(bytes(data))
    before = snapshot(path)
    with pytest.raises(StoreError, match=rf"{path}.*corrupt"):
        SqliteEventStore(str(path))
    assert snapshot(path) == before


def test_corrupt_data_page_fails_queries_with_store_error(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    make_store(path, 400)
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    for page in range(2, len(data) // page_size):
        start = page * page_size
        data[start : start + page_size] = bytes([0x5A]) * page_size
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=rf"{path}.*corrupt"), SqliteEventStore(str(path)) as store:
        store.query()


def test_directory_and_missing_places(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        SqliteEventStore(str(tmp_path))
    with pytest.raises(StoreError, match="does not exist"):
        SqliteEventStore(str(tmp_path / "no" / "such" / "dir.db"))
    with pytest.raises(StoreError, match="no such file"):
        SqliteEventStore(str(tmp_path / "missing.db"), create=False)
    assert not (tmp_path / "missing.db").exists()


def test_empty_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with SqliteEventStore(str(path)) as store:
        store.append(Event.create("a", None, seq=1))
        assert store.last_seq() == 1


_HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def lock_holder() -> Iterator[object]:
    processes: list[subprocess.Popen[str]] = []

    def hold(path: Path) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", _HOLD_LOCK, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "locked"
        return process

    yield hold
    for process in processes:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(10)
        assert process.stdout is not None
        process.stdout.close()


def test_locked_existing_store_fails_appends_untouched(tmp_path: Path, lock_holder: object) -> None:
    path = tmp_path / "events.db"
    make_store(path, 10)
    lock_holder(path)  # type: ignore[operator]
    before = snapshot(path)
    store = SqliteEventStore(str(path), mode="durable", lock_timeout=0.2)
    try:
        assert len(store.query()) == 10  # WAL: reading is fine while another process writes
        with pytest.raises(StoreError, match=rf"{path}.*locked by another.*0.2 s.*appending"):
            store.append(Event.create("a", None, seq=11, tick=11))
        with pytest.raises(StoreError, match="locked"):
            store.clear()
    finally:
        store.close()
    assert snapshot(path)[""] == before[""]


def test_locked_store_in_journal_mode_keeps_acknowledged_events_and_retries(
    tmp_path: Path, lock_holder: object
) -> None:
    """The default (journal) mode on a file another process keeps locked: the
    acknowledged event waits in the journal; while the lock is held every call
    that needs the database raises "locked" (the emit refused, as in durable
    mode); once it is released the next call goes through and nothing is lost."""
    path = tmp_path / "events.db"
    make_store(path, 10)
    holder = lock_holder(path)  # type: ignore[operator]
    store = SqliteEventStore(str(path), lock_timeout=0.2)
    try:
        assert store.mode == "journal"
        store.append(Event.create("a", None, seq=11, tick=11))  # in the journal
        with pytest.raises(StoreError, match=rf"{path}.*locked by another") as raised:
            store.flush()
        assert raised.value.kind == "locked"
        with pytest.raises(StoreError, match="locked") as refused:
            store.append(Event.create("a", None, seq=12, tick=12))
        assert refused.value.kind == "locked"
        with pytest.raises(StoreError, match="locked"):
            store.query()
        outage = store.statistics()  # monitoring still answers during the outage
        assert (outage.stored, outage.pending) == (10, 1)
        assert holder.stdin is not None
        holder.stdin.close()  # the other process lets go
        holder.wait(10)
        store.append(Event.create("a", None, seq=12, tick=12))  # the retry worked first
        assert [e.seq for e in store.query()] == list(range(1, 13))
        statistics = store.statistics()
        assert statistics.append_failures["locked"] >= 2  # the batch's outage, the refused emit
        assert statistics.retries >= 1
    finally:
        store.close()
    assert not Path(str(path) + "-mbjournal").exists()


def test_a_journal_store_closed_while_locked_keeps_the_events_for_the_next_open(
    tmp_path: Path, lock_holder: object
) -> None:
    path = tmp_path / "events.db"
    make_store(path, 10)
    holder = lock_holder(path)  # type: ignore[operator]
    store = SqliteEventStore(str(path), lock_timeout=0.2)
    store.append(Event.create("a", None, seq=11, tick=11))
    with pytest.raises(StoreError, match=r"stay in .*-mbjournal and are committed when"):
        store.close()  # one last attempt, still locked
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(10)
    with SqliteEventStore(str(path)) as again:
        assert [e.seq for e in again.query()][-2:] == [10, 11]


def test_locked_new_database_fails_to_open_untouched(tmp_path: Path, lock_holder: object) -> None:
    path = tmp_path / "fresh.db"
    path.touch()
    lock_holder(path)  # type: ignore[operator]
    before = snapshot(path)
    with pytest.raises(StoreError, match=rf"{path}.*locked by another connection or process"):
        SqliteEventStore(str(path), lock_timeout=0.2)
    assert snapshot(path) == before
