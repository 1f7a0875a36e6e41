"""Helpers for the lifecycle containment tests: threaded runtimes with a
short lifecycle limit, a well-behaved companion script, and bounded waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from moonbus.host.context import HostSettings
from moonbus.host.script import ScriptHost
from moonbus.runtime import Runtime

# Polls every 10 ms and counts the "e" events its event engine receives.
COMPANION = """
function poll() shared:int("polls"):increment() return 10 end
events:on("e", function() shared:int("events"):increment() end)
"""


def runtime(event_delivery: str = "immediate", *, lifecycle: float = 0.5,
            workers: int = 2) -> Runtime:
    """A threaded runtime whose stop budget (the lifecycle limit) is ``lifecycle`` s."""
    return Runtime(
        threaded=True,
        workers=workers,
        settings=HostSettings(lifecycle_timeout=lifecycle),
        event_delivery=event_delivery,
    )


def load(rt: Runtime, tmp: Path, name: str, text: str) -> ScriptHost:
    path = tmp / f"{name}.lua"
    path.write_text(text, encoding="utf-8")
    host = rt.load(path)
    host.start()
    return host


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``check`` until it is true or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.01)
    return check()


def timed(action: Callable[[], object], bound: float) -> float:
    """Run ``action`` on a helper thread; fail the test (not hang it) if it
    has not returned within ``bound`` seconds. Returns the time it took."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            failure.append(exc)

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    took = time.monotonic() - start
    assert not thread.is_alive(), f"did not return within {bound} s"
    if failure:
        raise failure[0]
    return took


def companion_alive(rt: Runtime, companion: ScriptHost) -> bool:
    """The companion still polls and still receives events."""
    polls = companion.shared.int("polls").get()
    events = companion.shared.int("events").get()
    rt.bus.emit("e")
    rt.flush_events(5.0)
    return wait_until(
        lambda: companion.shared.int("polls").get() > polls
        and companion.shared.int("events").get() > events
    )
