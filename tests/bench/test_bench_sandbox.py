"""The sandbox benchmark suite runs and reports well-formed rows."""

from __future__ import annotations

import math

from moonbus.bench import sandbox


def test_quick_run_reports_all_rows() -> None:
    rows = sandbox.run(quick=True)
    assert [row.name for row in rows] == [
        "time limit on a pure-Lua loop",
        "time limit on a pure-Lua loop vs count hook",
        "pattern matching, common patterns: sandbox vs raw Lua",
        "pattern matching, slowest C call the dispatcher allows",
    ]
    limit_row, hook_row, pattern_row, slowest_row = rows
    for row in rows[:3]:
        assert row.area == "sandbox"
        assert row.unit == "s CPU"
        assert row.value > 0 and math.isfinite(row.value)
        assert row.peer_value is not None and row.peer_value > 0
        assert row.ratio is not None and row.ratio > 0
    assert limit_row.ok in (True, False)
    assert limit_row.peer_value is not None
    assert limit_row.ratio == limit_row.peer_value / limit_row.value
    assert limit_row.note.startswith("overhead ")
    assert hook_row.ok is None
    assert hook_row.peer == "debug.sethook count hook every 1000 instructions"
    assert pattern_row.ok in (True, False)
    assert pattern_row.peer == "raw lupa runtime, C string functions"
    assert pattern_row.peer_value is not None
    assert pattern_row.ratio == pattern_row.peer_value / pattern_row.value
    assert slowest_row.unit == "ms CPU"
    assert slowest_row.value > 0 and math.isfinite(slowest_row.value)
    assert slowest_row.ok in (True, False)
    assert slowest_row.note.startswith("budget 500,000 steps; slowest: ")
