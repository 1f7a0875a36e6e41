"""Opening an SQLite event-store file safely: ownership checks, pragmas, schema.

Why a module of its own: the one rule that matters most here is *never write to
a file that is not ours*. Before any statement that could write, the file's
header is checked (an SQLite file starts with ``SQLite format 3\\0``), then its
``application_id`` and tables are read: only an empty database or one marked
with moonbus's application id and schema version is touched. Everything else
gives a ``StoreError`` naming the file, and the file's bytes stay as they were.

A file marked as ours must also hold exactly our schema: the tables and
indexes below with their exact definitions, and nothing else. A view, a
trigger or an unknown object in a crafted file could run arbitrary SQL (a
recursive view that never ends, a trigger that writes) inside our queries, so
such a file is refused, naming the objects, before any query or pragma that
could change it. Only a regular file is opened: a FIFO or a device would
block or stream forever.

Readers of a file (``moonbus events --db``) open it with
:func:`open_read_only`: SQLite's ``mode=ro``, ``query_only``, no
``journal_mode`` change, and a progress handler that interrupts any statement
running past the caller's deadline (:class:`WorkLimit`).

Schema (one table, three indexes, each chosen for a query or a prune):

* ``events(seq INTEGER PRIMARY KEY, ...)``: ``seq`` is the rowid, so "after
  seq" and "newest" are rowid range scans.
* ``events_tick(tick)`` (implicitly ``(tick, seq)``): "after tick" scans.
* ``events_type_tick(type, tick)`` (implicitly ``(type, tick, seq)``): "type
  after tick" scans and tick retention ``DELETE ... WHERE type=? AND tick<=?``.
* ``events_type_seq(type)`` (implicitly ``(type, seq)``): "type after seq" and
  count retention.
* ``meta(key, value)``: ``high_water`` (the highest seq ever stored, kept when
  events are deleted), ``ticks_ordered`` (1 while ticks never went backwards
  in seq order, which lets tick queries walk an index in ``(tick, seq)`` order)
  and ``db_id`` (a random id given to the file when it is created, or when a
  file made before ids existed is first opened by a writer; the store's
  journal carries it, so a journal is only ever replayed into its own file).

Connections made here are plain ``sqlite3`` connections in autocommit mode
(``isolation_level=None``); the caller manages transactions and threads.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import stat
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from moonbus.errors import ConfigError, StoreError

__all__ = [
    "APPLICATION_ID",
    "MEMORY",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SET_DB_ID",
    "WorkLimit",
    "check_header",
    "check_schema",
    "check_writable",
    "new_db_id",
    "open_checkpointer",
    "open_read_only",
    "open_reader",
    "open_writer",
    "translated",
]

MEMORY = ":memory:"
APPLICATION_ID = 0x4D6F6F6E  # "Moon"
SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
WAL_SIZE_LIMIT = 16 * 1024 * 1024
# Frames a checkpoint may leave in the WAL before the next one takes the
# writer's lock to reach its end (``sqlite_checkpoint``): 16 MiB of 4 KiB
# pages, the size journal_size_limit truncates the WAL to. Only a writer that
# never pauses gets there.
WAL_CHECKPOINT_FRAMES = WAL_SIZE_LIMIT // 4096

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

SET_DB_ID = "INSERT OR REPLACE INTO meta (key, value) VALUES ('db_id', ?)"

_PROGRESS_STEPS = 10_000  # SQLite VM instructions between two looks at the deadline


def _normalised(sql: str) -> str:
    return " ".join(re.sub(r"\s*([(),])\s*", r"\1", sql).split())


def _name_of(statement: str) -> tuple[str, str]:
    words = statement.split()
    return words[1].lower(), words[2]


# (type, name) -> normalised CREATE statement: exactly what a store holds.
_EXPECTED = {_name_of(statement): _normalised(statement) for statement in SCHEMA}


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
    kind = "other"
    if "locked" in lowered or "busy" in lowered:
        waited = "" if lock_timeout is None else f" (waited {lock_timeout:g} s)"
        why = f"the database is locked by another connection or process{waited}"
        kind = "locked"
    elif "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        why = f"the file is corrupt or not an SQLite database ({text})"
        kind = "corrupt"
    elif "unable to open" in lowered:
        why = f"cannot open the file ({text})"
        kind = "io"
    elif "full" in lowered:
        why = f"the disk is full ({text})"
        kind = "disk_full"
    elif "readonly" in lowered or "read-only" in lowered:
        why = f"the file is read-only ({text})"
        kind = "read_only"
    else:
        why = text
        kind = "io" if "i/o" in lowered else "other"
    return StoreError(f"event store {path}: {why} while {action}", kind=kind)


def new_db_id() -> int:
    """A random id for a new store file (63 bits, never 0: 0 means "none")."""
    return secrets.randbits(63) or 1


def check_header(path: str, *, create: bool) -> None:
    """Refuse a file that exists and is not an SQLite database, or a missing one
    when ``create`` is false. Reads at most 16 bytes; never writes."""
    if path == MEMORY:
        return
    if os.path.isdir(path):
        raise StoreError(f"event store {path}: is a directory, not a database file")
    try:
        head = _read_head(path)
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


def _read_head(path: str) -> bytes:
    """The first bytes of ``path``, refusing anything but a regular file. Opened
    non-blocking and checked with ``fstat`` on the open descriptor, so a FIFO or
    a device is refused without ever waiting on it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = (
                "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file"
            )
            raise StoreError(f"event store {path}: is {kind}, not a database file; refusing it")
        return os.read(fd, len(SQLITE_MAGIC))
    finally:
        os.close(fd)


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
        check_schema(conn, path)
        return False
    if app_id == 0 and not tables:
        return True
    raise StoreError(
        f"event store {path}: an SQLite database that is not a moonbus event store; "
        "refusing to touch it"
    )


