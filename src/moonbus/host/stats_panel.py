"""The ``stats`` panel of one script: the key/value pairs a user watches live.

Both engines of a script write the same panel (the event engine from the
event thread, the main engine from the script thread) and the host reads it
from any thread (admin listings, the CLI panel), so every access takes
``_lock``.

The panel lives in Python, outside the script's Lua memory limit, so it is
capped (SPEC §4b): at most ``max_stats_keys`` keys, keys of at most
``max_stats_key`` bytes and string values of at most ``max_stats_value``
bytes (``HostSettings``, read at each call so changes apply at once). A
``set`` past a cap raises ``ScriptLimitError`` naming the limit and its
setting; nothing is stored and the refusal is counted.
"""

from __future__ import annotations

import threading
from typing import Any

from moonbus.errors import ScriptLimitError
from moonbus.host.context import HostSettings
from moonbus.host.memory_caps import ScriptLimitCounters, lua_type_name

__all__ = ["StatsPanel"]

_SCALARS = (str, int, float, bool, type(None))


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", errors="replace"))


class StatsPanel:
    """One script's ``stats`` values, shared by its engines (thread-safe)."""

    def __init__(self, settings: HostSettings, counters: ScriptLimitCounters) -> None:
        self._settings = settings
        self._counters = counters
        self._values: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _refuse(self, message: str) -> ScriptLimitError:
        self._counters.count("refused_stats")
        return ScriptLimitError(message)

    def set(self, key: Any, value: Any) -> None:
        """``stats.set(key, value)``: store a scalar (``nil`` removes the key)."""
        if not isinstance(key, str):
            raise TypeError(f"stats key must be a string, got a {lua_type_name(key)}")
        if not isinstance(value, _SCALARS):
            raise TypeError(
                f"stats value for '{key[:64]}' must be a string, number or boolean, "
                f"got a {lua_type_name(value)}"
            )
        settings = self._settings
        if _utf8_size(key) > settings.max_stats_key:
            raise self._refuse(
                f"stats key of {_utf8_size(key)} bytes is longer than the limit of "
                f"{settings.max_stats_key} bytes (max_stats_key)"
            )
        if isinstance(value, str) and _utf8_size(value) > settings.max_stats_value:
            raise self._refuse(
                f"stats value for '{key}' is {_utf8_size(value)} bytes, over the limit of "
                f"{settings.max_stats_value} bytes (max_stats_value)"
            )
        with self._lock:
            if value is None:
                self._values.pop(key, None)
                return
            if key not in self._values and len(self._values) >= settings.max_stats_keys:
                raise self._refuse(
                    f"stats already holds {len(self._values)} keys, the limit "
                    f"(max_stats_keys); cannot add '{key}'"
                )
            self._values[key] = value

    def get(self, key: Any) -> Any:
        """``stats.get(key)``: the value, or None."""
        with self._lock:
            return self._values.get(key)

    def clear(self) -> None:
        """``stats.clear()``: remove every key."""
        with self._lock:
            self._values.clear()

    def snapshot(self) -> dict[str, Any]:
        """A copy of the panel (for listings and summaries)."""
        with self._lock:
            return dict(self._values)
