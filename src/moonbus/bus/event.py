"""The committed fact: an immutable ``Event`` and its JSON form.

An event is built once, at commit, by the bus (which assigns ``seq``) or by an
event store that reads one back. ``data`` is deep-frozen at construction:
mappings become ``MappingProxyType`` over a private copy, lists and tuples
become tuples, so no subscriber can change what another one sees.

Values allowed in ``data``: ``None``, ``bool``, ``int``, ``float``, ``str``,
mappings with string keys, sequences, and *value objects* (frozen objects the
host wants Lua to call methods on, such as the demo world's inventory item).
A value object is encoded to JSON through its ``__moonbus_json__()`` method,
or as its dataclass fields. An ``Event`` inside data is a value object too.

The bus's C emit path (``_fastemit.c``) freezes the common payload (at most
32 str keys with scalar values) into ``FrozenData`` instead: a read-only
mapping with its pairs inline, which the cyclic collector never tracks (a
proxy is tracked, and queued or logged events were rescanned by every
collection). Both are read-only ``Mapping``s that compare equal to the dict
they were made from; ``FROZEN_MAPPING_TYPES`` names them for code that wants
a plain copy (``.copy()`` gives a dict for either).

Speed: the bus freezes and builds one event per emit, so the common payload (a
``dict`` with string keys and scalar values) takes a short path in
``freeze_data`` (one shallow copy), and the bus builds the named tuple with
``tuple.__new__``, skipping the argument parsing of ``Event(...)``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from moonbus.native import load_fast_path

__all__ = [
    "EMPTY_DATA", "FROZEN_MAPPING_TYPES", "SCALAR_TYPES", "Event", "freeze", "freeze_data",
    "thaw", "to_jsonable",
]

# The C emit path's frozen payload type, whenever that path can be used at all
# (not built, or a free-threaded interpreter: every event uses proxies).
_FAST_EMIT = load_fast_path("moonbus.bus._fastemit", env=False).module
if _FAST_EMIT is None:
    FROZEN_MAPPING_TYPES: frozenset[type] = frozenset({MappingProxyType})
else:
    Mapping.register(_FAST_EMIT.FrozenData)
    FROZEN_MAPPING_TYPES = frozenset({MappingProxyType, _FAST_EMIT.FrozenData})

EMPTY_DATA: Mapping[str, Any] = MappingProxyType({})
_SCALARS = (str, int, float, bool, type(None))
SCALAR_TYPES = frozenset(_SCALARS)  # types kept as they are, without copying


def freeze(value: Any, _depth: int = 0) -> Any:
    """Return a read-only deep copy of ``value`` (mappings → proxies, lists → tuples)."""
    if isinstance(value, _SCALARS):
        return value
    if _depth > 64:
        raise ValueError("event data is nested more than 64 levels deep (or is cyclic)")
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v, _depth + 1) for k, v in value.items()})
    if isinstance(value, Event):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v, _depth + 1) for v in value)
    return value  # value objects are immutable by contract


def freeze_data(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Freeze an event's top-level ``data`` mapping; same result as ``freeze``.

    A plain ``dict`` whose keys are all ``str`` and whose values are all scalars
    (the usual payload) needs no recursion: a shallow copy behind a read-only
    proxy is already a deep-frozen private copy.
    """
    if not data:
        return EMPTY_DATA
    if type(data) is dict:
        scalar_types = SCALAR_TYPES
        for key, value in data.items():
            if type(key) is not str or type(value) not in scalar_types:
                break
        else:
            return MappingProxyType(data.copy())
    frozen: Mapping[str, Any] = freeze(data)
    return frozen


def thaw(value: Any) -> Any:
    """Return a plain mutable copy (dict/list) of frozen event data."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple) and not isinstance(value, Event):
        return [thaw(v) for v in value]
    return value


def to_jsonable(value: Any) -> Any:
    """Convert event data to plain JSON types; value objects via ``__moonbus_json__``."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, Event):
        return {name: to_jsonable(getattr(value, name)) for name in value._fields}
    if isinstance(value, Sequence):
        return [to_jsonable(v) for v in value]
    encode = getattr(value, "__moonbus_json__", None)
    if encode is not None:
        return to_jsonable(encode())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    raise TypeError(f"event data value of type {type(value).__name__} is not JSON-encodable")


class Event(NamedTuple):
    """One committed fact. Immutable; ``seq`` is strictly increasing with no gaps per bus.

    ``ts`` is wall-clock milliseconds since the epoch; ``tick`` is the game tick
    or ``None`` when the host has no notion of ticks.

    An ``Event`` is a named tuple: fields cannot be assigned, deleted or added,
    and building one costs a fraction of a frozen dataclass (the bus builds one
    per emit). Events are not hashable, since ``data`` is a mapping.
    """

    type: str
    data: Mapping[str, Any]
    seq: int
    tick: int | None
    ts: int
    source: str

    @classmethod
    def create(
        cls,
        type: str,
        data: Mapping[str, Any] | None,
        *,
        seq: int,
        tick: int | None = None,
        source: str = "host",
        ts: int | None = None,
    ) -> Event:
        """Build an event, deep-freezing ``data``."""
        frozen = EMPTY_DATA if not data else freeze_data(data)
        return cls(
            type=type,
            data=frozen,
            seq=seq,
            tick=tick,
            ts=int(time.time() * 1000) if ts is None else ts,
            source=source,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by admin, export and ``moonbus events``."""
        return {
            "seq": self.seq,
            "tick": self.tick,
            "type": self.type,
            "data": to_jsonable(self.data),
            "ts": self.ts,
            "source": self.source,
        }

    def to_json(self) -> str:
        """Compact JSON for one event (one NDJSON line, without the newline)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Event:
        """Rebuild an event from ``to_dict`` output (value objects come back as mappings)."""
        return cls.create(
            str(obj["type"]),
            obj.get("data") or None,
            seq=int(obj["seq"]),
            tick=None if obj.get("tick") is None else int(obj["tick"]),
            ts=int(obj["ts"]),
            source=str(obj.get("source", "host")),
        )
