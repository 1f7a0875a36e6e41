"""FutureCondition (the futures' lock + condition) and JobFuture's Future fields."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import pytest

from moonbus.runner.condition import FutureCondition
from moonbus.runner.future import JobFuture


def test_job_future_has_every_field_a_plain_future_has() -> None:
    plain, ours = cf.Future(), JobFuture()  # type: ignore[var-annotated]
    missing = set(vars(plain)) - set(vars(ours))
    assert not missing, f"JobFuture.__init__ misses Future fields: {missing}"
    assert ours._state == plain._state
    assert ours._waiters == [] and ours._done_callbacks == []


def test_wait_and_notify_need_the_lock() -> None:
    cond = FutureCondition()
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.wait(0)
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.notify()
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.notify_all()


def test_wait_times_out_and_leaves_no_waiter() -> None:
    cond = FutureCondition()
    with cond:
        assert cond.wait(0) is False
        assert cond.wait(0.01) is False
        assert not cond._waiters


def test_wait_releases_every_recursion_level_and_restores_them() -> None:
    cond = FutureCondition()
    woke = threading.Event()
    entered = threading.Event()

    def waiter() -> None:
        with cond, cond:  # held twice
            entered.set()
            assert cond.wait(5) is True
            assert cond._is_owned()
        woke.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert entered.wait(5)
    deadline = time.monotonic() + 5
    while True:  # the waiter must have released both levels for this to succeed
        if cond.acquire(timeout=0.01):
            if cond._waiters:
                break
            cond.release()
        assert time.monotonic() < deadline
    cond.notify_all()
    cond.release()
    thread.join(5)
    assert woke.is_set()


def test_notify_wakes_one_at_a_time() -> None:
    cond = FutureCondition()
    ready = threading.Semaphore(0)
    woken: list[int] = []

    def waiter(index: int) -> None:
        with cond:
            ready.release()
            if cond.wait(5):
                woken.append(index)

    threads = [threading.Thread(target=waiter, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert ready.acquire(timeout=5)
    deadline = time.monotonic() + 5
    while True:
        with cond:
            if cond._waiters is not None and len(cond._waiters) == 3:
                cond.notify()
                break
        assert time.monotonic() < deadline
        time.sleep(0.001)
    while sum(thread.is_alive() for thread in threads) > 2:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert len(woken) == 1
    with cond:
        cond.notify(5)  # more than are waiting: wakes the two left
    for thread in threads:
        thread.join(5)
    assert sorted(woken) == [0, 1, 2]


def test_job_future_result_waits_across_threads() -> None:
    fut = JobFuture()
    assert fut.claim()
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(fut.result(timeout=5)))
    reader.start()
    deadline = time.monotonic() + 5
    while not fut._condition._waiters:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert fut.finish() is False
    fut.set_result(42)
    reader.join(5)
    assert got == [42]
    with pytest.raises(cf.TimeoutError):
        JobFuture().result(timeout=0.01)
    done, pending = cf.wait([fut, JobFuture()], timeout=0.01)
    assert done == {fut} and len(pending) == 1
