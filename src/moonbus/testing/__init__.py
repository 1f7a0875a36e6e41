"""The test kit for script authors: ``Sim`` and the ``moonbus_sim`` pytest fixture.

Installed with moonbus, this package is a pytest plugin registered through
the ``pytest11`` entry point, so a project that depends on moonbus gets the
fixture in every test without configuration (``pytest -p moonbus.testing``
or ``pytest_plugins = ["moonbus.testing"]`` load it explicitly). See
docs/testing.md for a worked example.

``moonbus_sim`` is a factory: ``sim = moonbus_sim(app=None, seed=0)`` builds
a ``Sim`` (``moonbus.testing.sim``: a stepped world in virtual time, the
demo world by default) and closes it at the end of the test.

``Sim`` needs no pytest: ``from moonbus.testing import Sim`` works in a game
or a script without it (the fixture is then simply not defined). As a pytest
plugin this package is imported by every pytest run of the project, so it
imports the runtime (and lupa) only when a ``Sim`` is asked for.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moonbus.testing.sim import Sim, SimFactory

__all__ = ["Sim", "SimFactory", "moonbus_replay", "moonbus_sim"]

if importlib.util.find_spec("pytest") is not None:
    from moonbus.testing.plugin import moonbus_replay, moonbus_sim


def __getattr__(name: str) -> Any:
    """``Sim`` and ``SimFactory`` without importing the runtime at plugin load."""
    if name in ("Sim", "SimFactory"):
        from moonbus.testing import sim

        return getattr(sim, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
