"""A read-only ``shared`` for runner jobs submitted with ``namespace=``.

A job often needs the same numbers a script keeps in the shared store (the
mining script's ore prices, a player's tallies). ``Runner(shared=store)``
and ``submit(..., namespace="mining")`` give the job a ``shared`` global with
the scripts' Lua API for *reads*::

    shared:int("n"):get()   shared:float/string/bool(n):get()
    shared:table("t"):get(k) / :contains(k) / :keys() / :to_table()
    shared:contains("n")

Every write (``set``, ``increment``, ``remove``, ``clear``...) is an error
"shared is read-only in runner jobs": jobs run on worker threads in any
order, so a job that wants to change game state returns a value and its
``apply`` makes the change at the frame barrier.

Semantics: each read is atomic and sees the latest committed value (the
store's own guarantee); there is no snapshot across reads, so two reads in
one job may see a script's change between them.

Speed: only jobs submitted with a namespace get it (through their own
trampoline, ``worker.py``); others build their environment exactly as
before. A worker builds one view per namespace in Lua and keeps the most
recent ``MAX_VIEWS`` of them.

Threads: built and used by the worker that owns the engine.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from importlib import resources
from typing import Any

from moonbus.lua.engine import LuaEngine
from moonbus.lua.lua_room import admitted
from moonbus.shared.values import as_sequences

__all__ = ["MAX_VIEWS", "READS", "SharedViews"]

MAX_VIEWS = 64
# kind -> the read methods a job may call on a handle of that kind
READS: dict[str, tuple[str, ...]] = {
    "int": ("get",),
    "float": ("get",),
    "string": ("get",),
    "bool": ("get",),
    "table": ("get", "contains", "keys", "to_table"),
}
_WRITES = ("set", "increment", "decrement", "add", "subtract", "append", "toggle", "remove",
           "clear")

# Builds one namespace's view (Lua: shared_view.lua): py.handle(kind, name)
# returns the read methods of that handle (in READS order), py.contains(name)
# the store-level read.
_VIEW = resources.files("moonbus.runner").joinpath("shared_view.lua").read_text("utf-8")


class SharedViews:
    """One worker's ``shared`` views, one per namespace (most recent first out)."""

    def __init__(self, engine: LuaEngine, blank: Any, store: Any) -> None:
        self._engine = engine
        self._store = store
        self._views: OrderedDict[str, Any] = OrderedDict()
        env = engine.new_env()  # pairs, ipairs, setmetatable for the builder
        self._make = engine.compile(_VIEW, "=moonbus-runner-shared", env, capped=False)
        self._reads = engine.table_from({k: engine.table_from(list(v))
                                         for k, v in READS.items()})
        self._writes = engine.table_from(list(_WRITES))

    def view(self, namespace: str) -> Any:
        """The Lua ``shared`` table of ``namespace`` (built on first use)."""
        found = self._views.get(namespace)
        if found is not None:
            self._views.move_to_end(namespace)
            return found
        ns = self._store.namespace(namespace)
        conv = self._engine.converter
        to_py, to_lua = conv.to_py, conv.to_lua

        def handle(kind: str, name: str) -> tuple[Callable[..., Any], ...]:
            handle_obj = getattr(ns, kind)(name)
            methods = [getattr(handle_obj, m) for m in READS[kind]]
            if kind == "string":  # a long string must fit in Lua first (lua_room)
                return tuple(admitted(m, to_lua, f"shared:string({name!r}):{op}()")
                             for m, op in zip(methods, READS[kind], strict=True))
            if kind != "table":
                return tuple(methods)
            return tuple(_converted(m, to_py, to_lua) for m in methods)

        bridge = self._engine.table_from({})
        bridge["handle"] = handle
        bridge["contains"] = lambda name: ns.contains(to_py(name))
        made = self._engine.call(self._make, bridge, self._reads, self._writes, limit=None)[0]
        self._views[namespace] = made
        if len(self._views) > MAX_VIEWS:
            self._views.popitem(last=False)
        return made


def _converted(method: Callable[..., Any], to_py: Callable[[Any], Any],
               to_lua: Callable[[Any], Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return to_lua(as_sequences(method(*[to_py(a) for a in args])))
    return call
