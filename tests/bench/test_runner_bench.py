"""The runner benchmark suite runs quickly and reports sane rows (targets are not asserted)."""

from __future__ import annotations

from moonbus.bench import runner as bench


def test_quick_run_reports_every_row() -> None:
    rows = bench.run(quick=True)
    assert [r.name for r in rows] == [
        "300 tiny jobs (return 1 + ...)",
        "CPU-bound jobs, 2 workers vs 1",
        "timeout precision",
        "cancel of a running job",
    ]
    for row in rows:
        assert row.area == "runner"
        assert row.value > 0
        assert row.target
        assert row.ok is not None
    tiny, cpu, precision, cancel = rows
    assert tiny.peer and tiny.peer_value and tiny.ratio and tiny.ratio > 0
    assert cpu.peer_value and cpu.ratio
    assert "p50" in precision.note and "p50" in cancel.note
