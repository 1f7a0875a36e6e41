"""Coalescing: work requested from any thread runs on one worker, requests coalesce."""

from __future__ import annotations

import threading

from moonbus.store.background import Coalescing


def test_requests_made_while_running_coalesce_into_one_more_run() -> None:
    started = threading.Event()
    release = threading.Event()
    runs: list[int] = []

    def work() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            started.set()
            release.wait(5)

    worker = Coalescing(work, name="test", on_error=lambda exc: None)
    try:
        worker.request()
        assert started.wait(5)
        for _ in range(5):  # while the first run is busy
            worker.request()
        release.set()
        worker.wait_idle()
        assert runs == [0, 1]
    finally:
        worker.close()


def test_errors_go_to_on_error_and_the_worker_carries_on() -> None:
    errors: list[Exception] = []
    calls = []

    def work() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")

    worker = Coalescing(work, name="test", on_error=errors.append)
    try:
        worker.request()
        worker.wait_idle()
        worker.request()
        worker.wait_idle()
        assert len(calls) == 2
        assert [str(e) for e in errors] == ["boom"]
    finally:
        worker.close()


def test_close_stops_the_thread_and_wakes_waiters() -> None:
    worker = Coalescing(lambda: None, name="test", on_error=lambda exc: None)
    worker.close()
    worker.close()
    worker.request()
    worker.wait_idle()  # returns at once: closed
    assert not worker._thread.is_alive()
