"""The narrow interface every shared-store backend implements.

``SharedStore`` (the public object) is a namespace view over one backend; the
backend holds the values of every namespace. Namespaces and names are
validated by the store before they reach a backend.

Thread safety: every method may be called from any thread at once. ``close``
may be called once by the owner (calling it again does nothing); afterwards
every method and every handle raises ``ClosedError``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from moonbus.shared.handles import SharedBool, SharedFloat, SharedInt, SharedString, SharedTable
from moonbus.shared.values import SharedLimits

__all__ = ["SharedBackend"]


class SharedBackend(ABC):
    """Values of every namespace, typed and atomic."""

    limits: SharedLimits
    url: str

    # Handles. Each checks the kind at once: an existing name of another kind
    # raises SharedTypeError (and nothing is created).
    @abstractmethod
    def int_handle(self, namespace: str, name: str) -> SharedInt: ...

    @abstractmethod
    def float_handle(self, namespace: str, name: str) -> SharedFloat: ...

    @abstractmethod
    def string_handle(self, namespace: str, name: str) -> SharedString: ...

    @abstractmethod
    def bool_handle(self, namespace: str, name: str) -> SharedBool: ...

    @abstractmethod
    def table_handle(self, namespace: str, name: str) -> SharedTable: ...

    @abstractmethod
    def contains(self, namespace: str, name: str) -> bool: ...

    @abstractmethod
    def remove(self, namespace: str, name: str) -> bool:
        """Delete one name; True when it existed."""

    @abstractmethod
    def clear(self, namespace: str) -> None:
        """Delete every name of one namespace, atomically."""

    @abstractmethod
    def names(self, namespace: str) -> list[str]:
        """The existing names of one namespace, sorted."""

    @abstractmethod
    def dump(self, namespace: str) -> dict[str, Any]:
        """Every value of one namespace as plain Python data, sorted by name,
        taken atomically (a consistent snapshot)."""

    @abstractmethod
    def close(self) -> None: ...
