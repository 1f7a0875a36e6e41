"""Event → web console latency: how long after ``emit`` the console page in a
real browser has the event (SPEC §11, issue 14).

One row: p99 of (browser receipt time - event ``ts``) with events emitted at
1,000 events/s into a Runtime serving HTTP (``Runtime.serve_http``, port 0),
while headless Chromium shows the console (``GET /``, logged in through the
``#token=`` link). The console's own fetch()-based SSE reader stamps each
event on arrival (``window.moonbusConsole.latencies()``, in ms); that is the
whole path an operator sees: bus commit → SSE stream → HTTP → the page's
parser. Browser and server share the machine's clock; ``ts`` is whole
milliseconds, so a figure can read up to 1 ms high.

The emitting loop sleeps between events, as a game loop does between ticks
(a spinning loop would hold the GIL that the in-process server needs). The
first ``_WARMUP`` events open the stream and are not counted.

Needs the ``http`` extra, Selenium (``dev`` extra) and Debian's ``chromium``
and ``chromium-driver``; without them the row is skipped with the reason.

Threads: ``run`` emits from the calling thread; the HTTP server runs on its
own threads and is stopped (with the Runtime) before ``run`` returns.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from moonbus.bench._browser import Browser, find_browser, open_chromium
from moonbus.bench.harness import BenchRow, missing_peer, skipped_row
from moonbus.runner.stats import percentile
from moonbus.runtime import Runtime

__all__ = ["run"]

AREA = "http"
NAME = "event -> console in Chromium, p99 at 1,000 events/s"
UNIT = "ms"
RATE = 1000.0
TARGET_MS = 100.0
TARGET = f"p99 <= {TARGET_MS:.0f} ms, none lost"
_WARMUP = 200
_WAIT = 30.0  # s: the page going live, and the last event arriving


def run(quick: bool) -> list[BenchRow]:
    """The one latency row (skipped with the reason when a piece is missing)."""
    for module in ("starlette", "uvicorn", "sse_starlette"):
        reason = missing_peer(module, "'moonbus[http]'")
        if reason is not None:
            return [skipped_row(AREA, NAME, UNIT, reason, target=TARGET)]
    browser = find_browser()
    if isinstance(browser, str):
        return [skipped_row(AREA, NAME, UNIT, browser, target=TARGET)]
    return [_measure(browser, 2_000 if quick else 10_000)]


def _wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _WAIT
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"console latency benchmark: {what} within {_WAIT:.0f} s")
        time.sleep(0.02)


def _emit_paced(rt: Runtime, count: int, first: int) -> None:
    interval = 1.0 / RATE
    next_at = time.perf_counter()
    for i in range(first, first + count):
        pause = next_at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        rt.bus.emit("bench:console", {"i": i})
        next_at += interval


def _measure(browser: Browser, count: int) -> BenchRow:
    token = secrets.token_urlsafe(24)
    with Runtime() as rt:
        server = rt.serve_http(host="127.0.0.1", port=0, token=token)
        driver = open_chromium(browser)
        try:
            driver.get(server.console_url)

            def received() -> int:
                return int(driver.execute_script("return window.moonbusConsole.received()"))

            _wait_for("the console going live", lambda: driver.execute_script(
                "return document.getElementById('conn-status').dataset.state") == "live")
            _emit_paced(rt, _WARMUP, 0)
            _wait_for("the warm-up events arriving", lambda: received() >= _WARMUP)
            driver.execute_script("window.moonbusConsole.resetLatencies()")
            before = received()
            _emit_paced(rt, count, _WARMUP)
            deadline = time.monotonic() + _WAIT
            while received() - before < count and time.monotonic() < deadline:
                time.sleep(0.05)
            samples = sorted(float(x) for x in driver.execute_script(
                "return window.moonbusConsole.latencies()"))
        finally:
            driver.quit()
    lost = count - len(samples)
    p99 = percentile(samples, 0.99)
    p50 = percentile(samples, 0.50)
    if p99 is None or p50 is None:
        raise RuntimeError("console latency benchmark: no event reached the browser")
    note = (f"p50 {p50:.1f} ms, max {samples[-1]:.1f} ms, {len(samples)} of {count} events "
            f"received, lost {lost}; headless Chromium, fetch() SSE reader")
    return BenchRow(AREA, NAME, p99, UNIT, TARGET, ok=p99 <= TARGET_MS and lost == 0, note=note)
