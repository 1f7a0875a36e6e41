"""Freezing what ``Bus.emit`` was given, refusing what is not event data.

``freeze_data`` (``moonbus.bus.event``) keeps any leaf it does not know as a
value object, because stores read back and rebuild events with it. ``emit``
is where a host hands in new data, so it also checks each such leaf: a
scalar, a mapping, a sequence, an ``@lua_api`` value object, a dataclass or
an object with ``__moonbus_json__`` (SPEC §2). Anything else (a socket, a
set, a plain object) would fail in every Lua handler and in the event store
later, with no field name; here it fails at once, naming the field
(``data.monster.pos``), with nothing committed.

The C emit path (``_fastemit.c``) freezes the common payload itself (str
keys, scalar values) and hands every other payload to the Python path, so
this check sees every payload that can hold such a leaf. The path is only
computed after a leaf was refused: the happy path pays one type test per
unusual leaf.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import is_dataclass
from types import MappingProxyType
from typing import Any

from moonbus.bus.event import SCALAR_TYPES, Event, freeze_data
from moonbus.errors import EventDataError

__all__ = ["ValueObjectTest", "freeze_emitted", "is_value_object"]

# Whether a leaf that is not a scalar, mapping or sequence may be event data.
ValueObjectTest = Callable[[Any], bool]


def is_value_object(value: Any) -> bool:
    """The bus's own rule for other leaves (SPEC §2): a dataclass instance or
    an object with ``__moonbus_json__`` (both encode to JSON). A runtime
    passes a wider test (``Bus(value_objects=...)``): the Lua layer's, which
    also accepts ``@lua_api`` objects, since handlers can call them."""
    if hasattr(value, "__moonbus_json__"):
        return True
    return is_dataclass(value) and not isinstance(value, type)


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if isinstance(key, str) and key.isidentifier() else f"{path}[{key!r}]"

_SCALARS = (str, int, float, bool, type(None))


class _Refused(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


def freeze_emitted(
    data: Mapping[str, Any], value_objects: ValueObjectTest = is_value_object
) -> Mapping[str, Any]:
    """``freeze_data(data)``, refusing a leaf that is not event data (nor a
    value object by ``value_objects``) with an ``EventDataError`` naming its
    path (see the module docstring)."""
    if type(data) is dict and all(type(k) is str and type(v) in SCALAR_TYPES
                                  for k, v in data.items()):
        return freeze_data(data)
    try:
        frozen: Mapping[str, Any] = _freeze(data, 0, value_objects)
    except _Refused as refused:
        path = _path_of(data, refused.value, "data") or "data"
        raise EventDataError(
            f"{path}: a Python {type(refused.value).__name__} is not event data (use "
            f"plain data, an @lua_api value object or a dataclass)"
        ) from None
    return frozen


def _freeze(value: Any, depth: int, value_objects: ValueObjectTest) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if depth > 64:
        raise ValueError("event data is nested more than 64 levels deep (or is cyclic)")
    if isinstance(value, Mapping):
        return MappingProxyType(
            {str(k): _freeze(v, depth + 1, value_objects) for k, v in value.items()})
    if isinstance(value, Event):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, depth + 1, value_objects) for v in value)
    if value_objects(value):
        return value  # value objects are immutable by contract
    raise _Refused(value)


def _path_of(value: Any, target: Any, path: str, depth: int = 0) -> str | None:
    if value is target:
        return path
    if depth > 64 or isinstance(value, (str, int, float, bool, type(None), Event)):
        return None
    if isinstance(value, Mapping):
        items: Any = ((_join(path, k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub, item in items:
        found = _path_of(item, target, sub, depth + 1)
        if found is not None:
            return found
    return None
