"""Reading a store file is read-only (SPEC 4b): crafted SQLite files against
``moonbus events --db`` and offline ``moonbus admin --events-db``.

Each crafted file is built in tmp_path; each run must end within a bound with
exit 2 (1 for an admin command that failed on a bad row, as `moonbus admin`
documents), a message naming the problem, no traceback, and the file's bytes
(so its journal mode too) unchanged.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from moonbus.bus.event import Event
from moonbus.cli import cli
from moonbus.errors import StoreError
from moonbus.store.sqlite import SqliteEventStore
from moonbus.store.sqlite_file_reader import SqliteFileReader
from moonbus.store.sqlite_schema import APPLICATION_ID, SCHEMA_VERSION

BOUND = 10.0  # seconds any refusal may take, under load

RECURSIVE_VIEW = (
    "CREATE VIEW events AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
    "SELECT n AS seq, n AS tick, 'x' AS type, 0 AS ts, 's' AS source, '{}' AS data FROM r"
)


def run(*args: str | Path) -> tuple[Result, float]:
    began = time.monotonic()
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
    return result, time.monotonic() - began


def store_file(tmp_path: Path, name: str = "events.db", count: int = 5) -> Path:
    """A real store with ``count`` tick events, closed."""
    path = tmp_path / name
    with SqliteEventStore(path) as store:
        for seq in range(1, count + 1):
            store.append(Event("tick", {"n": seq}, seq, seq, 1000 + seq, "world"))
    return path


def crafted(tmp_path: Path, statements: list[str], name: str = "crafted.db") -> Path:
    """A file marked as a moonbus store (application id, version) holding ``statements``."""
    path = tmp_path / name
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return path


def with_row(path: Path, row: tuple[object, ...]) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", row)
    conn.commit()
    conn.close()
    return path


def assert_refused(result: Result, took: float, *needles: str, exit_code: int = 2) -> None:
    assert took < BOUND, f"took {took:.1f} s"
    assert result.exit_code == exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


def journal_byte(path: Path) -> bytes:
    return path.read_bytes()[18:20]  # 1,1 rollback journal; 2,2 WAL


Reader = Callable[[Path], tuple[Result, float]]
READERS: dict[str, Reader] = {
    "events": lambda path: run("events", "--db", path),
    "admin": lambda path: run("admin", "--events-db", path, "events.get", "tick"),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_recursive_view_is_refused_before_it_runs(tmp_path: Path, reader: str) -> None:
    path = crafted(tmp_path, [RECURSIVE_VIEW, "CREATE TABLE meta (key TEXT, value INTEGER)"])
    before = path.read_bytes()
    result, took = READERS[reader](path)
    assert_refused(result, took, "view 'events'", "not a moonbus event store")
    assert path.read_bytes() == before
    assert journal_byte(path) == b"\x01\x01"


def test_clearing_a_crafted_file_offline_is_refused_before_any_write(tmp_path: Path) -> None:
    path = crafted(tmp_path, [RECURSIVE_VIEW, "CREATE TABLE meta (key TEXT, value INTEGER)"])
    before = path.read_bytes()
    result, took = run("admin", "--events-db", path, "events.clear")
    assert_refused(result, took, "view 'events'")
    assert path.read_bytes() == before  # the writer did not switch it to WAL either


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_trigger_or_an_extra_table_is_refused_by_name(tmp_path: Path, reader: str) -> None:
    path = store_file(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TRIGGER sneaky AFTER INSERT ON events BEGIN DELETE FROM meta; END")
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    result, took = READERS[reader](path)
    assert_refused(result, took, "trigger 'sneaky'", "table 'notes'")
    assert path.read_bytes() == before


BAD_ROWS = {
    "bad json": ((99, 1, "tick", 0, "s", "{not json"), "not valid JSON"),
    "deep json": ((99, 1, "tick", 0, "s", '{"a":' * 100_000 + "1" + "}" * 100_000), "nested"),
    "deep arrays": (
        (99, 1, "tick", 0, "s", '{"a":' + "[" * 100_000 + "]" * 100_000 + "}"),
        "nested",
    ),
    "too deep to render": ((99, 1, "tick", 0, "s", '{"a":' * 200 + "1" + "}" * 200), "64 levels"),
    "not an object": ((99, 1, "tick", 0, "s", "[1, 2]"), "not an object"),
    "text tick": ((99, '1,"injected":2', "tick", 0, "s", "{}"), "its tick is a str"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_a_bad_row_is_a_clear_error_naming_its_seq(tmp_path: Path, case: str) -> None:
    row, problem = BAD_ROWS[case]
    path = with_row(store_file(tmp_path), row)
    before = path.read_bytes()
    for fmt in ("json", "ndjson", "table"):
        result, took = run("events", "--db", path, "--format", fmt)
        assert_refused(result, took, "seq 99", problem)
    result, took = run("admin", "--events-db", path, "events.get", "tick")
    assert_refused(result, took, "seq 99", problem, exit_code=1)  # the command failed
    assert path.read_bytes() == before


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_fifo_is_refused_without_blocking(tmp_path: Path, reader: str) -> None:
    fifo = tmp_path / "events.db"
    os.mkfifo(fifo)
    result, took = READERS[reader](fifo)
    assert_refused(result, took, "is a FIFO")


def test_an_empty_database_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    path.write_bytes(b"")
    before = path.read_bytes()
    result, took = run("events", "--db", path)
    assert_refused(result, took, "not a moonbus event store")
    assert path.read_bytes() == before


def test_reading_a_real_store_changes_nothing(tmp_path: Path) -> None:
    path = store_file(tmp_path)
    before = path.read_bytes()
    result, _ = run("events", "--db", path)
    assert result.exit_code == 0, result.output
    assert [e["seq"] for e in json.loads(result.output)] == [1, 2, 3, 4, 5]
    summary, _ = run("admin", "--events-db", path, "events")
    assert summary.exit_code == 0 and "- tick: 5" in summary.output
    assert path.read_bytes() == before


def test_a_read_that_runs_past_the_time_limit_is_stopped(tmp_path: Path) -> None:
    path = store_file(tmp_path)
    with SqliteFileReader(path, max_seconds=0.2) as reader:
        began = time.monotonic()
        spin = (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
        )
        limit = r"took longer than the read time limit \(0.2 s\)"
        with pytest.raises(StoreError, match=limit), reader._reading("spinning") as conn:
            conn.execute(spin).fetchall()
        assert time.monotonic() - began < BOUND
        assert reader.interrupted == 1
        assert len(reader.query()) == 5  # the next read gets a fresh deadline
        with pytest.raises(StoreError, match="opened read-only; cannot clear"):
            reader.clear()


def test_the_read_timeout_option_is_checked(tmp_path: Path) -> None:
    result, _ = run("events", "--db", store_file(tmp_path), "--read-timeout", "0")
    assert result.exit_code == 2
    assert "--read-timeout" in result.output
