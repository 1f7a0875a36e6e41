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

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from moonbus.bus.event import SCALAR_TYPES, Event, freeze_data
from moonbus.errors import EventDataError
from moonbus.lua.value_path import is_event_data_value, join_path

__all__ = ["freeze_emitted"]

_SCALARS = (str, int, float, bool, type(None))


class _Refused(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


def freeze_emitted(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """``freeze_data(data)``, refusing a leaf that is not event data with an
    ``EventDataError`` naming its path (see the module docstring)."""
    if type(data) is dict and all(type(k) is str and type(v) in SCALAR_TYPES
                                  for k, v in data.items()):
        return freeze_data(data)
    try:
        frozen: Mapping[str, Any] = _freeze(data, 0)
    except _Refused as refused:
        path = _path_of(data, refused.value, "data") or "data"
        raise EventDataError(
            f"{path}: a Python {type(refused.value).__name__} is not event data (use "
            f"plain data, an @lua_api value object or a dataclass)"
        ) from None
    return frozen


def _freeze(value: Any, depth: int) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if depth > 64:
        raise ValueError("event data is nested more than 64 levels deep (or is cyclic)")
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v, depth + 1) for k, v in value.items()})
    if isinstance(value, Event):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, depth + 1) for v in value)
    if is_event_data_value(value):
        return value  # value objects are immutable by contract
    raise _Refused(value)


def _path_of(value: Any, target: Any, path: str, depth: int = 0) -> str | None:
    if value is target:
        return path
    if depth > 64 or isinstance(value, (str, int, float, bool, type(None), Event)):
        return None
    if isinstance(value, Mapping):
        items: Any = ((join_path(path, k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub, item in items:
        found = _path_of(item, target, sub, depth + 1)
        if found is not None:
            return found
    return None
