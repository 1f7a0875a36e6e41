"""SQLite-specific behaviour: query plans, amortized pruning, modes, pragmas, threads."""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from moonbus.bus.event import Event, thaw, to_jsonable
from moonbus.errors import ConfigError, StoreError
from moonbus.store.base import StoreSettings
from moonbus.store.event_codec import StoredData
from moonbus.store.sqlite import SqliteEventStore
from moonbus.store.sqlite_query import (
    COUNT_TYPE,
    COUNT_TYPE_AFTER_TICK,
    PRUNE_BY_COUNT,
    PRUNE_BY_TICK,
)
from moonbus.store.sqlite_schema import WAL_SIZE_LIMIT


def ev(seq: int, tick: int | None, event_type: str = "a", **data: object) -> Event:
    return Event.create(event_type, data or {"seq": seq}, seq=seq, tick=tick, ts=seq)


def fill(store: SqliteEventStore, n: int, *, per_tick: int = 10, start: int = 1) -> list[Event]:
    events = [ev(seq, seq // per_tick, "abc"[seq % 3]) for seq in range(start, start + n)]
    store.append_many(events)
    return events


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "events.db")


# ---------------------------------------------------------------- query plans


def _assert_indexed(lines: list[str], *needles: str, sorted_ok: bool = False) -> None:
    text = "\n".join(lines)
    for line in lines:
        assert not (line.startswith("SCAN events") and "INDEX" not in line), text
    for needle in needles:
        assert needle in text, text
    if not sorted_ok:
        assert "TEMP B-TREE" not in text, text


def test_query_plans_use_index_ranges(db: str) -> None:
    with SqliteEventStore(db) as store:
        fill(store, 300)
        plan = store.query_plan
        _assert_indexed(plan(after_tick=5), "INTEGER PRIMARY KEY", "events_tick")
        _assert_indexed(
            plan(after_tick=5, limit=1000, newest=True), "INTEGER PRIMARY KEY", "events_tick"
        )
        _assert_indexed(plan(after_tick=5, after_seq=40), "INTEGER PRIMARY KEY")
        _assert_indexed(plan(after_seq=40), "INTEGER PRIMARY KEY (rowid>?)")
        assert plan(limit=10, newest=True) == ["SCAN events"]  # rowid order, stops at the limit
        _assert_indexed(plan(types=["a"], after_tick=5), "events_type_tick (type=? AND tick>?)")
        _assert_indexed(plan(types=["a", "b"], after_tick=5, limit=3), "events_type_tick")
        _assert_indexed(plan(types=["a"], after_seq=5), "events_type_seq (type=? AND rowid>?)")
        _assert_indexed(plan(types=["a"]), "events_type_seq (type=?)")


def test_query_plans_after_ticks_went_backwards(db: str) -> None:
    with SqliteEventStore(db) as store:
        store.append_many([ev(1, 5), ev(2, 3), ev(3, 9)])
        assert [e.seq for e in store.query(after_tick=2, limit=2)] == [1, 2]
        _assert_indexed(store.query_plan(after_tick=5), "events_tick (tick>?)", sorted_ok=True)
        _assert_indexed(
            store.query_plan(types=["a"], after_tick=5), "events_type_tick", sorted_ok=True
        )
        store.clear()
        store.append(ev(4, 1))
        _assert_indexed(store.query_plan(after_tick=0), "INTEGER PRIMARY KEY")


def test_ticks_going_backwards_is_remembered_across_reopen(db: str) -> None:
    with SqliteEventStore(db) as store:
        store.append_many([ev(1, 5), ev(2, 6)])
        store.append(ev(3, 1))
    with SqliteEventStore(db) as store:
        assert [e.seq for e in store.query(after_tick=0, limit=2, newest=True)] == [2, 3]
        assert any("TEMP B-TREE" in line for line in store.query_plan(after_tick=0))


def test_retention_and_summary_statements_use_indexes(db: str) -> None:
    with SqliteEventStore(db) as store:
        fill(store, 100)
    conn = sqlite3.connect(db)
    try:
        for sql, params in (
            (PRUNE_BY_TICK, ("a", 5)),
            (PRUNE_BY_COUNT, ("a", "a", 3)),
            (COUNT_TYPE, ("a",)),
            (COUNT_TYPE_AFTER_TICK, ("a", 5)),
        ):
            lines = [str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
            assert all("SEARCH" in line or "SUBQUERY" in line for line in lines), (sql, lines)
    finally:
        conn.close()


# ------------------------------------------------------------- amortized prune


def test_prune_runs_every_k_appends_not_every_append(db: str) -> None:
    store = SqliteEventStore(
        db,
        settings=StoreSettings(retention_ticks=None, retention_count=5),
        prune_every=50,
        prune_tick_step=10_000,
        prune_step=100,  # the schedule is tested here; bounded steps in test_store_sqlite_latency
    )
    with store:
        for seq in range(1, 50):
            store.append(ev(seq, 1))
        assert store.statistics().stored == 49  # not yet due
        store.append(ev(50, 1))
        assert store.statistics().stored == 5
        assert store.statistics().pruned == 45


def test_prune_runs_when_the_tick_advanced(db: str) -> None:
    store = SqliteEventStore(  # durable: one commit per append, each one may prune
        db, mode="durable", settings=StoreSettings(retention_ticks=3), prune_every=10_000,
        prune_tick_step=10,
    )
    with store:
        for seq in range(1, 10):
            store.append(ev(seq, seq))
        assert store.statistics().pruned == 0
        store.append(ev(10, 11))  # newest tick moved 10 since the first commit
        assert [e.tick for e in store.query()] == [9, 11]


def test_fast_mode_prunes_in_the_writer_thread(db: str) -> None:
    settings = StoreSettings(retention_ticks=None, retention_count=10)
    with SqliteEventStore(db, mode="fast", settings=settings, prune_every=100) as store:
        for seq in range(1, 1001):
            store.append(ev(seq, seq))
        store.flush()
        assert store.statistics().stored <= 110
        assert store.statistics().pruned >= 890


def test_disk_stays_bounded_by_page_reuse(db: str) -> None:
    """The database file stops growing once retention is full. Measured after
    each close, which checkpoints the WAL into the file and removes it: while
    open, the WAL's pages are checkpointed by a thread of their own."""
    settings = StoreSettings(retention_ticks=None, retention_count=300)
    sizes = []
    for round_ in range(6):
        with SqliteEventStore(db, mode="fast", settings=settings, prune_every=100) as store:
            for seq in range(round_ * 3000 + 1, (round_ + 1) * 3000 + 1):
                store.append(ev(seq, seq, "abc"[seq % 3], text="x" * 200))
        assert not os.path.exists(db + "-wal")
        sizes.append(os.path.getsize(db))
    assert sizes[-1] <= sizes[2] * 1.10, sizes


def test_wal_stays_bounded_while_appending(db: str) -> None:
    """Checkpoints run off the appending thread, yet the WAL is restarted (and
    truncated to WAL_SIZE_LIMIT) even for a writer that never pauses: the
    checkpointer then takes the writer's lock for the last few frames."""
    settings = StoreSettings(retention_ticks=None, retention_count=300)
    deadline = time.monotonic() + 30  # ~3 s on an idle machine
    with SqliteEventStore(db, mode="fast", settings=settings, prune_every=100) as store:
        sizes = [0]
        first = 1
        while time.monotonic() < deadline:  # ~4 MB of WAL a round, never pausing
            for seq in range(first, first + 1000):
                store.append(ev(seq, seq, "abc"[seq % 3], text="x" * 3500))
            first += 1000
            store.flush()
            sizes.append(os.path.getsize(db + "-wal"))
            if sizes[-1] < sizes[-2]:
                break
    assert sizes[-1] < sizes[-2], f"the WAL never restarted: {sizes}"
    assert sizes[-1] <= WAL_SIZE_LIMIT, sizes


# -------------------------------------------------------------- modes, pragmas


def test_file_is_in_wal_mode_with_the_asked_synchronous(db: str) -> None:
    with SqliteEventStore(db, synchronous="full") as store:
        store.append(ev(1, 1))
        mode = store._db._conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = store._db._conn.execute("PRAGMA synchronous").fetchone()[0]
    assert (mode, sync) == ("wal", 2)
    with SqliteEventStore(db) as store:
        assert store._db._conn.execute("PRAGMA synchronous").fetchone()[0] == 1


def test_bad_options(db: str) -> None:
    with pytest.raises(ConfigError, match="mode"):
        SqliteEventStore(db, mode="eventually")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="synchronous"):
        SqliteEventStore(db, synchronous="off")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size"):
        SqliteEventStore(db, mode="fast", batch_size=0)
    with pytest.raises(ConfigError, match="prune_every"):
        SqliteEventStore(db, prune_every=0)


def test_durable_append_is_visible_to_another_connection_at_once(db: str) -> None:
    # A plain read connection: a second SqliteEventStore (a writer) is refused at open.
    def seqs(reader: sqlite3.Connection) -> list[int]:
        return [row[0] for row in reader.execute("SELECT seq FROM events ORDER BY seq")]

    with SqliteEventStore(db, mode="durable") as store:
        store.append(ev(1, 1))
        reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
        try:
            assert seqs(reader) == [1]
            store.append(ev(2, 2))
            assert seqs(reader) == [1, 2]
        finally:
            reader.close()


def test_a_journal_mode_append_is_visible_to_another_connection_once_committed(
    db: str,
) -> None:
    """The default mode's trade-off: another process sees an event once its
    batch is committed (within flush_interval; ``flush`` forces it)."""
    with SqliteEventStore(db, flush_interval=60.0) as store:
        assert store.mode == "journal"
        store.append(ev(1, 1))
        reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
        try:
            assert [row[0] for row in reader.execute("SELECT seq FROM events")] == []
            store.flush()
            assert [row[0] for row in reader.execute("SELECT seq FROM events")] == [1]
        finally:
            reader.close()


def test_fast_mode_pending_events_are_written_by_time(db: str) -> None:
    with SqliteEventStore(db, mode="fast", flush_interval=0.01, batch_size=1000) as store:
        store.append(ev(1, 1))
        done = threading.Event()
        for _ in range(500):  # a commit is due 10 ms after the append; wait up to 5 s
            reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
            try:
                if reader.execute("SELECT count(*) FROM events").fetchone()[0] == 1:
                    done.set()
                    break
            finally:
                reader.close()
            done.wait(0.01)
        assert done.is_set()


def test_fast_mode_writer_failure_is_reported(db: str, tmp_path: Path) -> None:
    store = SqliteEventStore(db, mode="fast", lock_timeout=0.05, flush_interval=0.01)
    store.append(ev(1, 1))
    store.flush()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        store.append(ev(2, 2))
        with pytest.raises(StoreError, match=r"locked.*1 appended event\(s\) were not written"):
            store.flush()
        with pytest.raises(StoreError, match="background writer failed"):
            store.append(ev(3, 3))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    with pytest.raises(StoreError, match="background writer failed"):
        store.close()
    with SqliteEventStore(db) as again:
        assert [e.seq for e in again.query()] == [1]


def test_unencodable_data_is_refused_and_nothing_stored(db: str) -> None:
    class Opaque:
        pass

    with SqliteEventStore(db) as store:
        bad = Event.create("a", {"thing": Opaque()}, seq=1, tick=1)
        with pytest.raises(StoreError, match=r"seq 1 \(a\).*JSON"):
            store.append(bad)
        assert store.query() == []
        store.append(ev(1, 1))  # the seq was not used up
        assert store.last_seq() == 1


def test_value_object_that_recurses_forever_is_refused(db: str) -> None:
    class Loop:
        def __moonbus_json__(self) -> object:
            return {"again": self}

    with SqliteEventStore(db) as store:
        with pytest.raises(StoreError, match=r"seq 1 \(a\).*JSON"):
            store.append(Event.create("a", {"loop": Loop()}, seq=1, tick=1))
        assert store.query() == []


def test_log_appends_setting(db: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = StoreSettings()
    with SqliteEventStore(db, settings=settings) as store:
        with caplog.at_level(logging.DEBUG, logger="moonbus.store.sqlite"):
            store.append(ev(1, 1))
            settings.update(log_appends=True)
            store.append(ev(2, 1))
        assert [r.getMessage() for r in caplog.records] == [f"event store {db}: appended seq 2 (a)"]


def test_export_does_not_block_appends(db: str) -> None:
    """A slow reader holds its own connection; the writer carries on (WAL)."""
    with SqliteEventStore(db) as store:
        fill(store, 50)
        started = threading.Event()
        release = threading.Event()

        class SlowFile(io.StringIO):
            def write(self, text: str) -> int:
                started.set()
                release.wait(10)
                return super().write(text)

        out = SlowFile()
        exporter = threading.Thread(target=store.export_ndjson, args=(out,))
        exporter.start()
        assert started.wait(10)
        store.append(ev(51, 51))  # would deadlock if the export held the write lock
        assert store.last_seq() == 51
        release.set()
        exporter.join(10)
        assert len(out.getvalue().splitlines()) == 50  # the export's snapshot


# ------------------------------------------------------------------ StoredData


def test_stored_data_reads_like_frozen_data(db: str) -> None:
    original = ev(1, 1, nested={"xs": [1, {"y": 2}]}, name="Zoë")
    with SqliteEventStore(db) as store:
        store.append(original)
        (got,) = store.query()
    assert isinstance(got.data, StoredData)
    assert got.data == original.data
    assert original.data == got.data
    assert got == original
    assert thaw(got.data) == {"nested": {"xs": [1, {"y": 2}]}, "name": "Zoë"}
    assert to_jsonable(got.data) == thaw(got.data)
    assert dict(got.data)["name"] == "Zoë" and "name" in got.data and len(got.data) == 2
    assert isinstance(got.data["nested"]["xs"], tuple)
    assert "Zoë" in repr(got.data)
    with pytest.raises(TypeError):
        got.data["name"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        hash(got.data)
    assert got.data != {"name": "other"}


def test_stored_events_copy_into_another_store(tmp_path: Path) -> None:
    with SqliteEventStore(str(tmp_path / "one.db")) as one:
        events = fill(one, 20)
        copied = one.query()
    with SqliteEventStore(str(tmp_path / "two.db")) as two:
        two.append_many(copied)
        assert two.query() == events
