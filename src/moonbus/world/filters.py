"""Search filters for ``game_objects`` and ``npcs``: parsing and matching.

Pure functions over immutable values; any thread may call them. A filter
arrives as the host converted it from Lua: a dict (``{name=..., action=...}``),
a plain string (a name), or nothing (match everything). Keys:

- ``name``: a name or a list of names (case-insensitive);
- ``action``: an action the entity offers ("Mine", "Attack"; case-insensitive);
- ``id``: a definition id or a list of ids;
- ``ore``: for rocks, the ore they hold ("iron") or a list of ores (case-insensitive);
- ``within``: the greatest distance in tiles from the local player.

An unknown key or a value of the wrong type is a ``GameApiError`` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from moonbus.errors import GameApiError

__all__ = ["Query", "parse_query"]

_KEYS = ("name", "action", "id", "ore", "within")


@dataclass(frozen=True, slots=True)
class Query:
    names: frozenset[str] | None = None
    action: str | None = None
    ids: frozenset[int] | None = None
    ores: frozenset[str] | None = None
    within: int | None = None

    def matches(
        self, *, name: str, actions: Sequence[str], id: int, ore: str | None, distance: int
    ) -> bool:
        if self.names is not None and name.lower() not in self.names:
            return False
        if self.action is not None and self.action not in (a.lower() for a in actions):
            return False
        if self.ids is not None and id not in self.ids:
            return False
        if self.ores is not None and (ore is None or ore.lower() not in self.ores):
            return False
        return self.within is None or distance <= self.within


def _items(value: object) -> list[object]:
    """A single value, a list, or a Lua array that arrived as {1: a, 2: b} → list."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, Mapping) and value and all(isinstance(k, int) for k in value):
        return [value[k] for k in sorted(value)]
    return [value]


def _text(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise GameApiError(f"filter {key!r} must be a non-empty string, got {value!r}")
    return value.lower()


def _integer(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GameApiError(f"filter {key!r} must be a whole number, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise GameApiError(f"filter {key!r} must be a whole number, got {value!r}")
    return int(value)


def parse_query(spec: object) -> Query:
    """Turn a script's filter argument into a ``Query`` (see the module docstring)."""
    if spec is None:
        return Query()
    if isinstance(spec, str):
        return Query(names=frozenset({_text("name", spec)}))
    if not isinstance(spec, Mapping):
        raise GameApiError(
            f"a filter must be a table like {{name=..., action=...}} or a name, "
            f"got {type(spec).__name__}"
        )
    unknown = sorted(str(k) for k in spec if k not in _KEYS)
    if unknown:
        raise GameApiError(
            f"unknown filter key(s) {', '.join(map(repr, unknown))}; known keys: {', '.join(_KEYS)}"
        )
    names = spec.get("name")
    ids = spec.get("id")
    action = spec.get("action")
    ore = spec.get("ore")
    within = spec.get("within")
    if within is not None and _integer("within", within) < 0:
        raise GameApiError(f"filter 'within' cannot be negative, got {within!r}")
    return Query(
        names=None if names is None else frozenset(_text("name", n) for n in _items(names)),
        action=None if action is None else _text("action", action),
        ids=None if ids is None else frozenset(_integer("id", i) for i in _items(ids)),
        ores=None if ore is None else frozenset(_text("ore", o) for o in _items(ore)),
        within=None if within is None else _integer("within", within),
    )
