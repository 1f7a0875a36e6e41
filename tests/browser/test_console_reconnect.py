"""The console rides out a server restart: its streams reconnect with
``Last-Event-ID`` and the server resumes from its event store, so the feed has
no gap; the token kept for the tab still works (no second login)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import EXAMPLES, launch, missing, stop

try:
    from selenium.webdriver.common.by import By
except ImportError:
    missing("selenium missing: pip install selenium")

from tests.browser.pages import feed_seqs, login, newest_seq, wait


def _state(driver: Any) -> str:
    return str(driver.find_element(By.ID, "conn-status").get_attribute("data-state"))


@pytest.mark.slow  # two server starts and a SIGTERM stop: about 8 s
def test_a_restarted_server_is_followed_with_no_gap_in_the_feed(
    driver: Any, tmp_path: Path
) -> None:
    scripts = [EXAMPLES / "mining.lua"]
    first = launch(tmp_path, scripts)
    second = None
    try:
        login(driver, first)
        wait(driver).until(lambda d: len(feed_seqs(d)) >= 5)
        stop(first)  # SIGTERM: the open streams end
        wait(driver, 30).until(lambda d: _state(d) != "live")
        seen = newest_seq(driver)
        port = int(first.base.rstrip("/").rsplit(":", 1)[1])
        second = launch(tmp_path, scripts, port=port)  # same port, same events.db
        wait(driver, 30).until(lambda d: _state(d) == "live")
        wait(driver).until(lambda d: newest_seq(d) >= seen + 10)
        seqs = feed_seqs(driver)
        assert seqs == list(range(seqs[0], seqs[0] - len(seqs), -1)), seqs
        assert seqs[-1] < seen < seqs[0]  # the feed spans the restart
        assert not driver.find_element(By.ID, "login").is_displayed()
        assert driver.find_element(By.CSS_SELECTOR,
                                   'tr[data-script="mining"] td[data-test="status"]').text \
            == "running"
    finally:
        stop(first)
        if second is not None:
            stop(second)
