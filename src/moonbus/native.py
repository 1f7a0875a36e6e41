"""The switch for moonbus's optional C fast paths.

``pip install`` compiles four small C extensions (``moonbus.bus._fastemit``:
the common case of ``Bus.emit``; ``moonbus.lua._fastcall``: event delivery
into Lua handlers; ``moonbus.lua._fastconvert``: host data (lists and dicts a
host API returns) copied into Lua; ``moonbus.shared._fastint``: the memory backend's int
operations as Lua calls them). Each has a pure-Python reference path that
behaves the same, used when the extension is not built (no C compiler) or when the
environment variable ``MOONBUS_PURE_PYTHON`` is set to anything but ``0``
(read whenever a bus, a script engine or a shared int handle's C operations
are made, so tests can switch it).
"""

from __future__ import annotations

import os

__all__ = ["pure_python_forced"]


def pure_python_forced() -> bool:
    """True when ``MOONBUS_PURE_PYTHON`` switches the C fast paths off."""
    return os.environ.get("MOONBUS_PURE_PYTHON", "") not in ("", "0")
