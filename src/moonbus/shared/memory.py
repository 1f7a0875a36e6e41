"""In-process shared store: one lock per store, one dict per namespace.

Values are stored as their canonical Python objects (see ``values.py``), so a
value's kind is its Python type: ``type(v) is dict`` means a table, ``float``
a float, and so on, with one exception: a top-level int is an ``IntCell``
(``moonbus.shared._fastint``) when the C fast path is on, so that a Lua
script's ``counter:increment()`` runs without the GIL (issue 16; see
``memory_state`` and ``_fastint.c``), and a plain ``int`` otherwise. The
kind check stays one identity comparison (``type(v) is state.cell``), and
an increment one dict read and one C ``add`` under the lock
(``bench/shared.py`` measures it against a plain locked dict). Everything
that shows values (``dump``, the kinds named in errors) shows a cell as its
int.

Thread safety: one ``threading.Lock`` per backend guards every namespace dict;
every handle method takes it for exactly one operation, so each operation is
atomic and operations on one store are linearizable. Validation and copying of
table values run before the lock is taken. Any thread may call anything. A
cell's value also changes without the lock, by C compare-and-swap from Lua
(never outside 64 bits, never on a removed key or a closed store); the
Python methods read and change it atomically too (``add``,
``compare_and_set``), so no increment is lost.
"""

from __future__ import annotations

import math
from typing import Any

from moonbus.errors import SharedTypeError
from moonbus.shared.backend import SharedBackend
from moonbus.shared.handles import SharedBool, SharedFloat, SharedInt, SharedString
from moonbus.shared.memory_state import FRESH_TYPES, MemoryHandle, MemoryState, raise_closed
from moonbus.shared.memory_table import MemoryTable
from moonbus.shared.values import (
    INT_MAX,
    INT_MIN,
    SharedLimits,
    check_bool,
    check_float,
    check_int,
    check_string,
    copy_value,
    float_overflow_error,
    int_operand_error,
    kind_of,
    overflow_error,
    utf8_size,
)

__all__ = ["MemoryBackend"]


# name -> (sign, whether no argument means 1)
_INT_OPS = {"increment": (1, True), "decrement": (-1, True), "add": (1, False),
            "subtract": (-1, False)}


