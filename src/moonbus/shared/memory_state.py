"""State shared by every handle of one memory backend, and the handle base.

Thread safety: ``MemoryState.lock`` guards ``spaces`` (every namespace dict and
every value in them) and ``closed``. Handles take it for exactly one operation.

Invariant that lets copies run outside the lock: a nested table (a dict inside
a table value) is never mutated after it is stored; table operations only
replace top-level entries of a table's dict, under the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar, NoReturn

from moonbus.errors import ClosedError, SharedTypeError
from moonbus.native import load_fast_path
from moonbus.shared.values import Kind, SharedLimits, kind_of

__all__ = ["FRESH_TYPES", "MemoryHandle", "MemoryState", "raise_closed"]

# The Python type a value of each kind is stored as (exactly: type(v) is T).
FRESH_TYPES: dict[Kind, type] = {"int": int, "float": float, "string": str, "bool": bool,
                                 "table": dict}


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
    kind: ClassVar[Kind]

    def __init__(self, name: str, state: MemoryState, values: dict[str, Any]) -> None:
        self.name = name
        self._state = state
        self._values = values
        self._lock = state.lock

    def native_check(self, fallback: Callable[[], object]) -> Any:
        """A C callable checking that this key is absent or still holds this
        handle's kind, calling ``fallback`` (which raises the store's error)
        when not (``moonbus.shared._fastint.KindCheck``); None when the C
        path is not built or switched off. What ``shared:int(name)`` runs on
        every call in Lua once the handle is cached."""
        fast = load_fast_path("moonbus.shared._fastint")
        if fast.module is None:
            return None
        return fast.module.KindCheck(values=self._values, name=self.name, state=self._state,
                                     kind=FRESH_TYPES[self.kind], fallback=fallback)
