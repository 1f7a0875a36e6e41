"""``moonbus events``: read a durable event store (SQLite file or Redis URL).

Reads only: an SQLite file is opened read-only (``mode=ro``), must hold
exactly a moonbus store's schema (no views or triggers), and every read stops
after ``--read-timeout`` seconds; a file that is not a store, is not a regular
file, or holds a bad row is a clear error (exit 2, no traceback) and stays
byte-for-byte as it was (see ``moonbus.store.sqlite_file_reader``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from moonbus.errors import ConfigError, StoreError
from moonbus.store.factory import open_event_reader
from moonbus.store.render import events_json, events_ndjson, events_table
from moonbus.store.sqlite_file_reader import DEFAULT_READ_SECONDS

__all__ = ["events_command"]


def _store_url(db: str) -> str:
    if "://" in db:
        return db
    path = Path(db)
    if not path.exists():
        raise click.UsageError(f"no event store at {db} (give a SQLite file or a redis:// URL)")
    return str(path.resolve())  # a plain path: "?", "#" or "%" in its name stay part of it


class _ReadError(click.ClickException):
    """The store could not be read (a bad file or row, a limit): exit 2."""

    exit_code = 2


@click.command("events")
@click.option("--db", "db", required=True, metavar="FILE|URL",
              help="SQLite file written by --events-db, or a redis:// URL.")
@click.option("--type", "types", multiple=True, metavar="T", help="Only this type (repeatable).")
@click.option("--after-tick", type=int, default=None, metavar="N", help="Only events after tick N.")
@click.option("--after-seq", type=int, default=None, metavar="N", help="Only events after seq N.")
@click.option("--limit", type=click.IntRange(min=0), default=None, metavar="N",
              help="At most N events (the newest N).")
@click.option("--format", "fmt", type=click.Choice(["json", "ndjson", "table"]), default="json",
              show_default=True)
@click.option("--read-timeout", type=click.FloatRange(min=0, min_open=True, max=86400.0),
              default=DEFAULT_READ_SECONDS, show_default=True, metavar="SECONDS",
              help="Stop reading an SQLite file after this long (an error, exit 2).")
def events_command(
    db: str,
    types: tuple[str, ...],
    after_tick: int | None,
    after_seq: int | None,
    limit: int | None,
    fmt: str,
    read_timeout: float,
) -> None:
    """Print stored events in seq order (json: one array of {seq, tick, type, data, ts, source})."""
    try:
        store = open_event_reader(_store_url(db), max_seconds=read_timeout)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    except StoreError as exc:
        raise _ReadError(str(exc)) from exc
    try:
        events = store.query(
            after_tick=after_tick,
            after_seq=after_seq,
            types=list(types) or None,
            limit=limit,
            newest=limit is not None,
        )
    except (ConfigError, StoreError) as exc:
        raise _ReadError(str(exc)) from exc
    finally:
        store.close()
    if fmt == "json":
        text = events_json(events, indent=None)
    elif fmt == "ndjson":
        text = events_ndjson(events)
    else:
        text = events_table(events)
    sys.stdout.write(text)
    if text and not text.endswith("\n"):
        sys.stdout.write("\n")
