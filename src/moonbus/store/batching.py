"""A bounded buffer drained by one background thread in batches (fast mode).

Why: in *fast* mode a store trades a small, bounded loss window for throughput.
Appenders only add an item to a list under a lock; one writer thread takes up
to ``batch_size`` items at a time and hands them to ``write`` (one transaction
or one pipeline). The window is bounded twice:

* by count: at most ``max_pending`` items wait in the buffer (appenders block
  when it is full), plus the ``batch_size`` items being written;
* by time: the writer takes a batch at the latest ``flush_interval`` seconds
  after its oldest item arrived (while the writer keeps up with the appenders).

``flush()`` blocks until everything put before the call has been written.

Threads: ``put``, ``flush`` and ``close`` may be called from any thread; the
writer thread (created here, owned by this object) is the only caller of
``write``. If ``write`` raises, ``retry_after(error, attempt)`` says what
next (absent, or None: give up). Giving up, the writer stops; the items not
written are counted and every later ``put``/``flush``/``close`` raises
``StoreError`` naming the failure ("it broke"), while calls after ``close``
raise ``ClosedError`` ("you closed it"). Retrying (the SQLite store's journal
mode, whose items are safe in its journal meanwhile), the writer tries the
same batch again after the returned number of seconds, or at once when a
``put`` or ``flush`` asks: those wait for that attempt and raise
``StoreError`` (the cause's ``kind``) while it fails, so callers see an
outage as they would with a commit of their own, and the first call after it
ended goes through. ``close`` makes one last attempt and gives up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from moonbus.errors import ClosedError, ConfigError, StoreError

__all__ = ["BatchWriter"]

T = TypeVar("T")


class BatchWriter(Generic[T]):
    """Collects items from any thread; one background thread writes them in order."""

    def __init__(
        self,
        write: Callable[[list[T]], None],
        *,
        batch_size: int,
        flush_interval: float,
        max_pending: int,
        name: str,
        retry_after: Callable[[BaseException, int], float | None] | None = None,
        lost_note: str = "were not written",
        initial: Sequence[T] = (),
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, not {batch_size!r}")
        if not flush_interval > 0:
            raise ConfigError(f"flush_interval must be > 0 seconds, not {flush_interval!r}")
        if max_pending < batch_size:
            raise ConfigError(
                f"max_pending ({max_pending!r}) must be at least batch_size ({batch_size!r})"
            )
        self._write = write
        self._retry_after = retry_after
        self._lost_note = lost_note
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.name = name
        # Entered as a plain Lock on the hot path (``with self._lock``), which is
        # much cheaper than entering a Condition object. Three conditions share it:
        # the writer waits for items, appenders for room, flushers for progress.
        self._lock = threading.Lock()
        self._items = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._done = threading.Condition(self._lock)
        # ``initial``: items put before the writer existed (a journal's rows that
        # could not be committed at open), written first, even past max_pending
        self._buffer: list[T] = list(initial)
        self._oldest_at = time.monotonic()
        self._put = len(self._buffer)
        self._written = 0
        self._flush_upto = 0
        self._closing = False
        self._failure: BaseException | None = None
        self._retrying = False  # _failure is the last attempt's, the batch is kept
        self._retry_now = False  # a put or flush asks for an attempt without delay
        self._attempts = 0  # attempts that failed (the current batch's, retrying)
        self._lost = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Items put but not yet written."""
        with self._lock:
            return self._put - self._written - self._lost

    def put(self, item: T) -> None:
        """Queue one item; blocks while ``max_pending`` items are waiting."""
        with self._lock:
            self._check()
            if len(self._buffer) >= self.max_pending:
                while len(self._buffer) >= self.max_pending:
                    self._room.wait()
                    self._check()
            if not self._buffer:
                self._oldest_at = time.monotonic()
                self._items.notify()
            self._buffer.append(item)
            self._put += 1
            if len(self._buffer) == self.batch_size:
                self._items.notify()

    def flush(self) -> None:
        """Block until every item put before this call is written."""
        with self._lock:
            target = self._put
            while True:
                self._raise_failure()  # retrying: after one more attempt, if it works
                if self._written >= target:
                    return
                self._flush_upto = max(self._flush_upto, target)
                self._items.notify()
                while self._written < target and self._failure is None:
                    self._done.wait()

    def close(self) -> None:
        """Write everything still queued, stop the thread. Idempotent."""
        with self._lock:
            already = self._closing
            self._closing = True
            self._wake_all()
        if not already:
            self._thread.join()
        with self._lock:
            self._raise_failure()

    def _wake_all(self) -> None:
        self._items.notify_all()
        self._room.notify_all()
        self._done.notify_all()

    def _check(self) -> None:
        if self._closing:
            raise ClosedError(f"{self.name} is closed")
        self._raise_failure()

    def _raise_failure(self) -> None:
        """Raise the writer's failure, if any (holding ``_lock``). While it is
        retrying, first ask for an attempt now and wait for its outcome."""
        if self._retrying and not self._closing:
            attempts = self._attempts
            self._retry_now = True
            self._items.notify_all()
            while self._retrying and self._attempts == attempts and not self._closing:
                self._done.wait()
        failure = self._failure
        if failure is None:
            return
        kind = failure.kind if isinstance(failure, StoreError) else "other"
        if self._retrying:
            raise StoreError(
                f"{self.name}: cannot write ({failure}); {self._put - self._written} "
                "appended event(s) wait and are retried", kind=kind,
            ) from failure
        raise StoreError(
            f"{self.name}: the background writer failed ({failure}); "
            f"{self._lost} appended event(s) {self._lost_note}", kind=kind,
        ) from failure

    def _take(self) -> list[T] | None:
        """Wait for the next batch (None: closing and drained)."""
        with self._lock:
            while not self._buffer:
                if self._closing:
                    return None
                self._items.wait()
            deadline = self._oldest_at + self.flush_interval
            while (
                len(self._buffer) < self.batch_size
                and not self._closing
                and self._flush_upto <= self._written
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._items.wait(remaining)
            batch = self._buffer[: self.batch_size]
            del self._buffer[: self.batch_size]
            if len(self._buffer) <= self.max_pending // 2:
                # Hysteresis: blocked appenders wake once there is room for many
                # items, not after every batch (fewer thread switches when saturated).
                self._room.notify_all()
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            while True:
                try:
                    self._write(batch)
                except BaseException as exc:
                    if not self._failed(batch, exc):
                        return
                    continue
                break
            with self._lock:
                self._written += len(batch)
                self._failure, self._retrying, self._attempts = None, False, 0
                self._done.notify_all()

    def _failed(self, batch: list[T], exc: BaseException) -> bool:
        """Writing ``batch`` raised ``exc``: wait and return True to try it again,
        or give up (False). The writer thread."""
        with self._lock:
            self._attempts += 1
            attempt, closing = self._attempts, self._closing
        delay = None if self._retry_after is None else self._retry_after(exc, attempt)
        with self._lock:
            self._failure = exc
            if delay is None or closing:
                self._retrying = False
                self._lost = len(batch) + len(self._buffer)
                self._buffer.clear()
                self._wake_all()
                return False
            self._retrying, self._retry_now = True, False
            self._done.notify_all()  # waiters for the last attempt raise
            deadline = time.monotonic() + delay
            while not self._closing and not self._retry_now:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._items.wait(remaining)
            return True
