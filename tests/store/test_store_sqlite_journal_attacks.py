"""Hostile cases for the SQLite store's journal (``sqlite_journal``,
``sqlite_journal_open``): the ring's edges, paths that name one database twice,
and what a careless operator leaves next to a store file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moonbus.bus.event import Event
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
