"""Limits on compiling Lua source (SPEC §4b "Compiling is limited too").

Two bounds apply to every compile of text that a script, a script file or a
runner job brings: its size and its time.

* Size: a source longer than ``max_source_bytes`` (UTF-8 bytes, default
  4 MiB) is refused before the parser sees it: ``ScriptSourceTooLarge`` on
  the host side (``LuaEngine.compile``), an error raised in the script for
  ``load`` (the prelude's check, with the same limit). Parsing is roughly
  linear in the size, so this also bounds the memory of the parse.
* Time: the Lua parser runs no debug hooks, so a source built to be costly
  to parse (deeply nested functions full of locals, then millions of global
  names, each looked up through every level) would run past any time limit.
  ``prelude.lua`` therefore feeds the parser through a reader function that
  hands out ``COMPILE_PIECE`` bytes at a time; the reader is Lua code, where
  an armed time-limit hook fires, so the parse ends at most one piece after
  the limit. Why 256 bytes: the costliest shape found (name lookups through
  ~150 nested functions, each with 199 locals and 254 upvalues) parses at
  ~35 us of CPU per byte, so one piece takes at most ~9 ms (1 KiB: ~36 ms,
  4 KiB: ~130 ms, too late for a 100 ms handler limit). Feeding adds ~0.5 us
  per piece: about +10% to compiling an ordinary script (microseconds; a
  script's start costs the same within noise). Sources up to one piece are
  passed to the parser whole.

Counters (``CompileCounters``): compiles cut by the time limit and sources
refused by size, shared by every engine of one ``SandboxFactory`` and read
through its ``statistics()``. Any thread may count; the owner reads a
snapshot.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = [
    "COMPILE_PIECE",
    "DEFAULT_MAX_SOURCE_BYTES",
    "CompileCounters",
    "CompileStatistics",
    "chunk_display",
    "oversize",
]

DEFAULT_MAX_SOURCE_BYTES = 4 * 1024 * 1024
# Bytes handed to the parser per reader call (see the module docstring).
COMPILE_PIECE = 256


@dataclass(frozen=True)
class CompileStatistics:
    """Compiles cut by their time limit, and sources refused for their size."""

    compiles_timed_out: int = 0
    sources_refused: int = 0


class CompileCounters:
    """Thread-safe counters for one sandbox factory's engines."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timed_out = 0
        self._refused = 0

    def timed_out(self) -> None:
        """A compile was cut by its time limit."""
        with self._lock:
            self._timed_out += 1

    def refused(self) -> None:
        """A source was refused for its size (also called from Lua by ``load``)."""
        with self._lock:
            self._refused += 1

    def snapshot(self) -> CompileStatistics:
        with self._lock:
            return CompileStatistics(self._timed_out, self._refused)


def oversize(source: str, limit: int) -> int | None:
    """The UTF-8 size of ``source`` when it is larger than ``limit`` bytes, else None.

    Encodes only when the character count cannot decide (a character is 1 to
    4 bytes), so the common small source costs one ``len``.
    """
    chars = len(source)
    if chars * 4 <= limit:
        return None
    if chars > limit:
        return len(source.encode("utf-8", "surrogatepass"))
    size = len(source.encode("utf-8", "surrogatepass"))
    return size if size > limit else None


def chunk_display(chunkname: str) -> str:
    """A chunk name as Lua shows it in messages (``@x.lua`` → ``x.lua``)."""
    if chunkname[:1] in ("@", "="):
        return chunkname[1:]
    line = chunkname.split("\n", 1)[0]
    return f'[string "{line}..."]' if line != chunkname else f'[string "{line}"]'
