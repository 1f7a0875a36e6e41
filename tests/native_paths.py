"""One fixture factory for suites that must pass on the C fast paths and on the
pure-Python reference paths alike (see ``moonbus.native``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest


def both_paths(native_built: bool) -> Callable[..., str]:
    """An autouse fixture running each test once per path: "native" (when the
    extension is built) and "python" (``MOONBUS_PURE_PYTHON=1`` for the test)."""

    @pytest.fixture(autouse=True, params=["native", "python"] if native_built else ["python"])
    def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
        chosen: str = request.param
        if chosen == "python":
            monkeypatch.setenv("MOONBUS_PURE_PYTHON", "1")
        return chosen

    return path
