"""Ctrl-C during ``moonbus run``: the first one asks for a clean stop.

A ``KeyboardInterrupt`` raised at an arbitrary point could land inside a Lua
call or a world update and be counted as a script error. Instead, while a run
is in progress, SIGINT only sets the run's stop event: the loop ends after the
current tick and the scripts are stopped normally (``on_stop`` runs). A
second Ctrl-C raises ``KeyboardInterrupt`` for when a stop hangs.

Threads: signal handlers can only be installed from the main thread; from any
other thread (an embedding host, a test runner's worker) this does nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["stop_on_interrupt"]


@contextmanager
def stop_on_interrupt(stop: threading.Event, *, sigterm: bool = False) -> Iterator[None]:
    """Within the block, SIGINT sets ``stop`` (twice: ``KeyboardInterrupt``).

    With ``sigterm``, SIGTERM also sets ``stop`` (a service manager's clean stop).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    previous_term = signal.signal(signal.SIGTERM, on_term) if sigterm else None
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
