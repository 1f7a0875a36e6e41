"""Headless Chromium for the console's latency row and its browser tests.

One place that knows how to find Debian's ``chromium`` and ``chromedriver``
(``apt-get install chromium chromium-driver``; ``.ci/run`` installs them) and
how to start them with Selenium, so the benchmark and tests/browser start the
browser the same way. ``MOONBUS_CHROMIUM`` and ``MOONBUS_CHROMEDRIVER`` point
at other binaries.

Selenium comes with the ``dev`` extra; it is imported only inside
``open_chromium``, so importing this module costs nothing on a plain install.

Threads: the driver is used by the thread that opened it only.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

__all__ = ["Browser", "find_browser", "open_chromium"]

WINDOW_SIZE = "1400,1000"


@dataclass(frozen=True)
class Browser:
    """Where the browser and its driver are."""

    chromium: str
    chromedriver: str


def find_browser() -> Browser | str:
    """The Chromium and chromedriver to use, or why they cannot be used (a
    reason that says what to install)."""
    if importlib.util.find_spec("selenium") is None:
        return "selenium missing: pip install selenium"
    chromium = (os.environ.get("MOONBUS_CHROMIUM") or shutil.which("chromium")
                or shutil.which("chromium-browser"))
    driver = os.environ.get("MOONBUS_CHROMEDRIVER") or shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromium-driver", driver))
               if not path or not os.access(path, os.X_OK)]
    if missing or chromium is None or driver is None:
        return f"no headless browser: apt-get install {' '.join(missing)}"
    return Browser(chromium, driver)


def open_chromium(browser: Browser) -> WebDriver:
    """Start headless Chromium through chromedriver. ``--no-sandbox`` because CI
    runs as root, where Chromium refuses its sandbox; the page under test is our
    own console on 127.0.0.1. Browser console messages are kept (the tests read
    them for script errors and Content-Security-Policy violations)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser.chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--disable-extensions",
                     "--no-first-run", f"--window-size={WINDOW_SIZE}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(browser.chromedriver), options=options)
