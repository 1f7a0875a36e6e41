"""State shared by every handle of one memory backend, and the handle base.

Thread safety: ``MemoryState.lock`` guards ``spaces`` (every namespace dict and
every value in them) and ``closed``. Handles take it for exactly one operation.

Invariant that lets copies run outside the lock: a nested table (a dict inside
a table value) is never mutated after it is stored; table operations only
replace top-level entries of a table's dict, under the lock.
"""

from __future__ import annotations

import threading
from typing import Any, NoReturn

from moonbus.errors import ClosedError, SharedTypeError
from moonbus.shared.values import Kind, SharedLimits, kind_of

__all__ = ["MemoryHandle", "MemoryState", "raise_closed"]


class MemoryState:
    """What every handle of one memory backend shares: the lock, the
    namespace dicts, the limits and the closed flag (set once, under the lock)."""

    __slots__ = ("closed", "limits", "lock", "spaces")

    def __init__(self, limits: SharedLimits) -> None:
        self.lock = threading.Lock()
        self.spaces: dict[str, dict[str, Any]] = {}
        self.limits = limits
        self.closed = False

    def space(self, namespace: str) -> dict[str, Any]:
        """The dict of one namespace, created on first use (never replaced)."""
        with self.lock:
            if self.closed:
                raise ClosedError("the shared store is closed")
            return self.spaces.setdefault(namespace, {})

    def failure(self, name: str, current: object, requested: Kind) -> Exception:
        """The error for an operation that found ``current`` where ``requested`` was expected."""
        if self.closed:
            return ClosedError("the shared store is closed")
        return SharedTypeError(name, kind_of(current), requested)


def raise_closed() -> NoReturn:
    """Raise the error every operation on a closed store raises."""
    raise ClosedError("the shared store is closed")


class MemoryHandle:
    """Base of every memory handle: what its hot path needs, in slots."""

    __slots__ = ("_lock", "_state", "_values", "name")

    def __init__(self, name: str, state: MemoryState, values: dict[str, Any]) -> None:
        self.name = name
        self._state = state
        self._values = values
        self._lock = state.lock
