"""Which field of a value could not cross into Lua (SPEC §10).

``LuaConverter.to_lua`` says *what* could not cross ("a Python Rect cannot be
passed to Lua"); in a nested event payload or a host API's return value the
host developer also needs *where*. Walking the value again to find it costs
nothing on the happy path: ``find_unconvertible`` runs only after a
conversion failed, with the same rules as the converter, and returns the
path of the first offending field (``data.monster.pos``, ``args[1]``,
``.items[3].owner``).

Pure functions; no state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moonbus.lua.exposure import exposed_methods

__all__ = ["LUA_INT_MAX", "LUA_INT_MIN", "describe_conversion_error", "find_unconvertible",
           "is_event_data_value", "join_path", "payload_error"]

LUA_INT_MAX = 2**63 - 1
LUA_INT_MIN = -(2**63)
_MAX_DEPTH = 64
_ADVICE = "decorate its class with @lua_api, or pass plain data (dict, list, str, number)"


def join_path(path: str, key: object) -> str:
    """``path.key`` for a name-like string key, else ``path[key]``."""
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


def _reason(value: Any) -> str | None:
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return None
    if isinstance(value, int):
        if LUA_INT_MIN <= value <= LUA_INT_MAX:
            return None
        return f"the integer {value} does not fit in a Lua integer (64 bits)"
    if isinstance(value, (Mapping, list, tuple)):
        return None
    if exposed_methods(type(value)):
        return None
    return f"a Python {type(value).__name__} cannot be passed to Lua ({_ADVICE})"


def find_unconvertible(value: Any, path: str, _depth: int = 0) -> tuple[str, str] | None:
    """(path, reason) of the first part of ``value`` Lua cannot take, or None."""
    reason = _reason(value)
    if reason is not None:
        return path, reason
    if _depth > _MAX_DEPTH and isinstance(value, (Mapping, list, tuple)):
        return path, f"nested deeper than {_MAX_DEPTH} levels (or cyclic)"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)):
                return path, f"a table key of type {type(key).__name__} cannot go to Lua"
            found = find_unconvertible(item, join_path(path, key), _depth + 1)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = find_unconvertible(item, f"{path}[{i}]", _depth + 1)
            if found is not None:
                return found
    return None


def describe_conversion_error(value: Any, path: str, exc: BaseException) -> str:
    """``path.to.field: reason`` for a failed conversion of ``value`` (named
    ``path``); the converter's own message when the walk finds nothing."""
    found = find_unconvertible(value, path)
    if found is None:
        return f"{path}: {exc}"
    return f"{found[0]}: {found[1]}"


def is_event_data_value(value: Any) -> bool:
    """Whether ``value`` may be a leaf of event data at all (SPEC §2): a
    scalar, an ``@lua_api`` value object, a dataclass or an object with
    ``__moonbus_json__`` (those encode to JSON; Lua needs ``@lua_api``)."""
    if value is None or isinstance(value, (bool, int, float, str, Mapping, list, tuple)):
        return True
    if exposed_methods(type(value)) or hasattr(value, "__moonbus_json__"):
        return True
    from dataclasses import is_dataclass

    return is_dataclass(value) and not isinstance(value, type)


def payload_error(event_type: str, seq: int, data: Any, tick: Any, exc: BaseException) -> str:
    """The message for an event whose data (or tick) could not go to a Lua
    handler: ``event 'hit': data.monster.pos: a Python Rect cannot ...``. No
    ``seq``: the same bad field in every event is one error, logged once."""
    head = f"event {event_type!r}"
    if isinstance(tick, int) and not LUA_INT_MIN <= tick <= LUA_INT_MAX:
        return f"{head}: tick: the integer {tick} does not fit in a Lua integer (64 bits)"
    return f"{head}: {describe_conversion_error(data, 'data', exc)}"
