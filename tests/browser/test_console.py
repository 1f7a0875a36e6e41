"""The web console in real headless Chromium against a real ``moonbus serve --http``
process running the two demo scripts (SPEC §11, issue 14).

Every wait is explicit (WebDriverWait on what the user would see); nothing
sleeps and then asserts. The one timed check is the issue's own: a new event
shows in the feed within a second.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import SCRIPTS, TOKEN, Served, missing

try:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select
except ImportError:
    missing("selenium missing: pip install selenium")

from tests.browser.pages import (
    attributes,
    feed_seqs,
    feed_types,
    login,
    newest_seq,
    status,
    texts,
    wait,
)


def api_get(served: Served, path: str) -> Any:
    request = urllib.request.Request(served.base + path,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(autouse=True)
def no_script_errors(driver: Any) -> Any:
    """After each test: the browser console holds no uncaught error and no
    Content-Security-Policy violation (the page must work under the server's CSP)."""
    driver.get_log("browser")  # drop what earlier tests left
    yield
    expected = re.compile(r"status of 40[14]")  # the wrong-token tests' refused requests
    problems = [entry["message"] for entry in driver.get_log("browser")
                if entry["level"] == "SEVERE" and not expected.search(entry["message"])]
    assert problems == []


def test_a_token_in_the_link_logs_in_and_leaves_the_address_bar(page: Any, served: Served) -> None:
    login(page, served)
    assert "token" not in page.current_url
    assert page.execute_script("return window.sessionStorage.getItem('moonbus.token')") == TOKEN
    assert not page.find_element(By.ID, "login").is_displayed()
    page.refresh()  # kept for the tab: no second login
    wait(page).until(ec.visibility_of_element_located((By.ID, "console")))
    assert not page.find_element(By.ID, "login").is_displayed()
    page.find_element(By.ID, "logout").click()
    wait(page).until(ec.visibility_of_element_located((By.ID, "login-form")))
    assert page.execute_script("return window.sessionStorage.getItem('moonbus.token')") is None


def test_a_wrong_token_in_the_link_shows_an_error(
    page: Any, served: Served, screenshot: Callable[[str], Path]
) -> None:
    page.get(f"{served.base}#token=not-the-token")
    error = wait(page).until(ec.visibility_of_element_located((By.ID, "login-error")))
    assert "refused this token" in error.text
    assert "token" not in page.current_url
    assert not page.find_element(By.ID, "console").is_displayed()
    assert page.execute_script("return window.sessionStorage.getItem('moonbus.token')") is None
    screenshot("wrong-token")


def test_the_login_form_refuses_a_wrong_token_then_takes_the_right_one(
    page: Any, served: Served
) -> None:
    page.get(served.base)
    field = wait(page).until(ec.visibility_of_element_located((By.ID, "token-input")))
    field.send_keys("wrong-token")
    page.find_element(By.ID, "login-submit").click()
    error = wait(page).until(ec.visibility_of_element_located((By.ID, "login-error")))
    assert "refused this token" in error.text
    page.find_element(By.ID, "token-input").send_keys(TOKEN)
    page.find_element(By.ID, "login-submit").click()
    wait(page).until(ec.visibility_of_element_located((By.ID, "console")))
    assert not page.find_element(By.ID, "login-error").is_displayed()


def test_both_demo_scripts_are_listed_running_with_stats(page: Any, served: Served) -> None:
    login(page, served)
    wait(page).until(lambda d: [r.get_attribute("data-script") for r in d.find_elements(
        By.CSS_SELECTOR, "#scripts-body tr")][:2] == list(SCRIPTS))
    for script in SCRIPTS:
        wait(page).until(lambda d, s=script: status(d, s) == "running")
    # polls and uptime come from /api/scripts, refreshed every second
    row = page.find_element(By.CSS_SELECTOR, 'tr[data-script="mining"]')
    uptime = 'tr[data-script="mining"] td[data-test="uptime"]'
    first = float(row.find_element(By.CSS_SELECTOR, 'td[data-test="uptime"]').text.split()[0])
    wait(page).until(
        lambda d: float(d.find_element(By.CSS_SELECTOR, uptime).text.split()[0]) > first)
    listed = {s["name"]: s for s in api_get(served, "api/scripts")["scripts"]}
    assert set(SCRIPTS) <= set(listed)


def test_stop_and_start_a_script_and_see_its_status_change(
    page: Any, served: Served, screenshot: Callable[[str], Path]
) -> None:
    login(page, served)
    row = 'tr[data-script="chat_monitor"]'
    wait(page).until(lambda d: status(d, "chat_monitor") == "running")
    page.find_element(By.CSS_SELECTOR, f'{row} button[data-action="stop"]').click()
    wait(page).until(lambda d: status(d, "chat_monitor") == "stopped")
    assert "chat_monitor" in page.find_element(By.ID, "action-message").text
    wait(page).until(ec.element_to_be_clickable((By.CSS_SELECTOR,
                                                  f'{row} button[data-action="start"]')))
    assert not page.find_element(By.CSS_SELECTOR, f'{row} button[data-action="stop"]').is_enabled()
    screenshot("stopped")
    page.find_element(By.CSS_SELECTOR, f'{row} button[data-action="start"]').click()
    wait(page).until(lambda d: status(d, "chat_monitor") == "running")
    assert {s["name"]: s["status"] for s in api_get(served, "api/scripts")["scripts"]}[
        "chat_monitor"] == "running"


def test_new_events_appear_in_the_feed_within_a_second(page: Any, served: Served) -> None:
    login(page, served)
    wait(page).until(lambda d: newest_seq(d) > 0)
    before = newest_seq(page)
    wait(page, 1.0).until(lambda d: newest_seq(d) > before)
    # what the feed shows is what the server committed
    seq, kind = feed_seqs(page)[0], feed_types(page)[0]  # the newest stays the newest shown
    committed = api_get(served, f"api/events?after_seq={seq - 1}&limit=1")["events"]
    assert [(e["seq"], e["type"]) for e in committed] == [(seq, kind)]
    seqs = feed_seqs(page)  # unfiltered: every committed event, none lost or doubled
    assert seqs == list(range(seqs[0], seqs[0] - len(seqs), -1)), seqs


def test_the_feed_filters_by_type(page: Any, served: Served) -> None:
    login(page, served)
    wait(page).until(lambda d: len(set(feed_types(d)) - {"tick"}) > 0)  # more than ticks arrive
    feed_filter = page.find_element(By.ID, "feed-filter")
    feed_filter.send_keys("tick")
    wait(page).until(lambda d: feed_types(d) and set(feed_types(d)) == {"tick"})
    before = newest_seq(page)
    wait(page).until(lambda d: newest_seq(d) > before)  # still live while filtered
    assert set(feed_types(page)) == {"tick"}
    feed_filter.clear()
    feed_filter.send_keys("tick*x")  # '*' only at the end: refused, the filter stays
    error = wait(page).until(ec.visibility_of_element_located((By.ID, "feed-filter-error")))
    assert "'*' only at the end" in error.text
    assert set(feed_types(page)) == {"tick"}
    feed_filter.clear()
    feed_filter.send_keys("*")
    wait(page).until(lambda d: len(set(feed_types(d)) - {"tick"}) > 0)
    assert not page.find_element(By.ID, "feed-filter-error").is_displayed()


def test_pause_holds_the_feed_and_resume_catches_up(page: Any, served: Served) -> None:
    login(page, served)
    wait(page).until(lambda d: newest_seq(d) > 0)
    page.find_element(By.ID, "feed-pause").click()
    held = newest_seq(page)
    note = page.find_element(By.ID, "feed-paused-note")
    wait(page).until(lambda d: int(re.search(r"(\d+) new", note.text).group(1)) >= 5)  # type: ignore[union-attr]
    assert newest_seq(page) == held
    assert page.find_element(By.ID, "feed-pause").get_attribute("aria-pressed") == "true"
    page.find_element(By.ID, "feed-pause").click()
    wait(page).until(lambda d: newest_seq(d) > held)
    assert not note.is_displayed()


def test_shared_values_of_the_selected_script(page: Any, served: Served) -> None:
    login(page, served)
    page.find_element(By.CSS_SELECTOR, 'tr[data-script="mining"] td[data-test="name"]').click()
    wait(page).until(lambda d: d.find_element(By.ID, "shared-script").text == "mining")
    trips = '#shared-values tr[data-key="trips"] td'  # the table is redrawn when a value changes
    wait(page).until(lambda d: re.fullmatch(r"\d+", "".join(texts(d, trips))))
    shared = api_get(served, "api/scripts/mining/shared")["shared"]
    wait(page).until(lambda d: set(attributes(d, "#shared-values tr", "data-key")) == set(shared))


def test_the_log_tail_filters_by_level(page: Any, served: Served) -> None:
    login(page, served)
    page.find_element(By.CSS_SELECTOR,
                      'tr[data-script="mining"] button[data-action="reload"]').click()
    line = '#log-tail li[data-script="mining"][data-level="info"]'
    wait(page).until(lambda d: any("starts mining" in t for t in texts(d, line)))
    level = Select(page.find_element(By.ID, "log-level"))
    level.select_by_value("error")
    wait(page).until(lambda d: not d.find_elements(By.CSS_SELECTOR, line))
    level.select_by_value("debug")
    wait(page).until(ec.presence_of_element_located((By.CSS_SELECTOR, line)))
    wait(page).until(lambda d: status(d, "mining") == "running")


def test_the_chart_counts_events_per_second(
    page: Any, served: Served, screenshot: Callable[[str], Path]
) -> None:
    login(page, served)
    chart = page.find_element(By.ID, "rate-chart")
    wait(page).until(lambda d: int(chart.get_attribute("data-last") or 0) > 0)
    assert re.fullmatch(r"\d+/s", page.find_element(By.ID, "rate-now").text)
    page.find_element(By.CSS_SELECTOR, 'tr[data-script="mining"] td[data-test="name"]').click()
    wait(page).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#shared-values tr")))
    shot = screenshot("console")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_event_feed_latency_is_recorded_per_event(page: Any, served: Served) -> None:
    login(page, served)
    wait(page).until(lambda d: d.execute_script("return window.moonbusConsole.received()") >= 5)
    samples = page.execute_script("return window.moonbusConsole.latencies()")
    assert len(samples) >= 5 and all(isinstance(s, (int, float)) for s in samples)


def test_script_written_html_is_shown_as_text(page: Any, served: Served) -> None:
    """Event data, stats, shared values and log lines are written by scripts:
    the console never turns them into markup (html_probe.lua writes an <img>
    whose onerror would set a global)."""
    login(page, served)
    page.find_element(By.CSS_SELECTOR, 'tr[data-script="html_probe"] td[data-test="name"]').click()
    page.find_element(By.ID, "feed-filter").send_keys("probe:*")
    probe = '<img src="x" onerror="window.__moonbusPwned = 1"><b>bold</b>'
    for selector in ('#feed li[data-type="probe:html"] .ev-data',
                     'tr[data-script="html_probe"] td[data-test="stats"]',
                     '#shared-values tr[data-key="html"] td',
                     '#log-tail li[data-script="html_probe"]'):
        wait(page).until(lambda d, s=selector: any("<img src=" in t for t in texts(d, s)))
    assert texts(page, '#shared-values tr[data-key="html"] td') == [probe]
    assert page.find_elements(By.CSS_SELECTOR, "main img, main b") == []
    assert page.execute_script("return window.__moonbusPwned === undefined")
