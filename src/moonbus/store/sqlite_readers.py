"""Read connections for the SQLite event store, one per concurrent query.

Why: in WAL mode readers never block the writer, so queries (an RCON admin
exporting the log, ``moonbus events`` in another process) must not share the
write connection or its lock; a slow export would stall the bus. Each query
borrows an idle connection (opening one when none is idle), runs inside one
read transaction (a consistent snapshot), and gives it back.

Threads: ``snapshot`` may be called from any thread; a borrowed connection is
used by that thread only. ``close`` closes the idle connections at once and
the borrowed ones when they come back.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from moonbus.errors import ClosedError
from moonbus.store.sqlite_schema import open_reader, translated

__all__ = ["ReaderPool"]


class ReaderPool:
    """Pooled read-only connections to one database file."""

    def __init__(self, path: str, *, lock_timeout: float) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    def _borrow(self) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise ClosedError(f"event store {self.path} is closed")
            if self._idle:
                return self._idle.pop()
        return open_reader(self.path, lock_timeout=self.lock_timeout)

    def _give_back(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    @contextmanager
    def snapshot(self, action: str) -> Iterator[sqlite3.Connection]:
        """A connection inside one read transaction; errors become ``StoreError``."""
        conn = self._borrow()
        try:
            with translated(self.path, action, self.lock_timeout):
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
        finally:
            self._give_back(conn)

    def close(self) -> None:
        """Close idle connections now, borrowed ones when returned. Idempotent."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
