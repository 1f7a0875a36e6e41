"""Shared store: typed values with atomic operations, visible to every engine,
thread and (with Redis) process. See ``store.SharedStore``."""

from moonbus.shared.handles import (
    SharedBool,
    SharedFloat,
    SharedHandle,
    SharedInt,
    SharedString,
    SharedTable,
)
from moonbus.shared.store import DEFAULT_NAMESPACE, SharedStore
from moonbus.shared.values import INT_MAX, INT_MIN, KINDS, Kind, SharedLimits

__all__ = [
    "DEFAULT_NAMESPACE",
    "INT_MAX",
    "INT_MIN",
    "KINDS",
    "Kind",
    "SharedBool",
    "SharedFloat",
    "SharedHandle",
    "SharedInt",
    "SharedLimits",
    "SharedStore",
    "SharedString",
    "SharedTable",
]
