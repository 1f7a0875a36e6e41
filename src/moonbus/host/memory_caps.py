"""Host-side memory caps of one script (SPEC §4b), and what they counted.

A script's Lua engines have a memory limit, but what a script hands to the
host lives in Python: log lines, error texts, its ``stats`` panel, events
queued for its main engine, events it emits. Each of those is capped here or
by the code that calls these helpers, so that one hostile script cannot grow
the host by more than a few hundred MiB over its Lua memory limit:

* a log line (and a recorded error text) longer than its limit is cut, with
  a marker saying how many bytes were dropped (``clip``);
* the ``stats`` panel refuses new keys past a count and values past a size
  (``moonbus.host.stats_panel``);
* the main engine's deferred queue has a length limit; reaching it stops the
  script as ``failed`` (``moonbus.host.script``);
* an event a script emits has a size limit (its copy out of Lua stops past
  it: ``LuaConverter.to_py(max_size=...)``);
* a value the host copies into a script's Lua (an API's return value, an
  event, a shared value) must fit in its free Lua memory
  (``moonbus.lua.lua_room``), counted as ``refused_lua_values``.

``ScriptLimitCounters`` is shared by one script's two engines and its host:
increments come from the event thread and the script thread, so they take a
lock (they are rare: only a limit that is hit counts). ``snapshot`` gives the
frozen record that ``ScriptHost.statistics()`` reports.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LOG_TRANSFER",
    "ScriptLimitCounters",
    "ScriptLimitStatistics",
    "clip",
    "clip_line",
    "lua_type_name",
]

# Longest log line (bytes) a script's library sends to the host at all: beyond
# it the line is cut inside Lua, so a 20 MiB line never crosses (max_log_line
# settings above it act as this value).
LOG_TRANSFER = 1024 * 1024


def clip(text: str, limit: int) -> tuple[str, int]:
    """``text`` cut to at most ``limit`` UTF-8 bytes plus a marker; (text, bytes dropped).

    Never splits a character. A string of at most ``limit // 4`` characters
    cannot be longer than ``limit`` bytes, so ordinary lines are not encoded.
    """
    if limit <= 0 or len(text) * 4 <= limit:
        return text, 0
    if text.isascii():  # one byte per character: no need to encode
        if len(text) <= limit:
            return text, 0
        return f"{text[:limit]}… [truncated {len(text) - limit} bytes]", len(text) - limit
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return text, 0
    kept = data[:limit].decode("utf-8", errors="ignore")
    dropped = len(data) - len(kept.encode("utf-8"))
    return f"{kept}… [truncated {dropped} bytes]", dropped


def clip_line(text: str, limit: int, size: int) -> str:
    """A script's log line cut to ``limit`` bytes; ``size`` is its full length in
    bytes in Lua (the script library cut it at ``LOG_TRANSFER`` before sending
    it, so ``text`` may already be short of it). Returns ``text`` itself when
    nothing was cut."""
    kept, dropped = clip(text, limit)
    if not dropped and size <= limit:
        return text
    if dropped:
        kept = kept[: kept.rindex("… [truncated ")]
    missing = size - len(kept.encode("utf-8", errors="replace"))
    return f"{kept}… [truncated {missing} bytes]"


def lua_type_name(value: Any) -> str:
    """What Lua calls the type of a value that came from a script (for messages).

    A script never sees Python type names: a value converted from Lua is one
    of these, and anything else (a Lua table or function still wrapped by
    lupa) is described by what it is in Lua.
    """
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (str, bytes)):
        return "string"
    if isinstance(value, (Mapping, list, tuple)):
        return "table"
    name = type(value).__name__.lower()
    for lua_name in ("table", "function", "thread", "userdata"):
        if lua_name in name:
            return lua_name
    return "host value"


@dataclass(frozen=True)
class ScriptLimitStatistics:
    """How often one script ran into its host-side memory caps (since load)."""

    truncated_log_lines: int
    truncated_errors: int
    refused_stats: int
    deferred_overflows: int
    deferred_peak: int
    refused_emits: int
    refused_host_values: int
    refused_lua_values: int


class ScriptLimitCounters:
    """Mutable counters behind ``ScriptLimitStatistics`` (thread-safe)."""

    __slots__ = (
        "_lock",
        "deferred_overflows",
        "deferred_peak",
        "refused_emits",
        "refused_host_values",
        "refused_lua_values",
        "refused_stats",
        "truncated_errors",
        "truncated_log_lines",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.truncated_log_lines = 0
        self.truncated_errors = 0
        self.refused_stats = 0
        self.deferred_overflows = 0
        self.deferred_peak = 0
        self.refused_emits = 0
        self.refused_host_values = 0
        self.refused_lua_values = 0

    def count(self, name: str) -> None:
        """Add one to the counter ``name`` (one of the ``ScriptLimitStatistics`` fields)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def clip(self, text: str, limit: int, counter: str = "truncated_log_lines") -> str:
        """``clip(text, limit)``, counting a cut line under ``counter``."""
        clipped, dropped = clip(text, limit)
        if dropped:
            self.count(counter)
        return clipped

    def snapshot(self) -> ScriptLimitStatistics:
        """A frozen copy of the counters."""
        with self._lock:
            return ScriptLimitStatistics(
                truncated_log_lines=self.truncated_log_lines,
                truncated_errors=self.truncated_errors,
                refused_stats=self.refused_stats,
                deferred_overflows=self.deferred_overflows,
                deferred_peak=self.deferred_peak,
                refused_emits=self.refused_emits,
                refused_host_values=self.refused_host_values,
                refused_lua_values=self.refused_lua_values,
            )
