"""`moonbus bench` runs its suites and prints the table; the suites run in quick mode."""

from __future__ import annotations

import json
from pathlib import Path

from moonbus.cli.bench_cmd import suite_names


def test_suites_are_discovered() -> None:
    names = suite_names()
    assert "host" in names and "harness" not in names


def test_bench_quick_host_writes_rows(moonbus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "rows.json"
    result = moonbus("bench", "--quick", "--only", "host", "--json", out)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    names = [r["name"] for r in rows]
    assert "event -> Lua handler reading 3 fields" in names
    assert "event -> Lua handler (pure-Python path)" in names
    assert "counter:increment() from Lua" in names
    counter = next(r for r in rows if r["name"] == "counter:increment() from Lua")
    assert counter["peer_value"] > 0 and counter["ratio"] > 0
    assert "moonbus bench" in result.output


def test_bench_unknown_suite_is_a_usage_error(moonbus) -> None:  # type: ignore[no-untyped-def]
    result = moonbus("bench", "--only", "nope")
    assert result.exit_code == 2
    assert "unknown suite" in result.output
