"""The live-streams benchmark suite runs (quick mode) and reports honest rows."""

from __future__ import annotations

import math

import pytest

from moonbus.bench import http_streams

pytest.importorskip("sse_starlette")


def test_quick_run_reports_the_six_rows() -> None:
    rows = http_streams.run(quick=True)
    assert [row.name for row in rows] == [
        "SSE events/s delivered, 1 client",
        "SSE events/s delivered, 50 clients",
        "emit cost with the stream hub attached vs none (no server work)",
        "emit cost with 50 SSE clients vs none (emitting thread CPU)",
        "emit cost at 10,000 events/s (60 frames/s) with 50 SSE clients vs none "
        "(wall clock of the emits)",
        "SSE p99 event -> client receipt at 1,000 events/s",
    ]
    for row in rows:
        assert row.area == "http" and row.skipped is None
        assert row.value > 0 and not math.isnan(row.value)
        assert row.ok is not None
    hub, cost = rows[2], rows[3]
    assert hub.peer == "no hub" and hub.peer_value and hub.ratio
    assert cost.peer == "no clients" and cost.peer_value and cost.ratio
    assert cost.note.startswith("0 clients dropped"), "a drop would make the figure lie"
    paced = rows[4]
    assert paced.peer == "no clients" and paced.peer_value and paced.ratio
    assert paced.note.endswith("0 dropped") and "emitting thread CPU" in paced.note
    assert "client-side receipt in Python" in rows[5].note


def test_rows_are_skipped_with_the_pip_command_without_the_http_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    rows = http_streams.run(quick=True)
    assert len(rows) == 6
    assert all(row.skipped == "peer missing: pip install moonbus[http]" for row in rows)
