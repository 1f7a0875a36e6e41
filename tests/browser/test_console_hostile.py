"""The console against a script that writes what a hostile script would: an
event type that is markup, NaN/Infinity in event data and stats. Before the
fix such events went out on the live stream as ``"v":NaN``, which JSON.parse
refuses, and the console dropped them silently (branch h14-attack)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Served, launch, missing, stop

try:
    from selenium.webdriver.common.by import By
except ImportError:
    missing("selenium missing: pip install selenium")

from tests.browser.pages import login, texts, wait

PROBE = Path(__file__).with_name("hostile_probe.lua")
TYPE = "<svg/onload=window.__moonbusPwned=1>"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = launch(tmp_path_factory.mktemp("hostile"), [PROBE])
    try:
        yield server
    finally:
        stop(server)


def test_events_with_markup_types_and_nan_data_show_in_the_feed_as_text(
        driver: Any, hostile: Served) -> None:
    driver.get(hostile.base)
    driver.execute_script("window.sessionStorage.clear()")
    login(driver, hostile)
    selector = "#feed li .ev-type"
    wait(driver).until(lambda d: TYPE in texts(d, selector))
    data = texts(driver, "#feed li .ev-data")
    assert any('"v":"NaN"' in t and '"w":"Infinity"' in t for t in data), data[:3]
    stats = texts(driver, 'tr[data-script="hostile_probe"] td[data-test="stats"]')
    assert stats == ["ratio: NaN"]
    assert driver.find_elements(By.CSS_SELECTOR, "main svg") == []
    assert driver.execute_script("return window.__moonbusPwned === undefined")
    driver.execute_script("window.sessionStorage.clear()")
