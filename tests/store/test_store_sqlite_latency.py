"""What keeps a durable append short: no WAL checkpoint and no unbounded prune
inside it. Checked by structure (who checkpoints, how much one append
deletes), never by timing."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from moonbus.bus.event import Event
from moonbus.errors import ConfigError
from moonbus.store.base import StoreSettings
from moonbus.store.sqlite import SqliteEventStore
from moonbus.store.sqlite_checkpoint import Checkpointer


def ev(seq: int, tick: int, event_type: str = "a") -> Event:
    return Event.create(event_type, {"seq": seq, "pad": "x" * 100}, seq=seq, tick=tick, ts=seq)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "events.db")


def _wait_for(condition: object, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.01)
    return False


def test_the_write_connection_never_checkpoints(db: str) -> None:
    with SqliteEventStore(db) as store:
        conn = store._db._conn
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0


def test_a_background_thread_checkpoints_the_wal(db: str) -> None:
    with SqliteEventStore(db, settings=StoreSettings(retention_ticks=None)) as store:
        for seq in range(1, 401):  # well past one checkpoint's worth of frames
            store.append(ev(seq, seq))
        assert _wait_for(lambda: store.statistics().checkpoints >= 1), store.statistics()
        assert store.statistics().checkpoint_failures == 0
        # a reader that does not use the WAL sees every committed event in the file
        copy = sqlite3.connect(db)
        try:
            assert copy.execute("SELECT count(*) FROM events").fetchone()[0] == 400
        finally:
            copy.close()
    assert not os.path.exists(db + "-wal")  # closing still checkpoints and removes it


def test_an_idle_store_is_checkpointed_too(db: str) -> None:
    with SqliteEventStore(db, settings=StoreSettings(retention_ticks=None)) as store:
        store.append(ev(1, 1))  # far below the frames that wake the checkpointer
        assert _wait_for(lambda: store._db.checkpoints[0] >= 1), store._db.checkpoints


def test_one_append_prunes_a_bounded_step_and_the_next_ones_catch_up(db: str) -> None:
    settings = StoreSettings(retention_ticks=None)
    # durable: every append is a commit of its own, which prunes one step
    with SqliteEventStore(db, mode="durable", settings=settings, prune_step=50,
                          prune_every=1) as store:
        store.append_many(ev(seq, seq) for seq in range(1, 1001))
        settings.update(retention_ticks=10)  # read live: 990 events now too old
        store.append(ev(1001, 1001))
        assert store.statistics().pruned == 50  # one step, not the whole window
        seq = 1001
        while store.statistics().stored > 10 and seq < 1100:
            seq += 1
            store.append(ev(seq, seq))
        assert store.statistics().stored == 10  # the following appends caught up
        assert [e.tick for e in store.query()] == list(range(seq - 9, seq + 1))


def test_count_retention_is_stepped_too(db: str) -> None:
    settings = StoreSettings(retention_ticks=None)
    with SqliteEventStore(db, mode="durable", settings=settings, prune_step=40,
                          prune_every=1) as store:
        store.append_many(ev(seq, seq) for seq in range(1, 301))
        settings.update(retention_count=100)
        store.append(ev(301, 301))
        assert store.statistics().pruned == 40
        for seq in range(302, 310):
            store.append(ev(seq, seq))
        assert store.statistics().stored == 100


def test_an_explicit_prune_deletes_everything_at_once(db: str) -> None:
    settings = StoreSettings(retention_ticks=None)
    with SqliteEventStore(db, settings=settings, prune_step=5) as store:
        store.append_many(ev(seq, seq) for seq in range(1, 201))
        settings.update(retention_ticks=10)
        assert store.prune() == 190
        store.append(ev(201, 201))
        assert store.statistics().pruned == 190  # nothing was left for the appends


def test_a_large_batch_never_outruns_its_prune(db: str) -> None:
    """A step deletes at least twice the rows it adds, so retention holds."""
    settings = StoreSettings(retention_ticks=None, retention_count=100)
    with SqliteEventStore(db, settings=settings, prune_step=1, prune_every=1) as store:
        seq = 0
        for _ in range(10):
            store.append_many(ev(s, s) for s in range(seq + 1, seq + 501))
            seq += 500
        assert store.statistics().stored <= 600


def test_bad_settings_are_refused(db: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="prune_step"):
        SqliteEventStore(db, prune_step=0)
    SqliteEventStore(db).close()  # the refused open left no lock behind
    import threading

    with pytest.raises(ConfigError, match="checkpoint_every"):
        Checkpointer(db, writer_lock=threading.Lock(), every=0, interval=1.0,
                     max_frames=10, lock_timeout=1.0)
    with pytest.raises(ConfigError, match="interval"):
        Checkpointer(db, writer_lock=threading.Lock(), every=1, interval=0.0,
                     max_frames=10, lock_timeout=1.0)
