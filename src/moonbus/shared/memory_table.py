"""The memory backend's table handle.

A table is stored as a ``dict[str, canonical value]`` in its namespace dict.
Values are validated and copied (``normalize_table_value``) before the lock is
taken; reads copy after it is released, which is safe because nested tables
are never mutated once stored (see ``memory_state``).

Thread safety: any thread; one lock acquisition per operation.
"""

from __future__ import annotations

from typing import Any

from moonbus.errors import SharedTypeError
from moonbus.shared.handles import SharedTable
from moonbus.shared.memory_state import MemoryHandle
from moonbus.shared.values import (
    INT_MAX,
    INT_MIN,
    copy_value,
    int_operand_error,
    kind_of,
    normalize_table_value,
    overflow_error,
    table_key,
)

__all__ = ["MemoryTable"]

_ABSENT = object()


class MemoryTable(MemoryHandle, SharedTable):
    __slots__ = ()

    def _table(self) -> dict[str, Any] | None:
        """The stored dict (None when the name does not exist). Call under the lock."""
        current = self._values.get(self.name)
        if (current is None or type(current) is dict) and not self._state.closed:
            return current
        raise self._state.failure(self.name, current, "table")

    def _table_for_write(self) -> dict[str, Any]:
        """The stored dict, created when absent. Call under the lock."""
        table = self._table()
        if table is None:
            table = self._values[self.name] = {}
        return table

    def get(self, key: str | int) -> Any:
        field = table_key(self.name, key, self._state.limits)
        with self._lock:
            table = self._table()
            value = None if table is None else table.get(field)
        return copy_value(value)

    def set(self, key: str | int, value: Any) -> None:
        field = table_key(self.name, key, self._state.limits)
        if value is None:
            self.remove(field)
            return
        stored = normalize_table_value(self.name, field, value, self._state.limits)
        with self._lock:
            self._table_for_write()[field] = stored

    def contains(self, key: str | int) -> bool:
        field = table_key(self.name, key, self._state.limits)
        with self._lock:
            table = self._table()
            return table is not None and field in table

    def remove(self, key: str | int) -> bool:
        field = table_key(self.name, key, self._state.limits)
        with self._lock:
            return self._table_for_write().pop(field, _ABSENT) is not _ABSENT

    def clear(self) -> None:
        with self._lock:
            self._table_for_write().clear()

    def keys(self) -> list[str]:
        with self._lock:
            table = self._table()
            keys = [] if table is None else list(table)
        keys.sort()
        return keys

    def to_table(self) -> dict[str, Any]:
        with self._lock:
            table = self._table()
            snapshot = {} if table is None else dict(table)
        return {k: copy_value(v) for k, v in snapshot.items()}

    def increment(self, key: str | int, n: int = 1) -> int:
        field = table_key(self.name, key, self._state.limits)
        if type(n) is not int:
            raise int_operand_error(f"{self.name}[{field!r}]", "increment", n)
        with self._lock:
            table = self._table()
            current = 0 if table is None else table.get(field, 0)
            if type(current) is not int:
                raise SharedTypeError(f"{self.name}[{field!r}]", kind_of(current), "int")
            result = current + n
            if not INT_MIN <= result <= INT_MAX:
                raise overflow_error(f"{self.name}[{field!r}]", "increment", current, n)
            if table is None:
                table = self._values[self.name] = {}
            table[field] = result
            return result
