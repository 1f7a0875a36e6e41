"""Hands the pattern chunks to a state's lazy loader (``lazy_strings.lua``).

The loader asks for the stripped chunks (``sandbox.PATTERN_CHUNKS``) the
first time a script reads a pattern function, so that no state keeps a copy
of them before (or after) it loads them.

Why the memory check: lupa (2.8) hangs when a value a Python function
returns cannot be allocated in a memory-limited Lua state. The chunks are
handed over only when the state's limit leaves room for them and for the
load; otherwise the loader raises Lua's own "not enough memory" (a
``ScriptMemoryError`` for the host), and the next read tries again.

Threads: called from Lua, by the thread running the engine's call (it holds
the engine's lock). ``release`` (at close) drops the runtime: the loader is
referenced from inside that runtime, and would otherwise keep it alive.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ChunkFetcher"]

# Room asked for besides the chunks themselves: the load builds the matcher's
# tables and the wrappers' closures (about 50 KiB), and a call that reads a
# pattern function needs some memory of its own right after.
HEADROOM = 96 * 1024


class ChunkFetcher:
    """The loader's ``fetch``: the chunks, or None when the state lacks room."""

    def __init__(self, chunks: tuple[bytes, ...], runtime: Any) -> None:
        self._chunks = chunks
        self._need = sum(len(chunk) for chunk in chunks) + HEADROOM
        self._runtime: Any = runtime

    def __call__(self) -> tuple[bytes, ...] | None:
        runtime = self._runtime
        if runtime is None:
            return None
        limit = runtime.get_max_memory()
        if limit and runtime.get_memory_used() + self._need > limit:
            return None
        return self._chunks

    def release(self) -> None:
        """Forget the runtime (the engine is closing)."""
        self._runtime = None
