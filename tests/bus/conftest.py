"""Fixtures for the bus tests.

Every bus test runs twice: on the C fast path of ``emit`` (when it is built)
and on the pure-Python reference path, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from moonbus.bus import Bus
from moonbus.bus.core import native_available

_PATHS = ["native", "python"] if native_available() else ["python"]


@pytest.fixture(autouse=True, params=_PATHS)
def emit_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which emit path the buses made in this test use."""
    path: str = request.param
    if path == "python":
        monkeypatch.setenv("MOONBUS_PURE_PYTHON", "1")
    return path


@pytest.fixture
def bus() -> Iterator[Bus]:
    """A fresh bus, closed after the test."""
    with Bus() as b:
        yield b
