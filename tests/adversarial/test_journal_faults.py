"""A full disk when a store's journal still holds events of a session that
died (``sqlite_journal_open``): nothing acknowledged may be lost, and what the
operator is told must be what happens."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from moonbus.bus.event import Event
from moonbus.errors import StoreError
from moonbus.store.base import StoreSettings
from moonbus.store.sqlite import SqliteEventStore
from tests.adversarial.support_store_faults import fill, small_tmpfs
from tests.store.killed_child import run_then_kill, said_done

KEEP_ALL = StoreSettings(retention_ticks=None)


CHILD = """
import sys
from moonbus.bus.event import Event
from moonbus.store.base import StoreSettings
from moonbus.store.sqlite import SqliteEventStore
store = SqliteEventStore(sys.argv[1], settings=StoreSettings(retention_ticks=None),
                         journal_bytes=65536, flush_interval=60.0, batch_size=100000)
for seq in range(1, 200):
    store.append(Event.create("a", {"n": seq, "pad": "x" * 200}, seq=seq, tick=seq, ts=seq))
    if seq == 1:
        store.flush()
print("done", flush=True)
sys.stdin.read()
"""


def _dead_session(db: Path) -> None:
    """A store file with seq 1 committed and seq 2-199 only in its journal, as
    a journal-mode session killed before its writer committed them leaves it
    (its -wal and -shm files too)."""
    run_then_kill(CHILD, str(db), read=said_done)


def test_a_journal_that_cannot_be_replayed_on_a_full_disk_is_kept_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Durable mode cannot leave them to a writer thread: the open is refused
    saying the journal's events wait in it (it said only "the disk is full
    while appending", after a WARNING that the session ran in durable mode,
    which it did not), and they come back with room."""
    with small_tmpfs(tmp_path / "small", "1m") as small:
        db = small / "events.db"
        _dead_session(db)
        filler = fill(small)
        with caplog.at_level(logging.WARNING), pytest.raises(StoreError) as caught:
            SqliteEventStore(str(db), mode="durable", settings=KEEP_ALL)
        assert caught.value.kind == "disk_full"
        assert "198 event(s) left in its journal (seq 2-199)" in str(caught.value)
        assert "durable mode" not in caplog.text
        filler.unlink()
        with SqliteEventStore(str(db), settings=KEEP_ALL) as store:
            assert [e.seq for e in store.query()] == list(range(1, 200))


def test_a_store_with_a_journal_to_replay_opens_on_a_full_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``moonbus serve`` keeps running on a full disk, but after a crash it could
    not start again on that disk while its journal held events (durable mode
    opens there and refuses each emit until there is room). Now the default
    opens, leaves them in the journal for its writer, which retries them;
    emits are refused meanwhile, as after a failure mid-run."""
    with small_tmpfs(tmp_path / "small", "1m") as small:
        db = small / "events.db"
        _dead_session(db)
        filler = fill(small)
        with caplog.at_level(logging.WARNING):
            store = SqliteEventStore(str(db), settings=KEEP_ALL, flush_interval=0.01)
        try:
            assert store.mode == "journal"
            assert "198 event(s) left in its journal (seq 2-199)" in caplog.text
            with pytest.raises(StoreError) as caught:
                for _ in range(50):  # the first may be taken before the writer failed
                    store.flush()
            assert caught.value.kind == "disk_full"
            with pytest.raises(StoreError):
                store.append(Event.create("a", {"n": 200}, seq=200, tick=200, ts=200))
            filler.unlink()
            store.append(Event.create("a", {"n": 200}, seq=200, tick=200, ts=200))
            events = store.query()
            assert [e.seq for e in events] == list(range(1, 201))
            assert events[150].data == {"n": 151, "pad": "x" * 200}
        finally:
            store.close()
        with SqliteEventStore(str(db), settings=KEEP_ALL) as store:
            assert [e.seq for e in store.query()] == list(range(1, 201))
