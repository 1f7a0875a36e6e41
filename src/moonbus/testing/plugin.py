"""The pytest half of ``moonbus.testing``: the ``moonbus_sim`` fixture.

Imported by ``moonbus.testing`` when pytest is installed (the plugin pytest
loads through the ``pytest11`` entry point or ``-p moonbus.testing``). The
runtime is imported only when a test asks for a sim, so a project whose
tests never use one pays nothing for the plugin being loaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from moonbus.testing.sim import Sim, SimFactory

__all__ = ["moonbus_replay", "moonbus_sim"]


@pytest.fixture
def moonbus_sim() -> Iterator[SimFactory]:
    """Build ``Sim``\\ s for this test (``moonbus_sim(app=None, seed=0)``);
    each is closed (scripts stopped, ``on_stop`` run) when the test ends."""
    from moonbus.testing.sim import Sim

    sims: list[Sim] = []

    def make(
        app: Any = None,
        *,
        seed: int = 0,
        tick_seconds: float = 0.6,
        event_delivery: str = "immediate",
        root: str | Path | None = None,
    ) -> Sim:
        sim = Sim(app, seed=seed, tick_seconds=tick_seconds, event_delivery=event_delivery,
                  root=root)
        sims.append(sim)
        return sim

    try:
        yield make
    finally:
        for sim in reversed(sims):
            sim.close()


@pytest.fixture
def moonbus_replay() -> Any:
    """``moonbus_replay(recording, scripts={name: path}, until=None)`` replays a
    recording file (``moonbus run --record``) in virtual time as a regression
    test: it returns the ``ReplayResult`` when the scripts behave as recorded,
    and fails the test with the divergence report (seq, tick, script,
    expected vs actual) when they do not. ``scripts`` swaps in the versions
    under test, e.g. the working copy of a script against a recording of a
    real session."""
    from moonbus.replay import replay

    def check(recording: str | Path, *, scripts: dict[str, str | Path] | None = None,
              until: int | None = None) -> Any:
        result = replay(recording, scripts=scripts, until=until)
        if not result.identical:
            pytest.fail(f"replay of {recording} diverged:\n{result.describe()}", pytrace=False)
        return result

    return check
