"""Fixtures for driving the demo world from Python, as the script host's proxies do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from world_support import Recorder, Until

from moonbus.world import World


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def world(recorder: Recorder) -> World:
    return World(seed=7, emit=recorder)


@pytest.fixture
def apis(world: World) -> dict[str, Any]:
    return world.apis()


@pytest.fixture
def step_until(world: World) -> Until:
    """Step the world until ``done()`` holds; fail after ``limit`` ticks. Returns ticks taken."""

    def run(done: Callable[[], bool], limit: int = 500) -> int:
        for n in range(1, limit + 1):
            world.step()
            if done():
                return n
        raise AssertionError(f"condition not reached within {limit} ticks")

    return run
