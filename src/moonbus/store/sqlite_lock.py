"""One writer per SQLite event-store file, enforced at open.

Why: two processes appending to one file number their events independently,
so the second one fails every emit with ``UNIQUE constraint failed:
events.seq`` for ever. SPEC §6: a second writer is refused *at open*, with a
message saying so.

How: an exclusive ``flock`` on a sidecar file ``<store>.lock`` (created next
to the store, never deleted: deleting it would let two processes lock two
different files). The kernel drops the lock when the holder's file
descriptor closes, which also happens when the process dies (kill -9), so a
crashed writer never leaves a stale lock. Readers (``moonbus events --db``)
do not take it. The lock is per open file description: a second store on the
same file *in the same process* is refused too. The lock file sits next to the
path with symlinks resolved (``os.path.realpath``), so a store opened through a
symlink takes the same lock (a hard link to the file is not detected).

Threads: ``acquire`` and ``release`` belong to the store's owner (open, close).
"""

from __future__ import annotations

import fcntl
import os

from moonbus.errors import StoreError

__all__ = ["WriterLock", "lock_path"]


def lock_path(path: str) -> str:
    """The sidecar lock file of the store at ``path``."""
    return path + ".lock"


class WriterLock:
    """The exclusive writer lock of one store file (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        # next to the file the path resolves to: a symlink to the store (or a
        # path through one) must find the same lock, not a second one of its own
        self.lock_file = lock_path(os.path.realpath(path))
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``StoreError`` saying who holds it (the pid the
        holder wrote, when readable) or why the lock file cannot be made."""
        try:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(
                f"event store {self.path}: cannot create its writer lock file "
                f"{self.lock_file} ({exc.strerror}); a writer needs write access to the "
                "store's directory"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StoreError(
                f"event store {self.path}: another writer has it open{holder} (lock file "
                f"{self.lock_file}); one process writes a given store at a time - stop it, "
                "or open the store read-only (moonbus events --db)"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(
                f"event store {self.path}: cannot lock {self.lock_file} ({exc.strerror})"
            ) from exc
        try:  # who holds it, for the next one's message; best effort
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (process {text})" if text.isdigit() else ""
