"""Fixtures for the bus tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from moonbus.bus import Bus


@pytest.fixture
def bus() -> Iterator[Bus]:
    """A fresh bus, closed after the test."""
    with Bus() as b:
        yield b
