"""`moonbus events` and local `moonbus admin` against a store written by `run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def events_db(moonbus, examples: Path, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    db = tmp_path / "events.db"
    result = moonbus("run", examples / "mining.lua", "--ticks", "150", "--tick-ms", "0", "-q",
                     "--events-db", db)
    assert result.exit_code == 0, result.output
    return db


def test_events_json_is_one_array_in_seq_order(moonbus, events_db: Path) -> None:  # type: ignore[no-untyped-def]
    result = moonbus("events", "--db", events_db)
    assert result.exit_code == 0
    events = json.loads(result.output)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    assert set(events[0]) == {"seq", "tick", "type", "data", "ts", "source"}
    assert sum(1 for e in events if e["type"] == "tick") == 150


def test_events_filters_and_formats(moonbus, events_db: Path) -> None:  # type: ignore[no-untyped-def]
    result = moonbus("events", "--db", events_db, "--type", "tick", "--after-tick", "140",
                     "--format", "ndjson")
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [e["tick"] for e in lines] == list(range(141, 151))
    table = moonbus("events", "--db", events_db, "--type", "tick", "--limit", "3",
                    "--format", "table")
    assert table.exit_code == 0
    rows = table.output.strip().splitlines()
    assert rows[0].split()[:3] == ["SEQ", "TICK", "TYPE"]
    assert len(rows) == 4


def test_events_missing_db_is_a_usage_error(moonbus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = moonbus("events", "--db", tmp_path / "nope.db")
    assert result.exit_code == 2
    assert "no event store at" in result.output


def test_events_refuses_a_file_that_is_not_a_store(moonbus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bogus = tmp_path / "notes.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    before = bogus.read_bytes()
    result = moonbus("events", "--db", bogus)
    assert result.exit_code != 0
    assert str(bogus.name) in result.output
    assert bogus.read_bytes() == before


def test_admin_locally_on_a_store(moonbus, events_db: Path) -> None:  # type: ignore[no-untyped-def]
    summary = moonbus("admin", "--events-db", events_db, "events", "100")
    assert summary.exit_code == 0
    assert "- tick: 50" in summary.output
    got = moonbus("admin", "--events-db", events_db, "events.get", "tick", "148")
    assert [e["tick"] for e in json.loads(got.output)] == [149, 150]
    bad = moonbus("admin", "--events-db", events_db, "events", "soon")
    assert bad.exit_code == 1
    assert "after_tick must be an integer" in bad.output


def test_admin_over_rcon_needs_a_password(moonbus, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("MOONBUS_RCON_PASSWORD", raising=False)
    result = moonbus("admin", "--port", "27999", "help")
    assert result.exit_code == 2
    assert "password is required" in result.output


def test_run_with_unreachable_redis_names_the_url(moonbus, examples: Path) -> None:  # type: ignore[no-untyped-def]
    result = moonbus("run", examples / "mining.lua", "--ticks", "5", "--tick-ms", "0", "-q",
                     "--shared", "redis://127.0.0.1:1/0")
    assert result.exit_code == 2
    assert "redis://127.0.0.1:1/0" in result.output


def test_events_db_and_events_url_are_exclusive(moonbus, examples: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = moonbus("run", examples / "mining.lua", "--ticks", "5", "--tick-ms", "0", "-q",
                     "--events-db", tmp_path / "a.db", "--events", "sqlite:///b.db")
    assert result.exit_code == 2
    assert "not both" in result.output
