"""``moonbus events``: read a durable event store (SQLite file or Redis URL).

Reads only: the store is opened, queried and closed; nothing is appended,
pruned or rewritten (a file that is not a moonbus store is refused by the
store itself, untouched).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from moonbus.errors import ConfigError, StoreError
from moonbus.store.factory import open_event_store
from moonbus.store.render import events_json, events_ndjson, events_table

__all__ = ["events_command"]


def _store_url(db: str) -> str:
    if "://" in db:
        return db
    path = Path(db)
    if not path.exists():
        raise click.UsageError(f"no event store at {db} (give a SQLite file or a redis:// URL)")
    return f"sqlite:///{path.resolve()}"


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
def events_command(
    db: str,
    types: tuple[str, ...],
    after_tick: int | None,
    after_seq: int | None,
    limit: int | None,
    fmt: str,
) -> None:
    """Print stored events in seq order (json: one array of {seq, tick, type, data, ts, source})."""
    try:
        store = open_event_store(_store_url(db))
    except (ConfigError, StoreError) as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        events = store.query(
            after_tick=after_tick,
            after_seq=after_seq,
            types=list(types) or None,
            limit=limit,
            newest=limit is not None,
        )
    except (ConfigError, StoreError) as exc:
        raise click.ClickException(str(exc)) from exc
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
