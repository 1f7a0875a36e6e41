"""Wiring the C conversion into Lua (``_fastconvert.c``) to one engine's converter.

``native_converter`` returns a ``Converter``: ``convert(value)`` copies an exact
list, tuple or dict of scalars (nested up to a few levels, ``@lua_api``
objects whose class the converter has met inside) into a new Lua table in C,
and returns None for anything else: the caller then takes the generic path
(``LuaConverter._to_lua``), which gives today's result or error for every
value the C path does not take. ``convert.to_box(value)`` does the same in one
pass for a host method's result (no @lua_api objects, str keys) and leaves the
table in host_bridge.lua's box for the method's Lua wrapper (True), or does
nothing (False). It returns None itself, and the converter
keeps the generic path only, when the extension is not built, is switched off
(``MOONBUS_PURE_PYTHON``), the engine is not a Lua 5.4 engine, or lupa's
runtime lock cannot be found (see ``fastcall._lupa_lock``).

Threads: build it on the engine's owner side before the engine is shared;
the returned object is called by whichever thread runs the engine.
"""

from __future__ import annotations

from typing import Any

from moonbus.lua.fastcall import _lupa_lock
from moonbus.native import load_fast_path

__all__ = ["FAST_CONVERT", "native_convert_available", "native_converter", "native_quick_bind",
           "quick_pairs"]

_GLOBAL_KEY = "__moonbus_native_convert"  # in the state's real _G, which scripts never see
_QUICK_KEY = _GLOBAL_KEY  # the same key: a new one would grow _G (~2 KiB a state)

FAST_CONVERT = "moonbus.lua._fastconvert"  # fails to import, too, when lupa differs


def native_convert_available() -> bool:
    """Whether the C conversion is built and not switched off."""
    return load_fast_path(FAST_CONVERT).on


def _module_and_lock(lua_module: Any, runtime: Any) -> tuple[Any, Any] | None:
    """The built ``_fastconvert`` module and ``runtime``'s lupa lock, or None when
    the C path is off, was built for another lupa Lua module, or the lock is not
    found (both entry points below need all three)."""
    fast = load_fast_path(FAST_CONVERT)
    if fast.module is None or lua_module.__name__ != fast.module.LUA_MODULE:
        return None
    lock = _lupa_lock(runtime, lua_module)
    return None if lock is None else (fast.module, lock)


def native_converter(
    lua_module: Any,
    runtime: Any,
    state: int,
    make_proxy: Any,
    box: Any,
    classes: dict[type, Any],
    max_depth: int,
) -> Any | None:
    """The C conversion for one runtime, or None (see the module docstring).

    ``make_proxy`` is host_bridge.lua's Lua function (proxies are made by it, as
    the generic path makes them); ``box`` is host_bridge.lua's table through which
    ``convert.to_box(value)`` hands a method's result to its Lua wrapper;
    ``classes`` is the converter's own type -> metatable cache, read (never
    written) by the C side.
    """
    found = _module_and_lock(lua_module, runtime)
    if found is None:
        return None
    module, lock = found
    globals_table = runtime.globals()
    globals_table[_GLOBAL_KEY] = runtime.table_from([make_proxy, box])
    try:
        convert = module.Converter(state=state, lupa_lock=lock, global_key=_GLOBAL_KEY,
                                        classes=classes, max_depth=max_depth)
        convert.bind(globals_table[_GLOBAL_KEY])
    finally:
        globals_table[_GLOBAL_KEY] = None
    return convert


def native_quick_bind(lua_module: Any, runtime: Any, state: int) -> Any | None:
    """The state's ``bind(obj, id(obj))`` of quick host calls, or None (see the
    module docstring for when): a Lua function making a C closure that calls
    ``obj`` with no lupa call in between and returns nothing when ``obj``
    answers NotImplemented or raises (``_fastconvert.c``, quick host calls).
    Only trusted host Lua code (script_env.lua) gets it: the address must be
    the object's."""
    found = _module_and_lock(lua_module, runtime)
    if found is None:
        return None
    module, lock = found
    globals_table = runtime.globals()
    try:
        module.install_quick_bind(state=state, lupa_lock=lock, global_key=_QUICK_KEY)
        return globals_table[_QUICK_KEY]
    finally:
        globals_table[_QUICK_KEY] = None


def quick_pairs(targets: list[Any], bound: bool) -> list[Any]:
    """(quick, id(quick)) or (False, 0) per target: its ``quick`` method (C, of
    ``moonbus.shared._fastint``) when the engine binds quick host calls, which
    script_env.lua calls with no lupa call in between (``_fastconvert.c``)."""
    pairs: list[Any] = []
    for target in targets:
        quick = getattr(target, "quick", None) if bound else None
        pairs += (False, 0) if quick is None else (quick, id(quick))
    return pairs
