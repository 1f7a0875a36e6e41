"""The sandbox factory: the one place where Lua states are made.

Every engine (script event engine, script main engine, runner worker) comes
from ``SandboxFactory.create`` so that every state gets the same hardening
(see ``bounded.lua``, the pattern chunks ``pboundary.lua``, ``pcompile.lua``,
``pmatch.lua``, ``pcost.lua`` and ``patterns.lua``, ``host_bridge.lua`` and
``prelude.lua``), a
memory limit and a shared watchdog for time limits.

Lua flavour: Lua 5.4 through lupa by default (``lupa.lua54``). LuaJIT is not
offered for untrusted code: its compiled loops never run debug hooks, so the
time limit could not be enforced.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from moonbus.errors import ConfigError
from moonbus.lua.arena import ArenaStatistics, arena_statistics, make_arena_source
from moonbus.lua.compile_limits import DEFAULT_MAX_SOURCE_BYTES, CompileCounters
from moonbus.lua.engine import LuaEngine
from moonbus.lua.hooks import HookControl
from moonbus.lua.lupa_support import check_lupa
from moonbus.lua.watchdog import Watchdog

__all__ = [
    "DEFAULT_ARENA_BYTES",
    "DEFAULT_MAX_SOURCE_BYTES",
    "DEFAULT_MEMORY_LIMIT",
    "GC_MINOR_MULTIPLIERS",
    "SUPPORTED_LUA",
    "SandboxFactory",
    "SandboxStatistics",
    "gc_minor_multiplier",
    "gc_phase",
]

DEFAULT_MEMORY_LIMIT = 64 * 1024 * 1024
# The share of arena chunks one script engine may hold: HostSettings's
# default for lua_arena_bytes (docs/limits.md). SandboxFactory's own default
# is None (no arena) for code that makes engines without a runtime.
DEFAULT_ARENA_BYTES = 1 << 20
# Minor multipliers (% growth between young collections) of generational
# states, engine after engine (see create and gc_phase).
GC_MINOR_MULTIPLIERS = (5, 6, 7)
_GOLDEN = 0.6180339887498949  # consecutive indexes' phases spread evenly


def gc_minor_multiplier(index: int) -> int:
    """The ``index``-th engine's minor multiplier: periods that differ drift
    apart again states that something (a first delivery's allocations)
    brought in step."""
    return GC_MINOR_MULTIPLIERS[index % len(GC_MINOR_MULTIPLIERS)]


def gc_phase(index: int) -> float:
    """The share of its size the ``index``-th engine makes as garbage right
    after a full collection, below the growth that starts its next young
    collection: states loaded together make the same garbage per event, and
    collecting in step they all collected in the same tick (10,000 handler
    scripts at the default multiplier, 20: a 300-500 ms tick every ~160
    ticks). The golden-ratio sequence spreads consecutive engines evenly."""
    return (index * _GOLDEN) % 1.0 * 0.95 * gc_minor_multiplier(index) / 100


# Loaded in this order: the Lua matcher, the C cost bound, the wrappers.
# In load order; pmatch.lua takes the tables of the two before it (lazy_strings.lua).
PATTERN_CHUNKS = ("pboundary.lua", "pcompile.lua", "pmatch.lua", "pcost.lua", "patterns.lua")
SUPPORTED_LUA = ("lua54",)


def _stripped(lua_module: Any, source: str) -> bytes:
    """``source`` compiled once into Lua bytecode without debug information.

    The pattern chunks are large: loading bytecode is several times faster
    than compiling text in every new state, and takes less memory. Without
    line information their frames carry no position, so an error a gsub
    callback raises at level 2 reads as it does when the C gsub called it.
    Only this trusted source is ever loaded as bytecode; scripts cannot load
    binary chunks.
    """
    compiler = lua_module.LuaRuntime(register_eval=False, register_builtins=False, encoding=None)
    dumped = compiler.execute(
        b"local chunk, err = load(...) return chunk and string.dump(chunk, true), err",
        source.encode("utf-8"),
    )
    if not isinstance(dumped, tuple) or not isinstance(dumped[0], bytes):
        raise RuntimeError(f"sandbox chunk does not compile: {dumped!r}")
    return dumped[0]


@dataclass(frozen=True)
class SandboxStatistics:
    """Counters of one factory's engines (``SandboxFactory.statistics``).

    ``compiles_timed_out``: compiles (``load`` in a script, script files)
    cut by their time limit; ``sources_refused``: sources refused because they
    were larger than their size cap. Engines made with counters of their own
    (a ``Runner``'s, in ``RunnerStatistics``) are counted there instead.
    """

    engines_created: int
    compiles_timed_out: int
    sources_refused: int
    arena: ArenaStatistics = field(default_factory=ArenaStatistics)  # moonbus.lua.arena


def _arena_bytes(value: object) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or not 4096 <= value <= 1 << 30):
        raise ConfigError(f"lua_arena_bytes must be None or an int from 4096 to 2**30 "
                          f"(bytes of arena chunks per script engine), not {value!r}")
    return value


def _source_cap(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"max_source_bytes must be a positive int, not {value!r}")
    return value


class SandboxFactory:
    """Makes hardened ``LuaEngine`` objects that share one watchdog thread.

    ``max_source_bytes`` is the default size cap of the sources its engines
    compile (``create`` may give another). ``arena_bytes``: how much of its
    own arena chunks each script engine (``create(generational_gc=True)``)
    may hold for its small Lua objects (``moonbus.lua.arena``; None: none,
    every state uses lupa's allocator only). Thread-safe: ``create`` may be
    called from any thread. ``close`` stops the watchdog (only when the
    factory created it).
    """

    def __init__(
        self,
        *,
        lua: str = "lua54",
        watchdog: Watchdog | None = None,
        memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
        frozen_mappings: Iterable[type] = (),
        max_source_bytes: int = DEFAULT_MAX_SOURCE_BYTES,
        native: bool = True,
        arena_bytes: int | None = None,
    ) -> None:
        if lua not in SUPPORTED_LUA:
            raise ConfigError(f"unsupported Lua flavour {lua!r}; choose one of {SUPPORTED_LUA}")
        try:
            self._module = importlib.import_module(f"lupa.{lua}")
        except ImportError as exc:
            raise ConfigError(f"lupa does not provide {lua!r} on this machine") from exc
        self.lua = lua
        lua_dir = resources.files("moonbus.lua")
        self._bounded = lua_dir.joinpath("bounded.lua").read_text("utf-8")
        self._lazy_strings = lua_dir.joinpath("lazy_strings.lua").read_text("utf-8")
        self._patterns = tuple(
            _stripped(self._module, lua_dir.joinpath(name).read_text("utf-8"))
            for name in PATTERN_CHUNKS
        )
        self._prelude = lua_dir.joinpath("prelude.lua").read_text("utf-8")
        # Stripped too: its frames are the host's plumbing (dropped from script
        # tracebacks), and its debug information cost every state ~1.5 KiB.
        self._tasks = _stripped(self._module, lua_dir.joinpath("tasks.lua").read_text("utf-8"))
        self._host_bridge = lua_dir.joinpath("host_bridge.lua").read_text("utf-8")
        check_lupa(self._module)  # a clear error now, not a crash at the first time limit
        self._hooks = HookControl(self._module)
        self._own_watchdog = watchdog is None
        self.watchdog = watchdog or Watchdog()
        self.memory_limit = memory_limit
        self.max_source_bytes = _source_cap(max_source_bytes)
        # Read-only mapping types event data arrives as (the runtime passes the
        # bus's); engines copy them to a dict before lupa copies them to Lua.
        self.frozen_mappings = frozenset(frozen_mappings)
        self._compile_counters = CompileCounters()
        # False: engines copy host data into Lua on the Python path only
        # (Runtime(native=False); MOONBUS_PURE_PYTHON is read per engine).
        self.native = native
        self._lock = threading.Lock()
        self._created = 0
        # Script engines' small Lua objects in chunks of their own (moonbus.lua.arena).
        arena_bytes = _arena_bytes(arena_bytes)  # checked whether or not it is used
        self._arena = make_arena_source(self._module, arena_bytes) if native else None

    @property
    def lua_module(self) -> Any:
        """The lupa extension module in use (for ``lua_type`` and error classes)."""
        return self._module

    def create(
        self,
        name: str,
        *,
        memory_limit: int | bool | None = True,
        max_source_bytes: int | None = None,
        compile_counters: CompileCounters | None = None,
        generational_gc: bool = False,
    ) -> LuaEngine:
        """A new sandboxed engine. ``memory_limit=True`` and ``max_source_bytes=None``
        use the factory defaults; ``compile_counters`` (default: the factory's)
        counts its cut compiles and refused sources. ``generational_gc``: Lua's
        generational collector, for long-lived states that make little garbage
        at a time (script engines: memory stays near what is live), collecting
        after 5-7 % growth (``gc_minor_multiplier``; Lua's default, 20, let
        10,000 handler scripts keep ~250 MiB of garbage between collections;
        see also ``gc_phase``)."""
        limit = self.memory_limit if memory_limit is True else memory_limit
        cap = self.max_source_bytes if max_source_bytes is None else _source_cap(max_source_bytes)
        with self._lock:
            self._created += 1
            minor = gc_minor_multiplier(self._created)
        return LuaEngine(
            lua_module=self._module,
            bounded=self._bounded,
            lazy_strings=self._lazy_strings,
            patterns=self._patterns,
            prelude=self._prelude,
            tasks=self._tasks,
            host_bridge=self._host_bridge,
            hooks=self._hooks,
            watchdog=self.watchdog,
            name=name,
            memory_limit=limit or None,
            max_source_bytes=cap,
            frozen_mappings=self.frozen_mappings,
            compile_counters=compile_counters or self._compile_counters,
            native=self.native,
            generational_gc=minor if generational_gc else 0,
            arena=self._arena if generational_gc else None,
        )

    @property
    def created(self) -> int:
        """How many engines this factory made."""
        return self._created

    def statistics(self) -> SandboxStatistics:
        """Engines made, compiles cut by their time limit, sources refused for size."""
        compiles = self._compile_counters.snapshot()
        return SandboxStatistics(
            engines_created=self._created,
            compiles_timed_out=compiles.compiles_timed_out,
            sources_refused=compiles.sources_refused,
            arena=arena_statistics(self._arena),
        )

    def close(self) -> None:
        """Stop the watchdog if this factory owns it, and let go of the arena
        source: its reservation (with every chunk closed states gave back,
        never returned to the kernel while it is mapped) is unmapped when the
        last of the states it serves closes, not when this object is
        collected (a closed Runtime kept by its embedder held it all)."""
        self._arena = None
        if self._own_watchdog:
            self.watchdog.close()

    def __enter__(self) -> SandboxFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
