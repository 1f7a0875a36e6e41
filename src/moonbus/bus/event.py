"""The committed fact: an immutable ``Event`` and its JSON form.

An event is built once, at commit, by the bus (which assigns ``seq``) or by an
event store that reads one back. ``data`` is deep-frozen at construction:
mappings become ``MappingProxyType`` over a private copy, lists and tuples
become tuples, so no subscriber can change what another one sees.

Values allowed in ``data``: ``None``, ``bool``, ``int``, ``float``, ``str``,
mappings with string keys, sequences, and *value objects* (frozen objects the
host wants Lua to call methods on, such as the demo world's inventory item).
A value object is encoded to JSON through its ``__moonbus_json__()`` method,
or as its dataclass fields.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["Event", "freeze", "thaw", "to_jsonable"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_SCALARS = (str, int, float, bool, type(None))


def freeze(value: Any, _depth: int = 0) -> Any:
    """Return a read-only deep copy of ``value`` (mappings → proxies, lists → tuples)."""
    if isinstance(value, _SCALARS):
        return value
    if _depth > 64:
        raise ValueError("event data is nested more than 64 levels deep (or is cyclic)")
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v, _depth + 1) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v, _depth + 1) for v in value)
    return value  # value objects are immutable by contract


def thaw(value: Any) -> Any:
    """Return a plain mutable copy (dict/list) of frozen event data."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def to_jsonable(value: Any) -> Any:
    """Convert event data to plain JSON types; value objects via ``__moonbus_json__``."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [to_jsonable(v) for v in value]
    encode = getattr(value, "__moonbus_json__", None)
    if encode is not None:
        return to_jsonable(encode())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    raise TypeError(f"event data value of type {type(value).__name__} is not JSON-encodable")


@dataclass(frozen=True)
class Event:
    """One committed fact. Immutable; ``seq`` is strictly increasing with no gaps per bus.

    ``ts`` is wall-clock milliseconds since the epoch; ``tick`` is the game tick
    or ``None`` when the host has no notion of ticks.
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
        frozen = _EMPTY if not data else freeze(data)
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
