"""The Redis event-store benchmark suite runs and reports well-formed rows."""

from __future__ import annotations

import math

import pytest

from moonbus.bench import store_redis
from tests.shared.redis_support import redis_or_skip

NAMES = [
    "event append to the stream (redis)",
    "bus.emit on a redis store",
    "bus.emit from 8 threads on a redis store",
]


@pytest.mark.redis
def test_quick_run_reports_every_row() -> None:
    redis_or_skip()
    rows = store_redis.run(quick=True)
    assert [row.name for row in rows] == NAMES
    for row in rows:
        assert row.area == "store"
        assert row.value > 0 and math.isfinite(row.value)
        assert row.peer_value is not None and row.peer_value > 0
        assert row.ratio is not None and row.ratio > 0
    assert rows[0].ok in (True, False)
    assert rows[1].ok is None and rows[2].ok is None  # informational
    assert rows[2].note.endswith("appends per round trip")


def test_rows_without_redis_are_marked_skipped() -> None:
    rows = store_redis.redis_rows(quick=True, url="redis://127.0.0.1:1/0")
    assert [row.name for row in rows] == NAMES
    for row in rows:
        assert math.isnan(row.value)
        assert row.ok is None
        assert "cannot reach Redis at redis://127.0.0.1:1/0" in row.note
