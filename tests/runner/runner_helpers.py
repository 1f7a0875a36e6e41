"""Helpers shared by the runner tests (imported by name: the test folder is on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable

from moonbus.runner import JobFuture
from moonbus.runner.future import Phase

# A job that runs until it is aborted (timeout or cancel).
SPIN = "while true do end"


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` is true (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


def wait_in_lua(future: JobFuture) -> None:
    """Wait until the job's Lua call is running."""
    wait_for(lambda: future.phase is Phase.IN_LUA)
