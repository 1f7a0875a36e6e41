"""``FutureCondition``: a re-entrant lock that is its own condition variable.

Why: every runner job has a ``concurrent.futures.Future``, whose ``__init__``
makes a ``threading.Condition`` — a Python object holding an ``RLock``, a
deque and five bound methods, about nine allocations the cyclic garbage
collector then has to track, and a Python frame on every ``with``. With
thousands of tiny jobs in flight that was a large share of a job's cost.
This class subclasses the C ``RLock`` itself, so ``with``, ``acquire``,
``release`` and the ``_release_save`` / ``_acquire_restore`` / ``_is_owned``
interface ``wait`` needs are the C lock's own; the waiter list is created
only when a thread actually waits.

Semantics are ``threading.Condition``'s over an ``RLock`` (``wait`` releases
every recursion level and restores them; ``notify`` and ``wait`` need the
lock held); ``concurrent.futures`` (``wait``, ``as_completed``,
``_AcquireFutures``) uses only ``acquire``, ``release``, ``with``, ``wait``
and ``notify_all``, all provided.

Threads: any thread, like ``threading.Condition``; the waiter list is only
touched with the lock held.
"""

from __future__ import annotations

import _thread
import contextlib
from typing import TYPE_CHECKING

__all__ = ["FutureCondition"]


class FutureCondition(_thread.RLock):  # type: ignore[misc]
    """An RLock with ``wait`` / ``notify`` / ``notify_all`` (see the module docstring)."""

    # Class-level default: an instance gets its own list on its first wait().
    _waiters: list[_thread.LockType] | None = None

    if TYPE_CHECKING:  # the C RLock's interface for Condition, missing from typeshed

        def _is_owned(self) -> bool: ...
        def _release_save(self) -> object: ...
        def _acquire_restore(self, state: object, /) -> None: ...

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait for ``notify`` or ``timeout``, re-acquire it."""
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = _thread.allocate_lock()
        waiter.acquire()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        waiters.append(waiter)
        saved = self._release_save()
        got = False
        try:
            if timeout is None:
                got = waiter.acquire()
            elif timeout > 0:
                got = waiter.acquire(True, timeout)
            else:
                got = waiter.acquire(False)
            return got
        finally:
            self._acquire_restore(saved)
            if not got:
                # ValueError: notified between the timeout and here
                with contextlib.suppress(ValueError):
                    waiters.remove(waiter)

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiting threads (the lock must be held)."""
        if not self._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = self._waiters
        while waiters and n > 0:
            waiters.pop(0).release()
            n -= 1

    def notify_all(self) -> None:
        """Wake every waiting thread (the lock must be held)."""
        if not self._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = self._waiters
        if waiters:
            self._waiters = None
            for waiter in waiters:
                waiter.release()
