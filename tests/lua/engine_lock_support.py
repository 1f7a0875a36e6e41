"""What the engine-lock tests share: the C module (or a skip; under CI a
failure), the ``state`` fixture (a C CallState and its threading twin) and
running a call on another thread."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from moonbus.lua.call_state import PyCallState
from moonbus.lua.fastcall import FAST_CALL
from moonbus.native import load_fast_path

__all__ = ["fast_module", "held_elsewhere", "in_thread", "state"]


def fast_module() -> Any:
    """moonbus.lua._fastcall, or skip (fail under CI, which builds it)."""
    fast = load_fast_path(FAST_CALL)
    if fast.module is None:
        if os.environ.get("CI") == "true" and not os.environ.get("MOONBUS_PURE_PYTHON"):
            pytest.fail(f"CI builds the C fast paths, but {FAST_CALL} is off: {fast.reason}")
        pytest.skip(f"{FAST_CALL} off: {fast.reason}")
    return fast.module


@pytest.fixture(params=["c", "python"])
def state(request: pytest.FixtureRequest) -> Any:
    """A call state with C locks, and the pure-Python twin with threading's."""
    if request.param == "c":
        return fast_module().CallState()
    return PyCallState(lock=threading.RLock(), hook_lock=threading.Lock())


def in_thread(func: Any) -> Any:
    """func() run on a new thread (which must end within 10 s); its result."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(func()))
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return result[0]


@contextmanager
def held_elsewhere(lock: Any) -> Iterator[None]:
    """``lock`` held by another thread for the length of the block, then
    released there (that thread is joined)."""
    held, go = threading.Event(), threading.Event()

    def holder() -> None:
        lock.acquire()
        held.set()
        go.wait(10)
        lock.release()

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(5)
    try:
        yield
    finally:
        go.set()
        thread.join(5)
