"""The one loader of moonbus's optional C fast paths, and their switch.

``pip install`` compiles five small C extensions (``moonbus.bus._fastemit``:
the common case of ``Bus.emit`` and the delivery gate's counter;
``moonbus.lua._fastcall``: event delivery into Lua handlers and the deferred
queue; ``moonbus.lua._fastconvert``: host data (lists and dicts a host API
returns) copied into Lua; ``moonbus.shared._fastint``: the memory backend's int operations as
Lua calls them; ``moonbus.lua._arena``: script engines' small Lua objects
in chunks of their own, on huge pages). Each has a pure-Python reference path that behaves the
same. Every module that has a fast path asks ``load_fast_path(name)`` for
its extension and gets a ``FastPath``: the module, or None and the reason
it is off:

- not built (no C compiler at install time), or its import failed: the
  ImportError text;
- ``MOONBUS_PURE_PYTHON`` is set to anything but ``0`` (read at every call,
  so tests can switch it; a bus, an engine or a queue decides when it is
  made);
- a free-threaded interpreter with the GIL off (``sys._is_gil_enabled()``
  returns False): the C fast paths assume the GIL (they keep shared state
  in plain C fields), and importing them would make CPython re-enable the
  GIL with a warning. moonbus keeps the Python paths there instead.

State: the only thing kept between calls is Python's own import cache
(``sys.modules``; a failed import is retried, which costs little because
loaders run when a bus, an engine or a queue is built, never per event).
Nothing here is mutable module state.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = [
    "FAST_PATH_MODULES", "FREE_THREADED_REASON", "FastPath", "FastPathStatistics", "fast_paths",
    "free_threaded",
    "load_fast_path", "pure_python_forced",
]

# Every optional C extension of moonbus (what ``fast_paths`` reports).
FAST_PATH_MODULES = ("moonbus.bus._fastemit", "moonbus.lua._fastcall", "moonbus.lua._fastconvert",
                     "moonbus.shared._fastint", "moonbus.lua._arena")
FREE_THREADED_REASON = "free-threaded interpreter: the C fast paths assume the GIL"


@dataclass(frozen=True)
class FastPath:
    """Whether one C extension is used: ``module`` when on, else None and ``reason``."""

    name: str
    module: ModuleType | None
    reason: str = ""

    @property
    def on(self) -> bool:
        return self.module is not None


@dataclass(frozen=True)
class FastPathStatistics:
    """What the C fast paths of one runtime took and handed back to Python.

    ``emits_taken``: ``Bus.emit`` calls the C emit core did itself;
    ``emits_handed_back``: calls it gave to the Python emit (an unknown type,
    nested data, a nested emit...). ``deliveries_taken``: events the C
    delivery into Lua settled itself; ``deliveries_handed_back``: events it
    gave to the Python path (data it cannot copy, an engine busy or closed).
    All 0 for a path that is off. A built path that hands back everything
    is broken, not slow: ``tests/test_fast_paths.py`` fails then.
    """

    emits_taken: int = 0
    emits_handed_back: int = 0
    deliveries_taken: int = 0
    deliveries_handed_back: int = 0

    @classmethod
    def of(cls, bus: Any, delivery_counts: Any) -> FastPathStatistics:
        """From a ``BusStatistics`` and the runtime's C ``DeliveryCounts`` (None
        when the C delivery is off). Duck-typed: this layer is below both."""
        return cls(
            emits_taken=bus.c_emits_taken, emits_handed_back=bus.c_emits_handed_back,
            deliveries_taken=getattr(delivery_counts, "taken", 0),
            deliveries_handed_back=getattr(delivery_counts, "handed_back", 0),
        )


def pure_python_forced() -> bool:
    """True when ``MOONBUS_PURE_PYTHON`` switches the C fast paths off."""
    return os.environ.get("MOONBUS_PURE_PYTHON", "") not in ("", "0")


def free_threaded() -> bool:
    """True on a free-threaded build running without the GIL."""
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    return is_gil_enabled is not None and not is_gil_enabled()


def load_fast_path(name: str, *, native: bool = True, env: bool = True) -> FastPath:
    """The C extension ``name`` (one of ``FAST_PATH_MODULES``) if it is to be
    used, else why not. ``native=False`` is the caller's own switch
    (``Runtime(native=False)``, ``Bus(native=False)``). ``env=False`` ignores
    ``MOONBUS_PURE_PYTHON``: for what a module needs at import time whenever
    the extension can be used at all (the C emit path's ``FrozenData`` type,
    the gate's counter), since the switch is read again per bus or engine."""
    if not native:
        return FastPath(name, None, "switched off by the caller (native=False)")
    if env and pure_python_forced():
        value = os.environ.get("MOONBUS_PURE_PYTHON", "")
        return FastPath(name, None, f"MOONBUS_PURE_PYTHON={value}")
    if free_threaded():
        return FastPath(name, None, FREE_THREADED_REASON)
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        return FastPath(name, None, f"{name} not importable: {exc}")
    return FastPath(name, module)


def fast_paths() -> list[FastPath]:
    """Every optional C extension and whether it is used now (``moonbus doctor``)."""
    return [load_fast_path(name) for name in FAST_PATH_MODULES]
