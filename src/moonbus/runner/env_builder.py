"""Fresh job environments built inside Lua, in the same call as the job.

Why: ``LuaEngine.new_env()`` is a Python → Lua round trip that builds the
sandbox environment by copying every library entry by entry; for a tiny job
(``return 1 + ...``) that costs several times more than the job itself. A
worker therefore generates, once, a Lua function whose table constructors
produce the same environment in one step, and calls it from the job's own
Lua call (see ``worker.py``'s trampoline).

The generated builder is derived from the sandbox itself, never written by
hand: two environments made by ``engine.new_env()`` are compared, and the
builder copies exactly what they hold. It is only used when the comparison
shows the shape it knows how to reproduce:

* every global is the same value in both environments (shared, immutable
  functions), except
* ``_G`` (the environment itself) and ``load`` (a per-environment closure
  whose default chunk environment is that environment; the builder gives each
  new environment a ``load`` that passes itself explicitly, as a tail call so
  error positions still point at the caller), and
* library tables (``string``, ``math``...), fresh in each environment, with
  identical non-table contents and no metatable; the builder makes a fresh
  shallow copy for every job.

Anything else (a new per-environment closure, a nested table, a metatable)
means the sandbox changed in a way this module does not know: ``build_source``
then returns None with the reason, and the worker falls back to
``engine.new_env()`` for every job (slower, always faithful).

Threads: called by the worker that owns the engine.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from moonbus.lua.engine import LuaEngine

__all__ = ["GENERATOR", "make_builder"]

# The generator (Lua, shipped next to this module): runs in a sandbox environment,
# receives two templates, returns the builder's source, or nil and the reason
# why the templates cannot be reproduced. Read once; an immutable string.
GENERATOR = resources.files("moonbus.runner").joinpath("env_generator.lua").read_text("utf-8")


def make_builder(engine: LuaEngine, blank: Any) -> tuple[Any, str | None]:
    """(builder function, None) or (None, reason it cannot be used).

    ``blank`` is an empty table used as the compile environment of helper
    chunks (they read no globals of their own).
    """
    first, second = engine.new_env(), engine.new_env()
    generator = engine.compile(GENERATOR, "runner-env-generator", first, capped=False)
    values = engine.call(generator, first, second, limit=None)
    if values[0] is None:
        return None, str(values[1]) if len(values) > 1 else "unknown reason"
    chunk = engine.compile(values[0], "runner-env-builder", blank, capped=False)
    return engine.call(chunk, first, limit=None)[0], None
