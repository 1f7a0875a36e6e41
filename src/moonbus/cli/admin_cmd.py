"""``moonbus admin``: run one admin command over RCON, or locally on a store.

Over RCON (``--host``/``--port``/``--password``, the password also from
``MOONBUS_RCON_PASSWORD``): the command runs in the ``moonbus serve`` process
and its answer is printed. Locally (``--events-db FILE``, no ``--host``): a
runtime without scripts is opened on that store, so the ``events*`` commands
and ``settings`` work on a file offline. The file is opened read-only
(``moonbus.store.sqlite_file_reader``: exact schema, bounded work, bad rows
are errors naming their seq) unless the command changes the store
(``events.clear``); then it is opened for writing, which checks the schema
the same way before anything is written.

Exit codes: 0 ok; 1 the command failed (its ``error: ...`` answer is printed
on stderr); 2 bad usage, wrong password or unreachable server.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from moonbus.errors import AdminAuthError, AdminError, MoonbusError

__all__ = ["admin_command"]

DEFAULT_PORT = 27015


def _print_answer(answer: str) -> None:
    if answer.startswith("error: "):
        click.echo(answer, err=True)
        sys.exit(1)
    click.echo(answer)


@click.command("admin", context_settings={"ignore_unknown_options": True})
@click.option("--host", default=None, help="RCON host of a running `moonbus serve`.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help=f"RCON port (default {DEFAULT_PORT}).")
@click.option("--password", default=None, envvar="MOONBUS_RCON_PASSWORD",
              help="RCON password (or MOONBUS_RCON_PASSWORD).")
@click.option("--events-db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Run locally against this SQLite event store instead of over RCON.")
@click.option("--timeout", type=float, default=5.0, show_default=True,
              help="Seconds to wait for the server.")
@click.argument("command", nargs=-1, required=True)
def admin_command(
    host: str | None,
    port: int | None,
    password: str | None,
    events_db: Path | None,
    timeout: float,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND (e.g. `help`, `events 0`, `script.stop mining`)."""
    import shlex

    line = shlex.join(command) if len(command) > 1 else command[0]
    if events_db is not None and host is None and port is None:
        _run_local(events_db, line)
        return
    _run_remote(host or "127.0.0.1", port or DEFAULT_PORT, password, line, timeout)


class _StoreFailed(click.ClickException):
    """The store file could not be opened (not a store, not a regular file): exit 2."""

    exit_code = 2


# Admin commands that change the event store: only these open the file for writing.
_WRITING_COMMANDS = frozenset({"events.clear"})


def _run_local(events_db: Path, line: str) -> None:
    from moonbus.runtime import Runtime
    from moonbus.store.base import EventStore
    from moonbus.store.sqlite import SqliteEventStore
    from moonbus.store.sqlite_file_reader import SqliteFileReader

    if not events_db.exists():
        raise click.UsageError(f"no event store at {events_db}")
    path = str(events_db.resolve())
    name = line.split(maxsplit=1)[0] if line.strip() else ""
    try:
        store: EventStore = (
            SqliteEventStore(path, create=False)
            if name in _WRITING_COMMANDS
            else SqliteFileReader(path)
        )
        with store, Runtime(threaded=False, events=store) as rt:
            _print_answer(rt.admin.answer(line))
    except MoonbusError as exc:
        raise _StoreFailed(str(exc)) from exc


def _run_remote(host: str, port: int, password: str | None, line: str, timeout: float) -> None:
    if not password:
        raise click.UsageError(
            "an RCON password is required (--password or MOONBUS_RCON_PASSWORD)"
        )
    from moonbus.admin.rcon_client import RconClient

    try:
        with RconClient(host, port, password, timeout=timeout) as client:
            answer = client.command(line)
    except AdminAuthError as exc:
        raise click.UsageError(f"{host}:{port}: {exc}") from exc
    except (AdminError, OSError) as exc:
        raise click.UsageError(f"{host}:{port}: {exc}") from exc
    _print_answer(answer)
