"""The bus benchmark suite runs and reports ratio rows (figures are not asserted)."""

from __future__ import annotations

import math

import pytest

from moonbus.bench import bus as bench_bus


def test_quick_run_reports_both_rows_against_both_peers() -> None:
    rows = bench_bus.run(quick=True)
    assert [(r.name, r.peer) for r in rows] == [
        ("bus emit, 1 Python handler", "pyee EventEmitter.emit"),
        ("bus emit, 1 Python handler (pure-Python path)", "pyee EventEmitter.emit"),
        ("bus emit, 1 Python handler", "blinker Signal.send"),
        ("bus emit, 10 Python handlers", "pyee EventEmitter.emit"),
        ("bus emit, 10 Python handlers (pure-Python path)", "pyee EventEmitter.emit"),
        ("bus emit, 10 Python handlers", "blinker Signal.send"),
    ]
    for row in rows:
        assert row.area == "bus" and row.unit == "ns/emit"
        assert row.value > 0 and row.peer_value is not None and row.peer_value > 0
        assert row.ratio is not None and math.isclose(row.ratio, row.peer_value / row.value)
    assert [r.ok is None for r in rows] == [False, True, True, False, True, True]


@pytest.mark.parametrize("library", sorted(bench_bus.EMITTERS))
@pytest.mark.parametrize("handlers", [1, 10])
def test_every_emitter_calls_each_handler_once_per_emit(library: str, handlers: int) -> None:
    emitter = bench_bus.EMITTERS[library](handlers)
    emitter.loop(7)
    assert emitter.calls() == 7 * handlers


def test_reading_the_call_count_does_not_change_it() -> None:
    emitter = bench_bus.EMITTERS["moonbus"](2)
    emitter.loop(3)
    assert [emitter.calls(), emitter.calls()] == [6, 6]
    emitter.loop(1)
    assert emitter.calls() == 8
