"""The replay bench suite runs (quick) and its rows say a replay is identical and fast."""

from __future__ import annotations

from moonbus.bench import replay as replay_bench


def test_quick_replay_bench_rows() -> None:
    rows = replay_bench.run(quick=True)
    assert [r.name for r in rows] == ["replay", "replay vs the --tick-ms 50 run"]
    assert all(r.area == "replay" for r in rows)
    assert "identical" in rows[0].note
    assert rows[0].value > 0 and rows[1].value > 5  # generous: virtual time beats 50 ms ticks
