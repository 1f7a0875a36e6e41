"""Fixtures for driving the demo world from Python, as the script host's proxies do."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from moonbus.bus.event import to_jsonable
from moonbus.world import World


@dataclass(frozen=True)
class Recorded:
    type: str
    data: dict[str, Any]
    tick: int
    source: str


class Recorder:
    """Stands in for ``Bus.emit``: keeps every emitted event in order."""

    def __init__(self) -> None:
        self.events: list[Recorded] = []
        self._lock = threading.Lock()

    def __call__(self, type: str, data: Any, *, tick: int, source: str = "host") -> object:
        event = Recorded(type, dict(data), tick, source)
        with self._lock:
            self.events.append(event)
        return event

    def of(self, type: str) -> list[dict[str, Any]]:
        return [e.data for e in self.events if e.type == type]

    def types(self) -> list[str]:
        return [e.type for e in self.events if e.type != "tick"]

    def jsonable(self) -> list[tuple[str, Any, int, str]]:
        return [(e.type, to_jsonable(e.data), e.tick, e.source) for e in self.events]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def world(recorder: Recorder) -> World:
    return World(seed=7, emit=recorder)


@pytest.fixture
def apis(world: World) -> dict[str, Any]:
    return world.apis()


Until = Callable[[Callable[[], bool], int], int]


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
