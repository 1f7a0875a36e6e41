"""Script engines' Lua objects in chunks of their own (``_arena.c``): the wiring.

Why (issue 16): at 10,000 scripts, a tick touches every state's objects
once, all out of cache; through glibc's malloc they lie scattered in 4 KiB
pages among every other state's. An arena gives each state its own 4 KiB
chunks of one reservation that the kernel backs with 2 MiB pages, so a
delivery touches a few pages and misses the TLB far less (a tick 10-20 %
shorter, ~70 MiB less RSS for 10,000 handler scripts; ``_arena.c`` says how).

On by default (``HostSettings.lua_arena_bytes``, ``DEFAULT_ARENA_BYTES``:
1 MiB per engine; None turns it off).
One ``ArenaSource`` per ``SandboxFactory``; ``make_arena_source`` returns
None (every state keeps lupa's allocator) when the setting is None, the
extension is not built or is switched off (``moonbus.native``), it was built
for another lupa module, or the kernel refuses the reservation (not
counted: the statistics then say ``active=False``, and so does ``moonbus
doctor``). Memory limits are unchanged: the arena keeps lupa's own account
of each state.

Threads: the source is made once, by the factory's owner; ``install`` runs
on the thread making an engine, before any other thread can reach its
state; ``statistics`` reads atomics from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moonbus.native import load_fast_path

__all__ = ["ARENA", "DEFAULT_ARENA_RESERVE", "ArenaStatistics", "arena_statistics",
           "make_arena_source"]

ARENA = "moonbus.lua._arena"
# Address space reserved for all the chunks of one factory (never committed
# until used; MAP_NORESERVE): 64 GiB is 300,000 states of 200 KiB.
DEFAULT_ARENA_RESERVE = 64 << 30


@dataclass(frozen=True)
class ArenaStatistics:
    """A factory's arena counters (all 0 when there is none).

    ``chunks_used``: 4 KiB chunks held by live states; ``chunks_spare``: given
    back by closed states, kept for the next (never returned to the kernel);
    ``states``: states with an arena now; ``blocks_passed_on``: small blocks
    lupa's allocator made because a state held ``lua_arena_bytes`` of chunks
    already (or the reservation was used up); ``active``: whether the
    factory has an arena at all.
    """

    active: bool = False
    chunk_size: int = 0
    chunks_used: int = 0
    chunks_spare: int = 0
    states: int = 0
    blocks_passed_on: int = 0


def make_arena_source(lua_module: Any, state_bytes: int | None,
                      reserve_bytes: int = DEFAULT_ARENA_RESERVE) -> Any | None:
    """An ``ArenaSource`` for engines of ``lua_module``, or None (see above)."""
    if state_bytes is None:
        return None
    fast = load_fast_path(ARENA)
    if fast.module is None or lua_module.__name__ != fast.module.LUA_MODULE:
        return None
    try:
        return fast.module.ArenaSource(reserve_bytes, state_bytes)
    except OSError:  # the kernel refused the reservation (vm.overcommit_memory=2...)
        return None


def arena_statistics(source: Any | None) -> ArenaStatistics:
    """The counters of ``source`` (an ``ArenaSource`` or None)."""
    if source is None:
        return ArenaStatistics()
    counts = source.statistics()
    return ArenaStatistics(
        active=True, chunk_size=load_fast_path(ARENA).module.CHUNK_SIZE,  # type: ignore[union-attr]
        chunks_used=counts["chunks_used"], chunks_spare=counts["chunks_spare"],
        states=counts["states"], blocks_passed_on=counts["blocks_passed_on"],
    )
