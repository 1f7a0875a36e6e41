"""``moonbus bench`` on an install without the dev-only peers (blinker, pyee,
redis): their rows are marked skipped with the pip command, the rest still run.

A missing package is simulated with ``sys.modules[name] = None``, which makes
``import name`` raise ImportError as it does where the package is absent.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from moonbus.bench import bus as bench_bus
from moonbus.bench import shared as bench_shared
from moonbus.bench import store_redis as bench_store_redis
from moonbus.bench.harness import missing_peer, skipped_row
from moonbus.cli import cli

UNREACHABLE = "redis://127.0.0.1:1/0"


def _without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_missing_peer_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    assert missing_peer("json") is None
    _without(monkeypatch, "blinker")
    assert missing_peer("blinker") == "peer missing: pip install blinker"
    assert missing_peer("blinker", "blinker>=1.7") == "peer missing: pip install blinker>=1.7"


def test_a_skipped_row_says_why_and_a_measured_one_does_not() -> None:
    row = skipped_row("bus", "r", "ns/emit", "peer missing: pip install pyee", value=5.0)
    assert row.skipped == "peer missing: pip install pyee" and row.ratio is None
    assert row.ok is None and row.value == 5.0
    assert math.isnan(skipped_row("x", "r", "ops/s", "no Redis").value)  # not measured


def test_bus_rows_without_blinker_keep_ours_and_the_pyee_comparison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _without(monkeypatch, "blinker")
    rows = bench_bus.run(quick=True)
    assert len(rows) == 6
    for row in rows:
        assert row.value > 0
        if row.peer == "blinker Signal.send":
            assert row.skipped == "peer missing: pip install blinker"
            assert row.ratio is None and row.peer_value is None and row.ok is None
        else:
            assert row.skipped is None and row.ratio is not None


def test_bus_rows_without_any_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    _without(monkeypatch, "blinker", "pyee")
    rows = bench_bus.run(quick=True)
    assert {row.skipped for row in rows} == {
        "peer missing: pip install blinker", "peer missing: pip install pyee"}
    assert all(row.value > 0 and row.ratio is None for row in rows)


@pytest.mark.parametrize("suite", [bench_shared, bench_store_redis])
def test_redis_rows_without_the_redis_package(
    monkeypatch: pytest.MonkeyPatch, suite: object
) -> None:
    _without(monkeypatch, "redis")
    rows = suite.redis_rows(True, UNREACHABLE)  # type: ignore[attr-defined]
    assert rows
    for row in rows:
        assert math.isnan(row.value)
        assert row.skipped == "peer missing: pip install redis"


def test_the_cli_table_marks_skipped_rows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _without(monkeypatch, "blinker", "pyee", "redis")
    monkeypatch.setenv("MOONBUS_BENCH_REDIS", UNREACHABLE)
    out = tmp_path / "rows.json"
    result = CliRunner().invoke(
        cli, ["bench", "--quick", "--only", "bus", "--only", "store_redis", "--json", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output
    assert "4 rows skipped: peer missing: pip install pyee" in result.output
    assert "2 rows skipped: peer missing: pip install blinker" in result.output
    assert "3 rows skipped: peer missing: pip install redis" in result.output
    rows = json.loads(out.read_text())
    assert len(rows) == 9
    assert all(r["note"].startswith("skipped: peer missing: pip install ") for r in rows)
