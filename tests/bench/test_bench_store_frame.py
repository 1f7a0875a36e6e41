"""The per-emit store benchmark runs in quick mode and reports its four rows."""

from __future__ import annotations

import math

from moonbus.bench.store_frame import run


def test_quick_run_reports_p99_and_max_next_to_fast_mode() -> None:
    rows = run(quick=True)
    assert [row.name.rsplit(": ", 1)[1] for row in rows] == ["p99", "max"] * 2
    assert ["default, journal" in row.name for row in rows] == [True, True, False, False]
    assert ["?mode=durable" in row.name for row in rows] == [False, False, True, True]
    assert [row.ok is None for row in rows] == [False, False, True, True]  # judged: default
    for row in rows:
        assert row.area == "store"
        assert "durable emit" in row.name
        assert math.isfinite(row.value) and row.value > 0
        assert row.peer_value is not None and row.peer_value > 0
        assert "wall" in row.note
