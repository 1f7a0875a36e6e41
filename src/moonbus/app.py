"""The host application behind ``moonbus run|serve|check --app MODULE:ATTR``.

The command line drives *a game*, not only the demo world (SPEC §8). A game
plugs in through two small interfaces:

* ``App``: what ``--app MODULE:ATTR`` names (the uvicorn/celery convention).
  It is a description and a factory, holding no run state (so a module-level
  ``app = MyApp()`` is not a mutable global): its ``name``, the event types
  it declares (``EventSpec``: name, ``events.EventType`` key, fields) and
  ``create(seed=..., bus=...)``, which builds one fresh world for one run.
* ``AppWorld``: that world. ``apis()`` gives the Lua globals to register
  (``@lua_api`` objects or plain data; each is checked by
  ``Runtime.register_api``); ``step()`` advances one tick and emits what
  happened on the bus it was given, a ``tick`` event (``{"tick": n}``,
  ``tick=n``) first, and returns the new tick; ``tick`` is the last tick
  completed (0 before the first step); ``status_line()`` is one line for the
  live panel; ``summary()`` is a JSON-ready picture of the world for the end
  of a run (``--summary`` writes it under ``"world"``), or ``None``.

Determinism: the world takes all chance from ``seed`` and never reads the
clock, so ``moonbus run --tick-ms 0`` with the same scripts, seed and ticks
gives the same summary. ``create`` must also be cheap and side-effect free
enough to be called by ``moonbus check`` (with a throwaway bus) just to learn
the world's API names.

Threads: ``step`` is called by one game-loop thread (the control thread in
virtual time); ``apis()`` objects are called by script threads and the event
thread at any time, so the world guards its state (the demo world holds one
lock and emits outside it: see ``moonbus.world.world``). ``status_line`` and
``summary`` are called from the control thread while the loop runs.

The demo world is the default app: ``moonbus.world.app:app``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from moonbus.bus import Bus
from moonbus.errors import ConfigError

__all__ = ["DEFAULT_APP", "App", "AppWorld", "EventSpec", "api_names_of", "event_type_table",
           "load_app", "probe_apis"]

#: What ``--app`` means when it is not given.
DEFAULT_APP = "moonbus.world.app:app"


@dataclass(frozen=True)
class EventSpec:
    """A declared event type: ``name`` as emitted, its ``events.EventType`` key, its fields.

    ``fields`` documents the payload (every event also carries ``tick``);
    ``key`` defaults to the upper-cased name (``"piece_moved"`` →
    ``EventType.PIECE_MOVED``).
    """

    name: str
    fields: tuple[str, ...] = ()
    key: str = ""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError(f"an event type needs a non-empty name, got {self.name!r}")
        if not self.key:
            object.__setattr__(self, "key", self.name.upper())


@runtime_checkable
class AppWorld(Protocol):
    """One run's world, built by ``App.create`` (see the module docstring)."""

    @property
    def tick(self) -> int: ...

    def apis(self) -> Mapping[str, Any]: ...

    def step(self) -> int: ...

    def status_line(self) -> str: ...

    def summary(self) -> Mapping[str, Any] | None: ...


@runtime_checkable
class App(Protocol):
    """What ``--app MODULE:ATTR`` names: a game's description and world factory."""

    @property
    def name(self) -> str: ...

    def event_types(self) -> Sequence[EventSpec]: ...

    def create(self, *, seed: int, bus: Bus) -> AppWorld: ...


def event_type_table(app: App) -> dict[str, str]:
    """``events.EventType`` for ``app``: its declared types, plus ``TICK`` always.

    ``ConfigError`` when two declarations share a key with different names.
    """
    table = {"TICK": "tick"}
    for spec in app.event_types():
        previous = table.get(spec.key)
        if previous is not None and previous != spec.name:
            raise ConfigError(
                f"app {app.name!r} declares EventType.{spec.key} twice "
                f"({previous!r} and {spec.name!r})"
            )
        table[spec.key] = spec.name
    return table


def probe_apis(app: App) -> dict[str, Any]:
    """The Lua globals ``app`` registers, from a world built (seed 0) on a
    throwaway, closed bus: for tools that read names and types only
    (``moonbus check``, ``moonbus stubs``), never to call."""
    with Bus() as bus:
        return dict(app.create(seed=0, bus=bus).apis())


def api_names_of(app: App) -> list[str]:
    """The Lua globals ``app`` registers, sorted (what ``moonbus check`` knows
    scripts may use)."""
    return sorted(probe_apis(app))


def load_app(spec: str | None) -> App:
    """Import ``MODULE:ATTR`` (``None``: the demo world) and check it is an ``App``.

    Like uvicorn, the current directory is searched first, so ``--app
    mygame:app`` finds ``./mygame.py``. ``ATTR`` may be dotted
    (``pkg.mod:factory.app``). Every failure is a ``ConfigError`` that says
    which part was wrong and what to write instead.
    """
    spec = DEFAULT_APP if spec is None else spec
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--app {spec!r}: write MODULE:ATTR, e.g. --app mygame:app")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--app {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"--app {spec!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    if isinstance(target, type):
        raise ConfigError(
            f"--app {spec!r} is the class {target.__name__}; name an instance of it "
            f"(e.g. app = {target.__name__}() in {module_name})"
        )
    if not isinstance(target, App):
        raise ConfigError(
            f"--app {spec!r} is a {type(target).__name__}, not an app: it needs a name, "
            "event_types() and create(seed=..., bus=...) (see moonbus.app.App)"
        )
    return target
