"""The shared-store benchmark suite runs and reports well-formed rows."""

from __future__ import annotations

import math

from moonbus.bench import shared


def test_quick_run_reports_rows() -> None:
    rows = shared.run(quick=True)
    names = [row.name for row in rows]
    assert "shared increment, memory backend, Python" in names
    for row in rows:
        assert row.area == "shared"
        assert row.value > 0 and math.isfinite(row.value)
        assert row.peer_value is not None and row.peer_value > 0
        assert row.ratio is not None and row.ratio > 0
        assert row.ok in (True, False)
