"""Fixtures for the runner tests: fresh factories and runners, closed after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from moonbus.lua.sandbox import SandboxFactory
from moonbus.runner import Runner


@pytest.fixture
def factory() -> Iterator[SandboxFactory]:
    made = SandboxFactory()
    yield made
    made.close()


@pytest.fixture
def runner(factory: SandboxFactory) -> Iterator[Runner]:
    made = Runner(workers=2, factory=factory)
    yield made
    made.close(cancel_pending=True)


@pytest.fixture
def runner1(factory: SandboxFactory) -> Iterator[Runner]:
    """One worker: every job runs on the same engine, one after the other."""
    made = Runner(workers=1, factory=factory)
    yield made
    made.close(cancel_pending=True)
