"""Fixtures for the bus tests.

Every bus test runs twice: on the C fast path of ``emit`` (when it is built)
and on the pure-Python reference path, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.native_paths import both_paths

from moonbus.bus import Bus
from moonbus.bus.core import native_available

emit_path = both_paths(native_available())  # which emit path this test's buses use


@pytest.fixture
def bus() -> Iterator[Bus]:
    """A fresh bus, closed after the test."""
    with Bus() as b:
        yield b