class MemoryInt(MemoryHandle, SharedInt):
    __slots__ = ()

    def native_ops(self) -> dict[str, Any]:
        """C versions of increment/decrement/add/subtract for this key, to hand
        to Lua (``moonbus.shared._fastint``); empty when not built or switched
        off (``moonbus.native``) when the store was made. Each falls
        back to the method here for anything but the plain case, so errors
        are the same."""
        fast = self._state.fast
        if fast is None:  # off for this store (an engine with the C path off never asks)
            return {}
        return {
            op: fast.IntOp(values=self._values, name=self.name, state=self._state,
                      fallback=getattr(self, op), sign=sign, default_one=default_one)
            for op, (sign, default_one) in _INT_OPS.items()
        }

    def get(self) -> int:
        with self._lock:
            value: Any = self._values.get(self.name, 0)
            state = self._state
            if not state.closed:
                if type(value) is state.cell:
                    return value.value  # type: ignore[no-any-return]
                if type(value) is int:
                    return value
            raise state.failure(self.name, value, "int")

    def set(self, value: int) -> None:
        check_int(self.name, "set", value)
        with self._lock:
            current: Any = self._values.get(self.name)
            state = self._state
            if not state.closed:
                if type(current) is state.cell:
                    current.set(value)
                    return
                if current is None or type(current) is int:
                    self._values[self.name] = state.new_int(value)
                    return
            raise state.failure(self.name, current, "int")

    def increment(self, n: int = 1) -> int:
        # The hot path for Python callers, and for Lua when the C operations
        # (``native_ops``) are not built: the body of ``_apply`` inlined, to
        # save a Python call per operation.
        if type(n) is not int:
            raise int_operand_error(self.name, "increment", n)
        lock = self._lock
        lock.acquire()
        try:
            current: Any = self._values.get(self.name)
            state = self._state
            if type(current) is state.cell and not state.closed:
                result = current.add(n)
                if result is not None:
                    return result  # type: ignore[no-any-return]
                return self._cell_slow(current, "increment", n, n)
            return self._plain("increment", n, n, current)
        finally:
            lock.release()

    def decrement(self, n: int = 1) -> int:
        if type(n) is not int:
            raise int_operand_error(self.name, "decrement", n)
        return self._apply("decrement", n, -n)

    def add(self, n: int) -> int:
        if type(n) is not int:
            raise int_operand_error(self.name, "add", n)
        return self._apply("add", n, n)

    def subtract(self, n: int) -> int:
        if type(n) is not int:
            raise int_operand_error(self.name, "subtract", n)
        return self._apply("subtract", n, -n)

    def _apply(self, op: str, n: int, delta: int) -> int:
        # One lock, one dict read and a cell add (or a dict write); errors
        # are built on the slow path.
        lock = self._lock
        lock.acquire()
        try:
            current: Any = self._values.get(self.name)
            state = self._state
            if type(current) is state.cell and not state.closed:
                result = current.add(delta)
                if result is not None:
                    return result  # type: ignore[no-any-return]
                return self._cell_slow(current, op, n, delta)
            return self._plain(op, n, delta, current)
        finally:
            lock.release()

    def _cell_slow(self, cell: Any, op: str, n: int, delta: int) -> int:
        """Under the lock, a live cell whose ``add`` declined: ``delta`` is
        past 64 bits or the result would be. Python's big ints decide (as for
        a plain int), and the write is a compare-and-swap, since Lua may add
        to the cell without the lock meanwhile."""
        while True:
            current = cell.value
            result = current + delta
            if not INT_MIN <= result <= INT_MAX:
                raise overflow_error(self.name, op, current, n)
            if cell.compare_and_set(current, result):
                return result  # type: ignore[no-any-return]

    def _plain(self, op: str, n: int, delta: int, current: object) -> int:
        """Under the lock, a key that holds no cell: absent (0), a plain int
        (a store of plain ints), another kind, or a closed store."""
        state = self._state
        if (current is None or type(current) is int) and not state.closed:
            value = current if type(current) is int else 0
            result = value + delta
            if INT_MIN <= result <= INT_MAX:
                self._values[self.name] = state.new_int(result)
                return result
            raise overflow_error(self.name, op, value, n)
        raise state.failure(self.name, current, "int")


class MemoryFloat(MemoryHandle, SharedFloat):
    __slots__ = ()

    def get(self) -> float:
        with self._lock:
            value = self._values.get(self.name, 0.0)
            if type(value) is float and not self._state.closed:
                return value
            raise self._state.failure(self.name, value, "float")

    def set(self, value: float) -> None:
        number = check_float(self.name, "set", value)
        with self._lock:
            current = self._values.get(self.name, 0.0)
            if type(current) is float and not self._state.closed:
                self._values[self.name] = number
                return
            raise self._state.failure(self.name, current, "float")

    def add(self, x: float) -> float:
        number = check_float(self.name, "add", x)
        with self._lock:
            current = self._values.get(self.name, 0.0)
            if type(current) is float and not self._state.closed:
                result = current + number
                if not math.isfinite(result):
                    raise float_overflow_error(self.name, current, number)
                self._values[self.name] = result
                return result
            raise self._state.failure(self.name, current, "float")


class MemoryString(MemoryHandle, SharedString):
    __slots__ = ()

    def get(self) -> str:
        with self._lock:
            value = self._values.get(self.name, "")
            if type(value) is str and not self._state.closed:
                return value
            raise self._state.failure(self.name, value, "string")

    def set(self, value: str) -> None:
        text = check_string(self.name, "set", value, self._state.limits.max_string_bytes)
        with self._lock:
            current = self._values.get(self.name, "")
            if type(current) is str and not self._state.closed:
                self._values[self.name] = text
                return
            raise self._state.failure(self.name, current, "string")

    def append(self, text: str) -> str:
        limit = self._state.limits.max_string_bytes
        piece = check_string(self.name, "append", text, limit)
        with self._lock:
            current = self._values.get(self.name, "")
            if type(current) is str and not self._state.closed:
                result = current + piece
                if 4 * len(result) > limit and utf8_size(result) > limit:
                    check_string(self.name, "append", result, limit)
                self._values[self.name] = result
                return result
            raise self._state.failure(self.name, current, "string")


