"""The typed handles a ``SharedStore`` hands out: one small object per name and kind.

A handle is a view of one shared name; it holds no value and no lock of its
own, only what its backend needs to reach the value fast. Its public methods
are exactly the SPEC §3 operations (the Lua binding passes them to Lua as
they are), so no other public attribute is added here besides ``name``.

Thread safety: every method may be called from any thread, any number at once;
each call is one atomic operation on the backend. Every call re-checks the
kind of the stored value, because another thread or process may have removed
the name and created it again with another kind (``SharedTypeError``).

Existence: a name exists from the first operation that writes it (``set``,
``increment``, ``decrement``, ``add``, ``subtract``, ``append``, ``toggle``,
and a table's ``set``, ``increment``, ``remove``, ``clear``), even when that
write leaves the fresh value in place (``add(0)``). Creating a handle and
reading through it never create anything. A failed operation changes nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from moonbus.shared.values import Kind

__all__ = ["SharedBool", "SharedFloat", "SharedHandle", "SharedInt", "SharedString", "SharedTable"]

# The class bodies below define methods named like builtins; these aliases keep
# annotations unambiguous for readers and type checkers.
_int = int
_float = float
_str = str
_bool = bool


class SharedHandle(ABC):
    """Common base: the shared ``name`` and the ``kind`` the handle works on.

    Backends subclass each kind together with their own slotted base, which
    holds ``name`` and whatever the backend needs.
    """

    __slots__ = ()
    name: _str
    kind: ClassVar[Kind]

    def __repr__(self) -> _str:
        return f"<shared {self.kind} {self.name!r}>"


class SharedInt(SharedHandle):
    """A signed 64-bit integer; a fresh one reads 0. Any result outside
    [-2**63, 2**63-1] raises ``SharedValueError`` and leaves the value unchanged.
    Operands must be ``int`` (a bool or float is refused)."""

    __slots__ = ()
    kind: ClassVar[Kind] = "int"

    @abstractmethod
    def get(self) -> _int: ...

    @abstractmethod
    def set(self, value: _int) -> None: ...

    @abstractmethod
    def increment(self, n: _int = 1) -> _int:
        """Add ``n`` (default 1); returns the new value."""

    @abstractmethod
    def decrement(self, n: _int = 1) -> _int:
        """Subtract ``n`` (default 1); returns the new value."""

    @abstractmethod
    def add(self, n: _int) -> _int:
        """Add ``n``; returns the new value."""

    @abstractmethod
    def subtract(self, n: _int) -> _int:
        """Subtract ``n``; returns the new value."""


class SharedFloat(SharedHandle):
    """An IEEE double; a fresh one reads 0.0. Non-finite values are refused."""

    __slots__ = ()
    kind: ClassVar[Kind] = "float"

    @abstractmethod
    def get(self) -> _float: ...

    @abstractmethod
    def set(self, value: _float) -> None: ...

    @abstractmethod
    def add(self, x: _float) -> _float:
        """Add ``x``; returns the new value (an infinite result is refused)."""


class SharedString(SharedHandle):
    """UTF-8 text; a fresh one reads "". Bounded by the store's ``max_string_bytes``."""

    __slots__ = ()
    kind: ClassVar[Kind] = "string"

    @abstractmethod
    def get(self) -> _str: ...

    @abstractmethod
    def set(self, value: _str) -> None: ...

    @abstractmethod
    def append(self, text: _str) -> _str:
        """Append ``text``; returns the new value."""


class SharedBool(SharedHandle):
    """A flag; a fresh one reads False."""

    __slots__ = ()
    kind: ClassVar[Kind] = "bool"

    @abstractmethod
    def get(self) -> _bool: ...

    @abstractmethod
    def set(self, value: _bool) -> None: ...

    @abstractmethod
    def toggle(self) -> _bool:
        """Flip the flag; returns the new value."""


class SharedTable(SharedHandle):
    """A table of string keys to int, float, str, bool or nested tables.

    Values are copied on ``set`` and on ``get``: changing what you passed in or
    got back never changes the shared value. ``set(key, None)`` removes the key
    (Lua's ``t[k] = nil``). Keys may be ints; they are stored as strings.
    """

    __slots__ = ()
    kind: ClassVar[Kind] = "table"

    @abstractmethod
    def get(self, key: _str | _int) -> Any:
        """The value at ``key`` (a copy), or None when absent."""

    @abstractmethod
    def set(self, key: _str | _int, value: Any) -> None: ...

    @abstractmethod
    def contains(self, key: _str | _int) -> _bool: ...

    @abstractmethod
    def remove(self, key: _str | _int) -> _bool:
        """Remove ``key``; True when it was present."""

    @abstractmethod
    def clear(self) -> None:
        """Remove every key (the table itself stays, empty)."""

    @abstractmethod
    def keys(self) -> list[_str]:
        """The keys, sorted."""

    @abstractmethod
    def to_table(self) -> dict[_str, Any]:
        """An independent snapshot of the whole table, taken atomically."""

    @abstractmethod
    def increment(self, key: _str | _int, n: _int = 1) -> _int:
        """Add ``n`` to the int at ``key`` (absent counts as 0); returns the new
        value. Same 64-bit rules as ``SharedInt``; a non-int value at ``key``
        raises ``SharedTypeError``."""
