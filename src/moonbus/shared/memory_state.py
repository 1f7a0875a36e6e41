"""State shared by every handle of one memory backend, and the handle base.

Thread safety: ``MemoryState.lock`` guards ``spaces`` (every namespace dict and
every value in them) and ``closed``. Handles take it for exactly one operation.

Invariant that lets copies run outside the lock: a nested table (a dict inside
a table value) is never mutated after it is stored; table operations only
replace top-level entries of a table's dict, under the lock.

Int cells (issue 16): when the C fast path ``moonbus.shared._fastint`` is on
as the state is made, a top-level int is stored as an ``IntCell`` (an atomic
int64 with an ``alive`` flag) and ``gate`` is the store's ``StoreGate`` (its
closed flag, readable from C without the GIL), so a Lua script's
``counter:increment()`` runs on the cell without the GIL and without the
lock (``_fastint.c`` says how, and who may touch what). ``cell`` is the cell
type then, and a private class no value has otherwise (pure Python: plain
ints, ``gate`` None), so a handle's ``type(v) is state.cell`` test costs the
same either way. A cell is made by the first write of an absent key (under
the lock) and killed, under the lock, before its key leaves the dict
(``drop``, ``drop_all``); a kind's value is never written over a cell.
Everything that shows a value shows a cell as its int (``plain``).
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


class _NoCell:
    """The ``cell`` type of a store of plain ints: no value is ever one."""

    __slots__ = ()


class MemoryState:
    """What every handle of one memory backend shares: the lock, the
    namespace dicts, the limits, the closed flag (set once, under the lock)
    and the int cells' type and gate (see the module docstring). ``fast`` is
    the C module the cells come from (None: plain ints), looked up once here
    rather than per handle: a first ``shared:int(name)`` in each of 10,000
    scripts makes 10,000 handles in one tick."""

    __slots__ = ("cell", "closed", "fast", "gate", "limits", "lock", "spaces")

    def __init__(self, limits: SharedLimits, *, native: bool = True) -> None:
        self.lock = threading.Lock()
        self.spaces: dict[str, dict[str, Any]] = {}
        self.limits = limits
        self.closed = False
        # native=False: Runtime(native=False)'s store keeps plain ints
        fast = load_fast_path("moonbus.shared._fastint", native=native).module
        self.fast: Any = fast
        self.gate: Any = None if fast is None else fast.StoreGate()
        self.cell: type[Any] = _NoCell if fast is None else fast.IntCell

    def new_int(self, value: int) -> Any:
        """What a new top-level int is stored as: a cell, or the int itself."""
        return value if self.gate is None else self.cell(value, self.gate)

    def plain(self, value: object) -> object:
        """The canonical value of a stored one: a cell's int, else the value."""
        return value.value if type(value) is self.cell else value  # type: ignore[attr-defined]

    def drop(self, values: dict[str, Any], name: str) -> bool:
        """Remove one key (under the lock): its cell dies first, so the Lua
        side stops using it before the name can hold anything else."""
        current = values.get(name)
        if current is None:
            return False
        if type(current) is self.cell:
            current.kill()
        del values[name]
        return True

    def drop_all(self, values: dict[str, Any]) -> None:
        """Empty one namespace (under the lock), killing its cells first."""
        for current in values.values():
            if type(current) is self.cell:
                current.kill()
        values.clear()

    def close(self) -> None:
        """Close the store (takes the lock): every later operation raises
        ClosedError, the C side's included (the gate), and every cell dies."""
        with self.lock:
            self.closed = True
            if self.gate is not None:
                self.gate.close()
            for values in self.spaces.values():
                for current in values.values():
                    if type(current) is self.cell:
                        current.kill()

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
        return SharedTypeError(name, kind_of(self.plain(current)), requested)


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
        path is not built or was switched off when the store was made.
        What ``shared:int(name)`` runs on every call in Lua once the handle
        is cached."""
        fast = self._state.fast
        if fast is None:  # off for this store (an engine with the C path off never asks)
            return None
        return fast.KindCheck(values=self._values, name=self.name, state=self._state,
                                     kind=FRESH_TYPES[self.kind], fallback=fallback)
