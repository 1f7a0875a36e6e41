"""A pytest plugin for testing Lua scripts: the ``moonbus_sim`` fixture.

Installed with moonbus, it is registered through the ``pytest11`` entry
point, so a project that depends on moonbus gets the fixture in every test
without configuration (``pytest -p moonbus.testing`` or
``pytest_plugins = ["moonbus.testing"]`` load it explicitly). See
docs/testing.md for a worked example.

``moonbus_sim`` is a factory: ``sim = moonbus_sim(app=None, seed=0)`` builds
a ``Sim`` (``moonbus.testing.sim``: a stepped world in virtual time, the
demo world by default) and closes it at the end of the test. Several sims
in one test are independent.

``Sim`` itself needs no pytest: ``from moonbus.testing.sim import Sim``.
Installed as a pytest plugin, this module is imported by every pytest run of
the project, so it imports the runtime (and lupa) only when a test asks for
a sim.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from moonbus.testing.sim import Sim

__all__ = ["Sim", "SimFactory", "moonbus_sim"]


class SimFactory(Protocol):
    """The ``moonbus_sim`` fixture's type: call it to get a fresh ``Sim``."""

    def __call__(
        self,
        app: Any = None,
        *,
        seed: int = 0,
        tick_seconds: float = 0.6,
        event_delivery: str = "immediate",
        root: str | Path | None = None,
    ) -> Sim: ...


@pytest.fixture
def moonbus_sim() -> Iterator[SimFactory]:
    """Build ``Sim``\\ s for this test (``moonbus_sim(app=None, seed=0)``);
    each is closed (scripts stopped, ``on_stop`` run) when the test ends."""
    sims: list[Sim] = []

    def make(
        app: Any = None,
        *,
        seed: int = 0,
        tick_seconds: float = 0.6,
        event_delivery: str = "immediate",
        root: str | Path | None = None,
    ) -> Sim:
        from moonbus.testing.sim import Sim

        sim = Sim(app, seed=seed, tick_seconds=tick_seconds, event_delivery=event_delivery,
                  root=root)
        sims.append(sim)
        return sim

    try:
        yield make
    finally:
        for sim in reversed(sims):
            sim.close()


def __getattr__(name: str) -> Any:
    """``from moonbus.testing import Sim`` without importing the runtime at plugin load."""
    if name == "Sim":
        from moonbus.testing.sim import Sim

        return Sim
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
