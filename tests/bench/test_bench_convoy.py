"""The convoy suite (deferred delivery, handlers calling into Python) runs,
and its moonbus figures and the glue peer's count the same work."""

from __future__ import annotations

import math
from pathlib import Path

from moonbus.bench import convoy

NAMES = [
    "deferred, handler increments a shared int per event",
    "deferred, handler increments a shared int, pacing off",
    "deferred, host busy in Python, 10k events/s: emit -> handler (p99)",
    "deferred, host busy in Python, 10k events/s, pacing off (p99)",
]


def test_quick_run_reports_every_row_with_its_peer() -> None:
    rows = convoy.run(quick=True)
    assert [row.name for row in rows] == NAMES
    for row in rows:
        assert row.area == "host"
        assert row.value > 0 and math.isfinite(row.value)
        assert row.peer_value is not None and row.peer_value > 0
        assert row.ratio is not None and row.ratio > 0
    assert rows[0].ok in (True, False) and rows[2].ok in (True, False)
    assert rows[1].ok is None and rows[3].ok is None  # references, no target
    assert "emits paced" in rows[0].note
    assert "late emits not paced" in rows[2].note


def test_both_sides_count_every_event(tmp_path: Path) -> None:
    # Each side raises when a handler's increment went missing.
    rate, _ = convoy._ours_rate(tmp_path, 300, 0.0005)
    assert rate > 0
    assert convoy._glue_rate(300) > 0
    p99, p50, declined = convoy._ours_latency(tmp_path, 100, 10_000.0, 0.0005)
    assert p99 >= p50 > 0 and declined >= 0
    glue_p99, glue_p50 = convoy._glue_latency(100, 10_000.0)
    assert glue_p99 >= glue_p50 > 0
