"""Fixtures for script-host tests: runtimes in stepped (virtual clock) and threaded mode.

Every host test runs twice: with event delivery into Lua on the C fast path
(when it is built) and on the pure-Python reference path.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import lupa.lua54 as lua54
import pytest
from tests.native_paths import both_paths

from moonbus.lua.fastcall import native_available
from moonbus.runtime import LogLine, Runtime

delivery_path = both_paths(native_available())  # which path this test's scripts use


class VirtualClock:
    """A clock the test advances by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Stepped:
    """A stepped runtime plus helpers to write scripts and advance time."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = VirtualClock()
        self.rt = Runtime(threaded=False, clock=self.clock)
        self.logs: list[LogLine] = []
        self.rt.add_log_sink(self.logs.append)
        self._dir = tmp_path
        self._n = 0

    def script(self, text: str, name: str = "s", **kwargs: object):  # type: ignore[no-untyped-def]
        self._n += 1
        path = self._dir / f"{name}.lua"
        path.write_text(text, encoding="utf-8")
        return self.rt.load(path, **kwargs)  # type: ignore[arg-type]

    def advance(self, seconds: float, step: float = 0.05) -> None:
        """Advance virtual time, running due work at every step."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.rt.run_due(self.clock.now)
            self.clock.now = round(self.clock.now + step, 6)
        self.rt.run_due(self.clock.now)

    def messages(self, level: str | None = None) -> list[str]:
        return [line.msg for line in self.logs if level is None or line.level == level]


@pytest.fixture
def stepped(tmp_path: Path) -> Iterator[Stepped]:
    env = Stepped(tmp_path)
    try:
        yield env
    finally:
        env.rt.close()


@pytest.fixture
def threaded() -> Iterator[Runtime]:
    rt = Runtime(threaded=True, workers=2)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def quiet_collector() -> Iterator[None]:
    """CPython's cycle collector off for the test, after collecting what
    earlier tests left: for tests that time a handler or price a delivery by
    the event thread's CPU. Closed runtimes' Lua states are freed by the
    collector (their engines sit in reference cycles), and a full pass over
    the suite's leftovers took 100-265 ms (a gen-2 pass of a full run, 2
    cores), on whatever thread happened to trigger it: inside a handler it
    read as a time limit exceeded, on the event thread as costly deliveries
    that pacing declined to wait for. Neither is what these tests test."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def lua_states() -> int:
    """How many lupa runtimes (Lua states) are alive in the process."""
    return sum(1 for o in gc.get_objects() if type(o) is lua54.LuaRuntime)


@pytest.fixture
def collector_off() -> Iterator[int]:
    """CPython's cycle collector off (after a full pass), for tests that check
    that closing frees Lua states at once; yields the states alive before."""
    gc.collect()
    gc.disable()
    try:
        yield lua_states()
    finally:
        gc.enable()
