"""Values of a recording as JSON, with host objects as references.

A recording keeps event payloads, API arguments and answers, shared values
and stats. They are plain data except for host objects (``@lua_api``
instances: a player, an item in an event...), which are written as
``{"$obj": id}``: the id of the object in the recording's ``objects`` table
(its class and methods), so a replay can hand the script an object that
answers the same calls. Mappings whose keys are not all plain strings
(integer keys, or a key starting with ``$``) are written as
``{"$dict": [[key, value], ...]}`` so that ``{1: "a"}`` does not come back as
``{"1": "a"}``. Tuples become lists (Lua sees both as sequences).

Pure functions; the caller says how to name (``ref``) and rebuild (``obj``)
objects.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from moonbus.bus import Event
from moonbus.bus.event import to_jsonable

__all__ = ["decode", "dumps", "encode", "same"]

_SCALARS = (str, int, float, bool, type(None))


def encode(value: Any, ref: Callable[[Any], int | None]) -> Any:
    """``value`` as JSON-ready data; ``ref(obj)`` names a host object (None: not one)."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: encode(v, ref) for k, v in value.items()}
        return {"$dict": [[encode(k, ref), encode(v, ref)] for k, v in value.items()]}
    if isinstance(value, Event):
        return to_jsonable(value)
    if isinstance(value, (list, tuple)):
        return [encode(v, ref) for v in value]
    found = ref(value)
    if found is not None:
        return {"$obj": found}
    return to_jsonable(value)


def decode(value: Any, obj: Callable[[int], Any]) -> Any:
    """The inverse of ``encode``: ``obj(id)`` gives the object a reference stands for."""
    if isinstance(value, list):
        return [decode(v, obj) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            if "$obj" in value:
                return obj(int(value["$obj"]))
            if "$dict" in value:
                return {_key(decode(k, obj)): decode(v, obj) for k, v in value["$dict"]}
        return {k: decode(v, obj) for k, v in value.items()}
    return value


def _key(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


# One encoder, reused (json.dumps with options builds a new one per call); it
# holds no state between calls.
_COMPACT: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(value: Any) -> str:
    """Compact JSON text of encoded data (NaN and infinities kept, as Python's json does)."""
    return _COMPACT.encode(value)


def same(a: Any, b: Any) -> bool:
    """Whether two encoded values are equal as JSON texts would be: ``1`` is not
    ``1.0`` nor ``true`` (Lua tells integers, floats and booleans apart), key
    order does not matter, NaN equals NaN."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is dict:
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if kind is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if kind is float and a != a:
        return bool(b != b)
    return bool(a == b)
