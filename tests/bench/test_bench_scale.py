"""The scale suite runs (quick: 200 scripts per workload, in child processes)
and reports its four rows; the 10,000-script targets are not checked in quick
mode, and never asserted here."""

from __future__ import annotations

import math

import pytest

from moonbus.bench import scale
from moonbus.cli.bench_cmd import suite_names


def test_the_suite_is_discovered() -> None:
    assert "scale" in suite_names()


def test_quick_run_reports_all_rows() -> None:
    rows = scale.run(quick=True)
    assert [row.name for row in rows] == [
        "200 handler-only scripts (tick handler): RSS",
        "200 handler-only scripts (tick handler): tick emit -> all handlers done (p99)",
        "200 scripts with poll at 1/s: RSS",
        "200 scripts with poll at 1/s: latest poll against its schedule",
    ]
    for row in rows:
        assert row.area == "scale"
        assert row.value >= 0 and math.isfinite(row.value)
        assert row.ok is None  # quick mode: 200 scripts say nothing about 10,000
    # One Lua state per handler-only script; what each script cost is in the note.
    assert rows[0].note.startswith("200 Lua states; 10 ticks;")
    assert "; tick p50 " in rows[0].note and "; CPU per tick p50 " in rows[0].note
    assert rows[0].unit == rows[2].unit == "MiB"


def test_a_child_failure_is_reported_not_hidden() -> None:
    with pytest.raises(RuntimeError, match="no-such-kind"):
        scale.measure("no-such-kind", 1, 1.0)
