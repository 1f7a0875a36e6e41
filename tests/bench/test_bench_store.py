"""The store benchmark runs in quick mode and reports every row."""

from __future__ import annotations

import math

from moonbus.bench.store import run


def test_quick_run_reports_all_rows() -> None:
    rows = run(quick=True)
    names = [row.name for row in rows]
    assert names[:2] == ["append, fast mode", "append, durable mode"]
    assert names[2].startswith("last 1,000 events after a tick")
    assert "retention" in names[3]
    for row in rows:
        assert row.area == "store"
        assert math.isfinite(row.value) and row.value > 0
        assert row.target
    for row in rows[:3]:
        assert row.peer and row.peer_value and row.ratio
