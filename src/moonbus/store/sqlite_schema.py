"""Opening an SQLite event-store file safely: ownership checks, pragmas, schema.

Why a module of its own: the one rule that matters most here is *never write to
a file that is not ours*. Before any statement that could write, the file's
header is checked (an SQLite file starts with ``SQLite format 3\\0``), then its
``application_id`` and tables are read: only an empty database or one marked
with moonbus's application id and schema version is touched. Everything else
gives a ``StoreError`` naming the file, and the file's bytes stay as they were.

Schema (one table, three indexes, each chosen for a query or a prune):

* ``events(seq INTEGER PRIMARY KEY, ...)``: ``seq`` is the rowid, so "after
  seq" and "newest" are rowid range scans.
* ``events_tick(tick)`` (implicitly ``(tick, seq)``): "after tick" scans.
* ``events_type_tick(type, tick)`` (implicitly ``(type, tick, seq)``): "type
  after tick" scans and tick retention ``DELETE ... WHERE type=? AND tick<=?``.
* ``events_type_seq(type)`` (implicitly ``(type, seq)``): "type after seq" and
  count retention.
* ``meta(key, value)``: ``high_water`` (the highest seq ever stored, kept when
  events are deleted) and ``ticks_ordered`` (1 while ticks never went backwards
  in seq order, which lets tick queries walk an index in ``(tick, seq)`` order).

Connections made here are plain ``sqlite3`` connections in autocommit mode
(``isolation_level=None``); the caller manages transactions and threads.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from moonbus.errors import StoreError

__all__ = [
    "APPLICATION_ID",
    "MEMORY",
    "SCHEMA",
    "SCHEMA_VERSION",
    "check_header",
    "open_reader",
    "open_writer",
    "translated",
]

MEMORY = ":memory:"
APPLICATION_ID = 0x4D6F6F6E  # "Moon"
SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
WAL_SIZE_LIMIT = 16 * 1024 * 1024

SCHEMA = (
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        tick INTEGER,
        type TEXT NOT NULL,
        ts INTEGER NOT NULL,
        source TEXT NOT NULL,
        data TEXT NOT NULL
    )""",
    "CREATE INDEX events_tick ON events(tick)",
    "CREATE INDEX events_type_tick ON events(type, tick)",
    "CREATE INDEX events_type_seq ON events(type)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
)

Synchronous = Literal["normal", "full"]


@contextmanager
def translated(path: str, action: str, lock_timeout: float | None = None) -> Iterator[None]:
    """Turn ``sqlite3`` errors raised inside the block into ``StoreError`` naming ``path``."""
    try:
        yield
    except sqlite3.Error as exc:
        raise store_error(path, action, exc, lock_timeout) from exc


def store_error(
    path: str, action: str, exc: sqlite3.Error, lock_timeout: float | None = None
) -> StoreError:
    """The ``StoreError`` for one ``sqlite3`` failure, with the file and what was being done."""
    text = str(exc)
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        waited = "" if lock_timeout is None else f" (waited {lock_timeout:g} s)"
        why = f"the database is locked by another connection or process{waited}"
    elif "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        why = f"the file is corrupt or not an SQLite database ({text})"
    elif "unable to open" in lowered:
        why = f"cannot open the file ({text})"
    else:
        why = text
    return StoreError(f"event store {path}: {why} while {action}")


def check_header(path: str, *, create: bool) -> None:
    """Refuse a file that exists and is not an SQLite database, or a missing one
    when ``create`` is false. Reads at most 16 bytes; never writes."""
    if path == MEMORY:
        return
    if os.path.isdir(path):
        raise StoreError(f"event store {path}: is a directory, not a database file")
    try:
        with open(path, "rb") as fp:
            head = fp.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        if not create:
            raise StoreError(f"event store {path}: no such file") from None
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise StoreError(f"event store {path}: directory {parent} does not exist") from None
        return
    except OSError as exc:
        raise StoreError(f"event store {path}: cannot read the file ({exc})") from exc
    if head and head != SQLITE_MAGIC:
        raise StoreError(f"event store {path}: not an SQLite database; refusing to touch it")


def _connect(path: str, lock_timeout: float) -> sqlite3.Connection:
    # check_same_thread=False: the store's locks decide who uses a connection,
    # not the thread that happened to open it.
    return sqlite3.connect(
        path, timeout=lock_timeout, isolation_level=None, check_same_thread=False
    )


def _verify_ours(conn: sqlite3.Connection, path: str) -> bool:
    """True when the schema must still be created (an empty database)."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
    if app_id == APPLICATION_ID:
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"event store {path}: schema version {version} is not supported "
                f"(this moonbus reads version {SCHEMA_VERSION})"
            )
        return False
    if app_id == 0 and not tables:
        return True
    raise StoreError(
        f"event store {path}: an SQLite database that is not a moonbus event store; "
        "refusing to touch it"
    )


def open_writer(
    path: str, *, synchronous: Synchronous, lock_timeout: float, create: bool = True
) -> sqlite3.Connection:
    """Open (and if empty, initialise) the store's one write connection."""
    if synchronous not in ("normal", "full"):
        raise StoreError(f"event store {path}: synchronous must be 'normal' or 'full'")
    check_header(path, create=create)
    with translated(path, "opening", lock_timeout):
        conn = _connect(path, lock_timeout)
    try:
        with translated(path, "checking the file", lock_timeout):
            fresh = _verify_ours(conn, path)
        with translated(path, "setting up the database", lock_timeout):
            if path != MEMORY:
                conn.execute("PRAGMA journal_mode=WAL").fetchone()
                conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}").fetchone()
            conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            conn.execute("PRAGMA temp_store=MEMORY")
            if fresh:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if _verify_ours(conn, path):  # nobody initialised it meanwhile
                        for statement in SCHEMA:
                            conn.execute(statement)
                        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
    except BaseException:
        conn.close()
        raise
    return conn


def open_reader(path: str, *, lock_timeout: float) -> sqlite3.Connection:
    """Open a read connection (``query_only``) to a file the writer already opened."""
    with translated(path, "opening a read connection", lock_timeout):
        conn = _connect(path, lock_timeout)
        conn.execute("PRAGMA query_only=ON")
        conn.execute("PRAGMA temp_store=MEMORY")
    return conn
