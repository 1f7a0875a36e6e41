"""The shared-store benchmark suite runs and reports well-formed rows."""

from __future__ import annotations

import math

import pytest

from moonbus.bench import shared
from tests.shared.redis_support import redis_or_skip

NAMES = [
    "shared increment, memory backend, Python",
    "shared increment from one thread (redis)",
    "shared increment from 8 threads (redis)",
]


@pytest.mark.redis
def test_quick_run_reports_every_row() -> None:
    redis_or_skip()
    rows = shared.run(quick=True)
    assert [row.name for row in rows] == NAMES
    for row in rows:
        assert row.area == "shared"
        assert row.value > 0 and math.isfinite(row.value)
        assert row.peer_value is not None and row.peer_value > 0
        assert row.ratio is not None and row.ratio > 0
        assert row.ok in (True, False)


def test_redis_rows_without_redis_are_marked_skipped() -> None:
    rows = shared.redis_rows(quick=True, url="redis://127.0.0.1:1/0")
    assert [row.name for row in rows] == NAMES[1:]
    for row in rows:
        assert math.isnan(row.value)
        assert row.ok is None
        assert row.note.startswith("skipped: cannot reach Redis at redis://127.0.0.1:1/0")
