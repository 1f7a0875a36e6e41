"""The containment suite runs every attack within its bound and reports each as
a well-formed row; an attack that is not contained is reported as such (not
hung on), and the row's ``ok`` is computed from the acceptance numbers."""

from __future__ import annotations

import math
import time

from moonbus.bench import containment
from moonbus.bench.containment import ATTACKS, Attack, Outcome, measure_attack, row_for
from moonbus.cli.bench_cmd import suite_names

# A handler that never ends, under a handler limit raised to 60 s: nothing
# contains it, so the host's emit hangs and the bench must cut it off itself.
UNCONTAINED = Attack(
    "fake: endless handler, limit raised to 60 s",
    ('events:on("ping", function(e) while true do end end)',),
    threaded=False, expect="nothing (the limit was raised)",
    settings={"handler_timeout": 60.0},
)


def test_the_suite_is_discovered_and_its_runner_is_not() -> None:
    names = suite_names()
    assert "containment" in names and "_containment_child" not in names


def test_quick_run_has_a_well_formed_row_for_every_attack() -> None:
    started = time.monotonic()
    rows = containment.run(quick=True)
    assert time.monotonic() - started < 120.0  # each attack has its own bound
    assert [r.name for r in rows] == [a.name for a in ATTACKS]
    for row in rows:
        assert row.area == "containment" and row.unit == "us p99"
        assert row.target == containment.TARGET
        assert row.ok in (True, False)
        assert row.note.startswith("NOT CONTAINED") or row.ok, row.note
        if row.peer_value is not None:  # measured: figures, not a bound hit
            assert math.isfinite(row.peer_value) and row.peer_value > 0
            assert math.isfinite(row.value) and row.value > 0
            assert "after cut-off p50" in row.note and "peak RSS" in row.note


def test_an_uncontained_attack_is_cut_off_at_its_bound_and_reported() -> None:
    started = time.monotonic()
    outcome = measure_attack(UNCONTAINED, quick=True, bound=3.0)
    assert time.monotonic() - started < 15.0
    assert outcome.killed == "no end within 3 s" and outcome.result is None
    assert outcome.phase == "attack"  # the companion alone was measured first
    row = row_for(UNCONTAINED, outcome)
    assert row.ok is False
    assert row.note.startswith("NOT CONTAINED: no end within 3 s (phase attack)")


def _result(**changes: object) -> dict[str, object]:
    """A child's result where every acceptance number is met."""
    phase = {"latencies": [50e-6] * 99 + [0.08], "cpu": [40e-6] * 99 + [0.08],
             "emits": [60e-6] * 100, "lost": 0}
    result: dict[str, object] = {
        "limit": 0.1, "stretch": 1.0, "alone": {**phase, "latencies": [40e-6] * 100},
        "attack": phase, "after": {**phase, "latencies": [60e-6] * 100},
        "outcome": ["failed"], "start_errors": [], "cut": ["failed by moonbus"],
        "rss_before": 30.0, "rss_peak": 40.0, "companion": "running",
    }
    result.update(changes)
    return result


def _row(**changes: object) -> tuple[bool | None, str]:
    row = row_for(ATTACKS[0], Outcome(result=_result(**changes), closed=True))
    return row.ok, row.note


def test_ok_is_computed_from_the_acceptance_numbers() -> None:
    assert _row() == (True, _row()[1])
    slow = {"latencies": [0.5], "cpu": [0.5], "emits": [0.5], "lost": 0}
    ok, note = _row(attack=slow)
    assert not ok and "an event cost 500 ms CPU > the 100 ms limit" in note
    waited = {"latencies": [0.5], "cpu": [0.001], "emits": [0.5], "lost": 0}
    ok, note = _row(attack=waited)  # a lock or the GIL: wall time, no CPU
    assert not ok and "an event waited 500 ms" in note
    assert _row(attack=waited, stretch=5.0)[0] is True  # a machine 5x over-loaded
    # the parent's load samples count only inside the attack's window
    samples = [(1.0, 1.0), (2.0, 5.0), (3.0, 5.0), (9.0, 50.0)]
    for window, ok in (((0.5, 3.5), True), ((8.5, 9.5), True), ((3.5, 8.5), False)):
        outcome = Outcome(result=_result(attack=waited, window=window), closed=True,
                          stretch_samples=samples)
        assert row_for(ATTACKS[0], outcome).ok is ok, window
    ok, note = _row(after={"latencies": [100e-6] * 10, "cpu": [], "emits": [], "lost": 0})
    assert not ok and "after the cut-off p50 2.5x alone" in note
    ok, note = _row(rss_peak=1500.0)
    assert not ok and "peak RSS 1,500 MiB" in note
    lost = {"latencies": [50e-6], "cpu": [50e-6], "emits": [50e-6, 50e-6], "lost": 1}
    assert "1 events lost" in _row(attack=lost)[1]
    none = {"latencies": [], "cpu": [], "emits": [], "lost": 0}
    assert "no event reached the companion during the attack" in _row(attack=none)[1]
    row = row_for(ATTACKS[0], Outcome(result=_result(), closed=False))
    assert not row.ok and "Runtime.close() did not return" in row.note
