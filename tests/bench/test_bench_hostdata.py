"""The host-data benchmark suite runs and reports well-formed rows."""

from __future__ import annotations

import math

from moonbus.bench import hostdata


def test_quick_run_reports_all_rows() -> None:
    rows = hostdata.run(quick=True)
    assert [row.name for row in rows] == [
        "host API -> 30 six-field dicts, read by the script",
        "host API -> 30 six-field dicts (pure-Python path)",
        "host API -> 30 @lua_api objects, one method call each",
    ]
    for row in rows:
        assert row.area == "host"
        assert row.unit == "us CPU/call"
        assert row.value > 0 and math.isfinite(row.value)
        assert row.peer_value is not None and row.peer_value > 0
        assert row.ratio is not None and row.ratio == row.peer_value / row.value
    assert rows[0].ok in (True, False)
    assert rows[0].peer == "raw lupa table_from(recursive=True), copy only"
    assert rows[1].ok is None and rows[2].ok is None
