"""For test modules that run every scenario on both delivery paths (C and
pure Python) themselves: a ``delivery_path`` fixture that overrides conftest's
(import it with ``from tests.host.both_paths import delivery_path``; it is
autouse), and a settable clock for stepped runtimes."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def delivery_path(monkeypatch: pytest.MonkeyPatch) -> str:
    """Overrides conftest's: each test here runs both paths itself."""
    monkeypatch.delenv("MOONBUS_PURE_PYTHON", raising=False)
    return "both"


class Clock:
    """A stepped runtime's clock: reads ``now``, which the test sets."""

    now = 0.0

    def __call__(self) -> float:
        return self.now
