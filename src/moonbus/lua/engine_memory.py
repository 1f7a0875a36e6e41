"""The memory side of ``LuaEngine`` (``engine.py``): what the state uses, its
limit, a runner job's budget, and the room host calls leave.

A base class of the engine, as ``GuardedCalls`` is (``guarded.py``), not an
object of its own. On a closed engine (its runtime released) each of these
raises ``ClosedError``.

Threads: ``memory_used`` from any thread (a racy read); the others take the
engine's lock.
"""

from __future__ import annotations

import math
from typing import Any

from moonbus.errors import ClosedError
from moonbus.lua.call_state import EngineLock
from moonbus.lua.lua_room import MARGIN

__all__ = ["EngineMemory"]


class EngineMemory:
    """Memory usage and limits of one engine's Lua state."""

    # Set by LuaEngine.__init__ (annotations only: no class attributes).
    name: str
    _rt: Any
    _room: Any
    _lock: EngineLock

    def _runtime(self) -> Any:
        rt = self._rt
        if rt is None:  # released by close()
            raise ClosedError(f"Lua engine {self.name!r} is closed")
        return rt

    def memory_used(self) -> int | None:
        """Bytes allocated by the state (None when no memory limit is set)."""
        used = self._runtime().get_memory_used()
        return int(used) if used is not None else None

    def set_memory_limit(self, limit: int | None) -> None:
        """Change the memory limit (bytes of total usage; None = unlimited)."""
        with self._lock:
            self._runtime().set_max_memory(limit or 0, total=True)
            self._set_host_call_room()

    def _set_host_call_room(self) -> None:
        """Tell host_bridge.lua the usage (KiB) above which a host call is
        refused before Python runs: the limit less lua_room's MARGIN, so that
        what lupa pushes when Python returns always has room (see there).
        Owner: the thread holding the engine's lock (or the constructor)."""
        limit = self._rt.get_max_memory(total=True)
        self._room["limit"] = (limit - MARGIN) / 1024 if limit else math.inf

    def set_memory_budget(self, extra: int) -> None:
        """Limit the state to what it uses now plus ``extra`` bytes (a job's budget).

        One locked step instead of ``memory_used()`` then ``set_memory_limit()``.
        Needs an engine created with a memory limit (as ``set_memory_limit``).
        """
        with self._lock:
            rt = self._runtime()
            # Not ``total``: lupa adds the state's base usage, which
            # get_memory_used() leaves out, so the limit is usage now + extra.
            rt.set_max_memory(rt.get_memory_used() + extra)
            self._set_host_call_room()
