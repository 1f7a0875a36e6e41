"""What the browser tests read off the console page (explicit waits only).

Import after checking that Selenium is there (``conftest.missing``)."""

from __future__ import annotations

from typing import Any

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import TOKEN, Served

WAIT = 10.0

def wait(driver: Any, timeout: float = WAIT) -> WebDriverWait[Any]:
    return WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=[StaleElementReferenceException])


def login(driver: Any, served: Served) -> None:
    driver.get(f"{served.base}#token={TOKEN}")
    wait(driver).until(ec.visibility_of_element_located((By.ID, "console")))
    wait(driver).until(lambda d: d.find_element(By.ID, "conn-status").get_attribute("data-state")
                       == "live")


def status(driver: Any, script: str) -> str:
    return str(driver.find_element(
        By.CSS_SELECTOR, f'tr[data-script="{script}"] td[data-test="status"]').text)


def newest_seq(driver: Any) -> int:
    return int(driver.execute_script(
        "const li = document.querySelector('#feed li'); return li ? Number(li.dataset.seq) : 0"))


def feed_seqs(driver: Any) -> list[int]:
    """The feed's seqs, newest first."""
    return [int(x) for x in driver.execute_script(
        "return Array.from(document.querySelectorAll('#feed li'), li => li.dataset.seq)")]


def feed_types(driver: Any) -> list[str]:
    return list(driver.execute_script(
        "return Array.from(document.querySelectorAll('#feed li'), li => li.dataset.type)"))


def texts(driver: Any, selector: str) -> list[str]:
    """The text of every element matching ``selector``, read in one script (the
    log tail and shared values are redrawn whole, so elements found earlier
    may be gone by the time they are read)."""
    return list(driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent)",
        selector))


def attributes(driver: Any, selector: str, name: str) -> list[str | None]:
    """Attribute ``name`` of every element matching ``selector``, read in one script."""
    return list(driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]),"
        " e => e.getAttribute(arguments[1]))", selector, name))
