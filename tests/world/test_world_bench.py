"""The world benchmark suite runs and reports sane rows (targets are not asserted here)."""

from __future__ import annotations

from typing import Any

from moonbus.bench import world as bench


def test_quick_run_reports_every_row() -> None:
    rows = bench.run(quick=True)
    assert [r.name for r in rows] == [
        "step, idle player",
        "step + a mining script's calls",
        "API read (player:x)",
    ]
    for row in rows:
        assert row.area == "world" and row.value > 0 and row.unit.endswith("/s")
        assert row.ok is not None and row.target


def test_the_busy_workload_really_mines_and_banks() -> None:
    seen: list[tuple[str, Any]] = []
    bench._busy_steps(700, emit=lambda type, data, **_: seen.append((type, data)))
    changes = [d["change"] for t, d in seen if t == "inventory_changed"]
    assert changes.count(1) >= 28  # filled the inventory
    assert any(c <= -1 for c in changes)  # and deposited it
    assert any(t == "bank_opened" for t, _ in seen)
