"""Which lupa moonbus supports, and the start-up check that it has what the
time limits need.

The time limits (``HookControl`` in ``hooks.py``) call ``lua_sethook`` and
``lua_gethook`` through ctypes on lupa's own extension module, and the C
delivery path (``_fastcall.c``) resolves Lua's C API there too: both depend
on lupa exporting Lua's C symbols from that module, which lupa does on Linux
(x86-64 and aarch64) with CPython 3.11+. A lupa that does not would make the
first time limit crash deep inside a call; ``check_lupa`` refuses it when a
``SandboxFactory`` is made instead, with what is missing and what is supported.
"""

from __future__ import annotations

import ctypes
from typing import Any

from moonbus.errors import ConfigError

__all__ = ["HOOK_SYMBOLS", "SUPPORTED_LUPA", "check_lupa"]

# The lupa releases CI tests (pyproject.toml pins the same range).
SUPPORTED_LUPA = "lupa>=2.8,<2.9 on Linux x86-64/aarch64, CPython 3.11+"
# What the time limits call through ctypes on lupa's module.
HOOK_SYMBOLS = ("lua_sethook", "lua_gethook")


def check_lupa(lua_module: Any) -> None:
    """Raise ``ConfigError`` unless ``lua_module`` (``lupa.lua54``...) can be
    loaded with ctypes and exports ``HOOK_SYMBOLS``."""
    name = getattr(lua_module, "__name__", repr(lua_module))
    path = getattr(lua_module, "__file__", None)
    try:
        lib = ctypes.CDLL(path)
    except (OSError, TypeError) as exc:
        raise ConfigError(
            f"{name} cannot be opened with ctypes ({exc}); the time limits need it. "
            f"Supported: {SUPPORTED_LUPA}"
        ) from exc
    missing = [symbol for symbol in HOOK_SYMBOLS if not hasattr(lib, symbol)]
    if missing:
        raise ConfigError(
            f"{name} does not export {', '.join(missing)}, which the time limits call; "
            f"supported: {SUPPORTED_LUPA}"
        )
