"""The console latency suite: event -> web console in headless Chromium.

The measuring test needs the browser (skips with the reason outside CI, fails
under CI=true, like tests/browser); the skip paths run everywhere.
"""

from __future__ import annotations

import math
import os

import pytest

from moonbus.bench import _browser, console
from moonbus.bench._browser import Browser, find_browser


def _browser_or_skip() -> None:
    found = find_browser()
    if isinstance(found, str):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{found} (.ci/run installs chromium and chromium-driver)")
        pytest.skip(found)


@pytest.mark.slow
def test_quick_run_measures_every_event_in_the_browser() -> None:
    _browser_or_skip()
    pytest.importorskip("uvicorn", reason="the http extra: pip install 'moonbus[http]'")
    [row] = console.run(quick=True)
    assert row.name == console.NAME and row.area == "http" and row.unit == "ms"
    assert row.skipped is None, row.note
    assert math.isfinite(row.value) and row.value >= 0
    assert row.ok in (True, False)  # the target is shown, never asserted here
    assert "of 2000 events received" in row.note and row.note.startswith("p50 ")


def test_a_missing_browser_skips_the_row_with_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    monkeypatch.setenv("MOONBUS_CHROMIUM", os.path.join(tmp_path, "no-such-chromium"))
    [row] = console.run(quick=True)
    assert row.name == console.NAME and math.isnan(row.value) and row.ok is None
    assert row.skipped is not None and "apt-get install chromium" in row.skipped


def test_find_browser_names_each_missing_piece(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    monkeypatch.setenv("MOONBUS_CHROMIUM", os.path.join(tmp_path, "none"))
    monkeypatch.setenv("MOONBUS_CHROMEDRIVER", os.path.join(tmp_path, "none"))
    assert find_browser() == "no headless browser: apt-get install chromium chromium-driver"
    real_find_spec = _browser.importlib.util.find_spec
    monkeypatch.setattr(_browser.importlib.util, "find_spec",
                        lambda name, *a: None if name == "selenium" else real_find_spec(name, *a))
    assert find_browser() == "selenium missing: pip install selenium"


def test_find_browser_takes_the_binaries_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOONBUS_CHROMIUM", "/bin/true")
    monkeypatch.setenv("MOONBUS_CHROMEDRIVER", "/bin/false")
    if isinstance(find_browser(), str) and "selenium" in str(find_browser()):
        pytest.skip("selenium missing")
    assert find_browser() == Browser("/bin/true", "/bin/false")
