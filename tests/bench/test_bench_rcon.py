"""The RCON benchmark suite runs (quick mode) and reports honest rows."""

from __future__ import annotations

from moonbus.bench import rcon


def test_quick_run_reports_both_rows_without_errors() -> None:
    rows = rcon.run(quick=True)
    assert [row.name for row in rows] == [
        "RCON commands/s, one connection",
        "RCON commands/s, 50 concurrent connections",
    ]
    for row in rows:
        assert row.area == "admin" and row.unit == "commands/s"
        assert row.value > 0
        assert row.peer is None and row.ratio is None
        assert row.ok is not None
        assert row.note.endswith("errors: 0")
        assert row.note.startswith("admin registry")


def test_a_handler_can_be_passed_in() -> None:
    calls: list[str] = []

    def handler(command: str) -> str:
        calls.append(command)
        return f"answered {command}"

    rows = rcon.run(quick=True, handler=handler)
    assert all(row.note == "custom handler; errors: 0" for row in rows)
    assert len(calls) > 500 and set(calls) == {"events"}


def test_default_handler_is_the_admin_registry() -> None:
    rows = rcon.run(quick=True)
    assert all(row.note.startswith("admin registry") for row in rows)
    assert all(row.note.endswith("errors: 0") for row in rows)
