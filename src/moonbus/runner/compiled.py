"""Job sources checked once: ``CompiledJob`` and the submit-side syntax check.

Why a wrapper: in Lua 5.4 a loaded chunk is bound to its environment through
its ``_ENV`` upvalue, and the sandbox has no ``debug.setupvalue`` to rebind
it. Each worker therefore compiles a job once as::

    return function(_ENV, ...) <source>
    end

and keeps the inner function: calling it with a fresh environment as first
argument is the same as running the chunk in that environment (globals
resolve through the ``_ENV`` parameter; ``...`` are the job's arguments; the
source starts on line 1, so error lines are unchanged). A source that is a
valid chunk on its own cannot close the wrapper early (a chunk is a complete
block), so workers check the plain source before compiling the wrapped one.

Threads: ``CompiledJob`` is immutable and goes anywhere. ``JobCompiler`` is
used by submitting threads; its checker engine serializes them on the
engine's own lock, and its cache is a dict guarded by ``_lock``.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

from moonbus.lua.engine import LuaEngine

__all__ = ["CompiledJob", "JobCompiler", "wrap_source"]

DEFAULT_JOB_NAME = "job"


def wrap_source(source: str) -> str:
    """The source compiled by workers (see the module docstring)."""
    return "return function(_ENV, ...) " + source + "\nend"


@dataclass(frozen=True, slots=True)
class CompiledJob:
    """A job source whose syntax was checked; made by ``Runner.compile``.

    ``name`` is the chunk name in error messages (``name:line: message``);
    ``digest`` identifies the source in each worker's chunk cache.
    """

    source: str
    name: str
    digest: str

    @classmethod
    def of(cls, source: str, name: str) -> CompiledJob:
        digest = hashlib.sha256(f"{name}\0{source}".encode()).hexdigest()
        return cls(source=source, name=name, digest=digest)


class JobCompiler:
    """Syntax-checks sources in a dedicated engine and remembers the good ones.

    The cache is bounded (oldest entry evicted first); a source that fails to
    compile is not cached, so fixing and resubmitting it works.
    """

    def __init__(self, engine: LuaEngine, *, cache_size: int = 512) -> None:
        self._engine = engine
        self._blank = engine.table()
        self._cache: dict[tuple[str, str], CompiledJob] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def compile(
        self, source: str, name: str = DEFAULT_JOB_NAME, *, limit: float | None
    ) -> CompiledJob:
        """A ``CompiledJob`` for ``source``; raises ``ScriptSyntaxError`` with file:line.

        The check compiles under ``limit`` seconds of CPU time (``ScriptTimeout``
        naming the job) and refuses sources over the engine's size cap
        (``ScriptSourceTooLarge``); a cached source is not compiled again.
        """
        if not isinstance(source, str):
            raise TypeError(f"a job source must be a str, not {type(source).__name__}")
        if not isinstance(name, str) or not name:
            raise TypeError("a job name must be a non-empty str")
        key = (source, name)
        found = self._cache.get(key)
        if found is not None:
            return found
        self._engine.compile(source, name, self._blank, limit=limit)  # ScriptSyntaxError...
        compiled = CompiledJob.of(source, name)
        with self._lock:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = compiled
        return compiled

    def close(self) -> None:
        """Release the checker engine."""
        with self._lock:
            self._cache.clear()
        self._blank = None
        self._engine.close()
