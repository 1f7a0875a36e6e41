"""Switching Lua's count hook on and off for one thread: how an abort stops Lua.

``LuaEngine.abort`` (see engine.py) arms a count hook of 1 on every Lua
thread of the running call; this is the one place that reaches
``lua_sethook`` for it, through ctypes on lupa's own extension module (which
exports Lua's C API: ``moonbus.lua.lupa_support.check_lupa`` refuses a lupa
that does not, before any engine is made). ``LUA_MASKCOUNT`` is fixed by
Lua 5.4's ``lua.h`` for every build (only ``LUA_REGISTRYINDEX`` depends on
how Lua was configured, and the C paths probe that, see ``_luaapi.h``).

Threads: ``arm`` and ``disarm`` are called under the engine's hook lock, from
the engine's owner thread or from the thread aborting it; ``lua_sethook`` is
documented as safe to call asynchronously.
"""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["HookControl"]

_LUA_MASKCOUNT = 8  # lua.h (5.4): 1 << LUA_HOOKCOUNT


class HookControl:
    """ctypes access to ``lua_sethook`` in one lupa extension module.

    ``hook_function`` is the address of ``hookf`` (the C trampoline of
    ``debug.sethook`` that calls the Lua hook registered for the thread),
    read once with ``lua_gethook`` after installing a throwaway hook.
    """

    def __init__(self, lua_module: Any) -> None:
        lib = ctypes.CDLL(lua_module.__file__)
        self._sethook = lib.lua_sethook
        self._sethook.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self._sethook.restype = None
        gethook = lib.lua_gethook
        gethook.argtypes = [ctypes.c_void_p]
        gethook.restype = ctypes.c_void_p
        probe = lua_module.LuaRuntime(register_eval=False, register_builtins=False)
        state = int(probe.execute('return string.format("%p", coroutine.running())'), 16)
        probe.execute('debug.sethook(function() end, "c")')
        hookf = gethook(state)
        probe.execute("debug.sethook()")
        if not hookf:
            raise RuntimeError("could not locate Lua's debug hook trampoline")
        self.hook_function: int = hookf

    def arm(self, state: int) -> None:
        """Make the Lua thread ``state`` raise on its next instruction."""
        self._sethook(state, self.hook_function, _LUA_MASKCOUNT, 1)

    def disarm(self, state: int) -> None:
        """Remove any hook from the Lua thread ``state``."""
        self._sethook(state, None, 0, 0)