class MemoryBool(MemoryHandle, SharedBool):
    __slots__ = ()

    def get(self) -> bool:
        with self._lock:
            value = self._values.get(self.name, False)
            if type(value) is bool and not self._state.closed:
                return value
            raise self._state.failure(self.name, value, "bool")

    def set(self, value: bool) -> None:
        flag = check_bool(self.name, "set", value)
        with self._lock:
            current = self._values.get(self.name, False)
            if type(current) is bool and not self._state.closed:
                self._values[self.name] = flag
                return
            raise self._state.failure(self.name, current, "bool")

    def toggle(self) -> bool:
        with self._lock:
            current = self._values.get(self.name, False)
            if type(current) is bool and not self._state.closed:
                result = not current
                self._values[self.name] = result
                return result
            raise self._state.failure(self.name, current, "bool")


_FRESH = FRESH_TYPES


class MemoryBackend(SharedBackend):
    """The in-process backend (``memory://``). Values live as long as the object."""

    def __init__(self, limits: SharedLimits | None = None, *, native: bool = True) -> None:
        self.limits = limits or SharedLimits()
        self.url = "memory://"
        self._state = MemoryState(self.limits, native=native)

    def _handle(self, cls: type[Any], namespace: str, name: str) -> Any:
        state = self._state
        values = state.space(namespace)
        with state.lock:
            if state.closed:
                raise_closed()
            current = values.get(name)
            if current is not None and type(current) is not _FRESH[cls.kind]:
                found = kind_of(state.plain(current))  # a cell is an int
                if found != cls.kind:
                    raise SharedTypeError(name, found, cls.kind)
        return cls(name, state, values)

    def int_handle(self, namespace: str, name: str) -> MemoryInt:
        return self._handle(MemoryInt, namespace, name)  # type: ignore[no-any-return]

    def float_handle(self, namespace: str, name: str) -> MemoryFloat:
        return self._handle(MemoryFloat, namespace, name)  # type: ignore[no-any-return]

    def string_handle(self, namespace: str, name: str) -> MemoryString:
        return self._handle(MemoryString, namespace, name)  # type: ignore[no-any-return]

    def bool_handle(self, namespace: str, name: str) -> MemoryBool:
        return self._handle(MemoryBool, namespace, name)  # type: ignore[no-any-return]

    def table_handle(self, namespace: str, name: str) -> MemoryTable:
        return self._handle(MemoryTable, namespace, name)  # type: ignore[no-any-return]

    def contains(self, namespace: str, name: str) -> bool:
        values = self._state.space(namespace)
        with self._state.lock:
            if self._state.closed:
                raise_closed()
            return name in values

    def remove(self, namespace: str, name: str) -> bool:
        values = self._state.space(namespace)
        with self._state.lock:
            if self._state.closed:
                raise_closed()
            return self._state.drop(values, name)

    def clear(self, namespace: str) -> None:
        values = self._state.space(namespace)
        with self._state.lock:
            if self._state.closed:
                raise_closed()
            self._state.drop_all(values)

    def names(self, namespace: str) -> list[str]:
        values = self._state.space(namespace)
        with self._state.lock:
            if self._state.closed:
                raise_closed()
            return sorted(values)

    def dump(self, namespace: str) -> dict[str, Any]:
        values = self._state.space(namespace)
        with self._state.lock:
            if self._state.closed:
                raise_closed()
            plain = self._state.plain
            return {k: copy_value(plain(values[k])) for k in sorted(values)}

    def close(self) -> None:
        self._state.close()
