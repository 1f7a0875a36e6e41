"""Fixtures for the console's real-browser tests: one ``moonbus serve --http``
process with the two demo scripts, one headless Chromium, both for the whole
folder (starting them is most of the folder's time).

Outside CI the tests skip with the reason when Chromium, chromedriver,
Selenium or the ``http`` extra is missing; under ``CI=true`` a missing piece
fails (``.ci/run`` installs Debian's ``chromium`` and ``chromium-driver``).

Screenshots go to ``test-artifacts/browser/`` at the repository root (ignored
by git; ``MOONBUS_TEST_ARTIFACTS`` moves it), so CI can keep them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import moonbus
from moonbus.bench._browser import Browser, find_browser, open_chromium

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TOKEN = "browser-test-token-5f2c"
SCRIPTS = ("mining", "chat_monitor")
PROBE = Path(__file__).with_name("html_probe.lua")  # shows HTML everywhere: must stay text
START_TIMEOUT = 30.0


def missing(reason: str) -> None:
    """Skip with ``reason``; under CI=true fail instead (also at module level)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run the browser tests; .ci/run installs them)",
                    pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@dataclass
class Served:
    """The running ``moonbus serve`` process and where its console is."""

    process: subprocess.Popen[bytes]
    base: str  # "http://127.0.0.1:PORT/"
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def browser() -> Browser:
    found = find_browser()
    if isinstance(found, str):
        missing(found)
    assert isinstance(found, Browser)
    return found


def launch(directory: Path, scripts: list[Path], port: int = 0) -> Served:
    """Start ``moonbus serve SCRIPTS --http 127.0.0.1:PORT`` (the events in
    ``directory/events.db``) and wait until it prints its URL."""
    for module in ("starlette", "uvicorn", "sse_starlette"):
        if importlib.util.find_spec(module) is None:
            missing(f"{module} missing: pip install 'moonbus[http]'")
    log = directory / "serve.log"
    env = {
        **os.environ,
        # the subprocess runs the moonbus this test imported (a worktree's src, too)
        "PYTHONPATH": os.pathsep.join(
            [str(Path(moonbus.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    command = [
        sys.executable, "-m", "moonbus", "serve", *map(str, scripts),
        "--http", f"127.0.0.1:{port}", "--http-token", TOKEN, "--tick-ms", "100",
        "--events-db", str(directory / "events.db"),
    ]
    with open(log, "wb") as out:  # a file, not a pipe: the server never blocks on it
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   cwd=directory)
    served = Served(process, "", log)
    deadline = time.monotonic() + START_TIMEOUT
    match = None
    while match is None and time.monotonic() < deadline and process.poll() is None:
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", served.output())
        time.sleep(0.05)
    if not match:
        stop(served)
        pytest.fail(f"moonbus serve --http printed no URL:\n{served.output()}")
    served.base = f"http://127.0.0.1:{match.group(1)}/"
    return served


def stop(served: Served) -> None:
    """SIGTERM (scripts stop, the store is flushed), then kill if it hangs."""
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
        try:
            served.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The two demo scripts and the HTML probe, for the whole folder."""
    server = launch(tmp_path_factory.mktemp("serve"),
                    [*(EXAMPLES / f"{name}.lua" for name in SCRIPTS), PROBE])
    try:
        yield server
    finally:
        stop(server)


@pytest.fixture(scope="session")
def driver(browser: Browser) -> Iterator[Any]:
    chrome = open_chromium(browser)
    chrome.set_page_load_timeout(15)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(os.environ.get("MOONBUS_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def screenshot(
    driver: Any, artifacts: Path, request: pytest.FixtureRequest
) -> Callable[[str], Path]:
    """``screenshot(label)`` saves the page as ``<test>-<label>.png`` in the artifacts."""

    def take(label: str) -> Path:
        path = artifacts / f"{request.node.name}-{label}.png"
        driver.save_screenshot(str(path))
        return path

    return take


@pytest.fixture
def page(driver: Any, served: Served) -> Iterator[Any]:
    """A fresh console tab state: logged out, sessionStorage empty, filter clear."""
    driver.get(served.base)
    driver.execute_script("window.sessionStorage.clear()")
    driver.get("about:blank")
    yield driver
    if served.process.poll() is not None:
        pytest.fail(f"moonbus serve exited with {served.process.returncode}:\n{served.output()}")