def check_schema(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a file whose schema is not exactly a moonbus event store's: every
    table and index of ``SCHEMA`` with its definition, and no other object (no
    view, trigger or extra table). Reads ``sqlite_master`` only."""
    found: dict[tuple[str, str], str] = {}
    for kind, name, sql in conn.execute("SELECT type, name, sql FROM sqlite_master"):
        found[(str(kind), str(name))] = "" if sql is None else _normalised(str(sql))
    extra = sorted(f"{kind} {name!r}" for kind, name in found if (kind, name) not in _EXPECTED)
    missing = sorted(f"{kind} {name!r}" for kind, name in _EXPECTED if (kind, name) not in found)
    changed = sorted(
        f"{kind} {name!r}"
        for (kind, name), sql in _EXPECTED.items()
        if (kind, name) in found and found[(kind, name)] != sql
    )
    problems = [
        f"{label}: {', '.join(items)}"
        for label, items in (("unexpected", extra), ("missing", missing), ("altered", changed))
        if items
    ]
    if problems:
        raise StoreError(
            f"event store {path}: the schema is not a moonbus event store's "
            f"({'; '.join(problems)}); refusing to read or write it"
        )


class WorkLimit:
    """Interrupts any statement on a connection that runs past a deadline.

    Why: even with our exact schema, a huge or damaged file can make a query
    long; a reader (a CLI command, an offline admin) must end with an error
    instead of spinning. ``start(action)`` arms the deadline for one operation;
    SQLite then calls the progress handler every ``_PROGRESS_STEPS``
    instructions and the statement fails with "interrupted", which
    :meth:`error` turns into a ``StoreError`` naming the limit. Threads: one
    connection, used by one thread at a time.
    """

    def __init__(self, path: str, max_seconds: float) -> None:
        if not 0 < max_seconds < float("inf"):
            raise ConfigError(f"read time limit must be a positive number, got {max_seconds!r}")
        self.path = path
        self.max_seconds = float(max_seconds)
        self.interrupted = 0  # statements stopped by the limit (a counter)
        self._deadline = float("inf")

    def install(self, conn: sqlite3.Connection) -> None:
        conn.set_progress_handler(self._check, _PROGRESS_STEPS)

    def start(self) -> None:
        self._deadline = time.monotonic() + self.max_seconds

    def _check(self) -> int:
        if time.monotonic() > self._deadline:
            self.interrupted += 1
            return 1
        return 0

    def error(self, action: str) -> StoreError:
        return StoreError(
            f"event store {self.path}: {action} took longer than the read time limit "
            f"({self.max_seconds:g} s); stopped"
        )


def open_read_only(path: str, *, lock_timeout: float, limit: WorkLimit) -> sqlite3.Connection:
    """Open a moonbus store file strictly for reading.

    A regular file only, an SQLite header, ``mode=ro`` (SQLite itself refuses
    to write), ``query_only``, ``trusted_schema=OFF``, our application id,
    schema version and exact schema; an empty database is not a store. Nothing
    here changes the file: no ``journal_mode``, no other persistent pragma.
    """
    if path == MEMORY:
        raise StoreError("event store :memory: cannot be opened for reading from a file")
    check_header(path, create=False)
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    with translated(path, "opening for reading", lock_timeout):
        conn = sqlite3.connect(
            uri, uri=True, timeout=lock_timeout, isolation_level=None, check_same_thread=False
        )
    try:
        limit.install(conn)
        limit.start()
        try:
            with translated(path, "checking the file", lock_timeout):
                conn.execute("PRAGMA query_only=ON")
                conn.execute("PRAGMA trusted_schema=OFF")
                if _verify_ours(conn, path):
                    raise StoreError(
                        f"event store {path}: an empty SQLite database, not a moonbus event store"
                    )
        except StoreError as exc:
            if limit.interrupted:
                raise limit.error("checking the file") from exc
            raise
    except BaseException:
        conn.close()
        raise
    return conn


def open_writer(
    path: str, *, synchronous: Synchronous, lock_timeout: float, create: bool = True
) -> sqlite3.Connection:
    """Open (and if empty, initialise) the store's one write connection."""
    if synchronous not in ("normal", "full"):
        raise StoreError(f"event store {path}: synchronous must be 'normal' or 'full'")
    check_header(path, create=create)
    if path != MEMORY:
        check_writable(path)
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
                        conn.execute(SET_DB_ID, (new_db_id(),))
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
    except BaseException:
        conn.close()
        raise
    return conn


def check_writable(path: str) -> None:
    """Refuse a file this process cannot write: SQLite would silently open it
    read-only and only the first append would fail. The file, its directory
    (where the WAL and shared-memory files live) and the file system must all
    be writable. Checked without taking any lock, so a writer of another
    program holding the database for a moment does not delay the open."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        read_only_fs = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only_fs = False
    if read_only_fs:
        why = f"the file system of {folder} is mounted read-only"
    elif os.path.exists(path) and not os.access(path, os.W_OK):
        why = "the file is read-only for this process"
    elif not os.access(folder, os.W_OK | os.X_OK):
        why = f"its directory {folder} is read-only for this process (SQLite writes its WAL there)"
    else:
        return
    raise StoreError(
        f"event store {path}: {why}; a writer needs write access to the file and its "
        "directory (read it with moonbus events --db)"
    )


def open_reader(path: str, *, lock_timeout: float) -> sqlite3.Connection:
    """Open a read connection (``query_only``) to a file the writer already opened."""
    with translated(path, "opening a read connection", lock_timeout):
        conn = _connect(path, lock_timeout)
        conn.execute("PRAGMA query_only=ON")
        conn.execute("PRAGMA temp_store=MEMORY")
    return conn


def open_checkpointer(path: str, *, lock_timeout: float) -> sqlite3.Connection:
    """Open the connection that runs the store's WAL checkpoints
    (``sqlite_checkpoint``) on a file the writer already opened. It never runs
    a statement of its own besides ``PRAGMA wal_checkpoint``."""
    with translated(path, "opening the checkpoint connection", lock_timeout):
        return _connect(path, lock_timeout)
