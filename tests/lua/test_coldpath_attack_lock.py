"""Hostile review of the C engine locks (MbLock / EngineLock, issue 16).

Each test runs on the C CallState's locks and on the threading twin
(PyCallState), so anything that differs from threading is a finding.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
from tests.lua.engine_lock_support import held_elsewhere, in_thread

pytestmark = pytest.mark.timeout(30, method="thread")


def _free(lock: Any) -> bool:
    """Whether another thread can take it now (RLock has no locked() on 3.11)."""
    return bool(in_thread(lambda: lock.acquire(False) and (lock.release() or True)))


@pytest.mark.parametrize("name", ["lock", "hook_lock"])
def test_nan_timeout_is_refused_not_an_endless_wait(state: Any, name: str) -> None:
    # threading: ValueError (NaN). The C view casts NaN to PY_TIMEOUT_T (UB:
    # LLONG_MIN on x86, i.e. "wait for ever"): run in a thread so a hang fails.
    lock = getattr(state, name)
    holder = threading.Event()
    done = threading.Event()

    def hold() -> None:
        lock.acquire()
        holder.set()
        done.wait(15)
        lock.release()

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    assert holder.wait(5)
    outcome: list[Any] = []

    def try_nan() -> None:
        try:
            outcome.append(lock.acquire(True, float("nan")))
        except (ValueError, OverflowError) as exc:
            outcome.append(type(exc))

    w = threading.Thread(target=try_nan, daemon=True)
    w.start()
    w.join(3)
    hung = w.is_alive()
    done.set()
    t.join(5)
    w.join(5)
    assert not hung, "acquire(timeout=nan) waited for ever"
    assert outcome == [ValueError]


@pytest.mark.parametrize("name", ["lock", "hook_lock"])
def test_timeouts_are_honoured_and_leave_the_lock_usable(state: Any, name: str) -> None:
    lock = getattr(state, name)
    assert lock.acquire()
    results = []
    for timeout in (0.0, 0.01, 0.05):
        start = time.monotonic()
        results.append(in_thread(lambda t=timeout: lock.acquire(timeout=t)))
        assert time.monotonic() - start < 2.0
    assert in_thread(lambda: lock.acquire(False)) is False
    assert results == [False, False, False]
    lock.release()
    # every waiter gave up: the lock is free for everybody, no stale owner
    assert in_thread(lambda: (lock.acquire(timeout=1), lock.release())[0]) is True
    assert lock.acquire(False) is True
    lock.release()
    assert _free(lock)


@pytest.mark.parametrize("name", ["lock", "hook_lock"])
def test_no_lost_wakeup_with_many_threads_and_timeouts(state: Any, name: str) -> None:
    # 16 threads, mixing blocking, timed and non-blocking acquires; a counter
    # guarded by the lock must be exact and nobody may hang.
    lock = getattr(state, name)
    counter = [0]
    inside = [0]
    errors: list[str] = []

    def work(i: int) -> None:
        for n in range(300):
            mode = (i + n) % 3
            if mode == 0:
                got = lock.acquire()
            elif mode == 1:
                got = lock.acquire(timeout=0.001)
            else:
                got = lock.acquire(False)
            if not got:
                continue
            inside[0] += 1
            if inside[0] != 1:
                errors.append("two inside")
            counter[0] += 1
            if n % 7 == 0:
                time.sleep(0)
            inside[0] -= 1
            lock.release()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads), "a thread hung on the lock"
    assert errors == []
    assert _free(lock)
    assert lock.acquire(False) is True
    lock.release()


def test_reentrancy_depth_and_partial_release(state: Any) -> None:
    lock = state.lock
    for _ in range(1000):
        assert lock.acquire()
    assert in_thread(lambda: lock.acquire(False)) is False
    for _ in range(999):
        lock.release()
    assert not _free(lock)
    assert in_thread(lambda: lock.acquire(timeout=0.01)) is False
    lock.release()
    assert _free(lock)
    with pytest.raises(RuntimeError):
        lock.release()
    assert in_thread(lambda: (lock.acquire(timeout=1), lock.release())[0]) is True


def test_release_by_non_owner_keeps_the_owner(state: Any) -> None:
    lock = state.lock
    lock.acquire()
    lock.acquire()

    def steal() -> str:
        try:
            lock.release()
        except RuntimeError:
            return "refused"
        return "released"

    assert in_thread(steal) == "refused"
    assert lock._is_owned()
    lock.release()
    lock.release()
    assert _free(lock)


def test_hook_lock_released_by_another_thread_wakes_a_waiter(state: Any) -> None:
    # threading.Lock semantics: any thread may release; a waiter must wake.
    lock = state.hook_lock
    lock.acquire()
    got: list[bool] = []
    w = threading.Thread(target=lambda: got.append(lock.acquire(timeout=5)))
    w.start()
    time.sleep(0.05)
    in_thread(lock.release)
    w.join(6)
    assert got == [True]
    lock.release()


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_keyboard_interrupt_while_waiting_leaves_the_lock_consistent(state: Any) -> None:
    # The main thread waits for a lock held by a worker; SIGINT interrupts the
    # wait (KeyboardInterrupt). Afterwards the worker's release must leave the
    # lock free and acquirable by anyone (no stale pending/is_locked).
    lock = state.lock
    with held_elsewhere(lock):
        main = threading.get_ident()
        killer = threading.Timer(0.2, lambda: signal.pthread_kill(main, signal.SIGINT))
        killer.start()
        with pytest.raises(KeyboardInterrupt):
            lock.acquire(timeout=5)
        killer.join()
    assert _free(lock)
    assert lock.acquire(timeout=2) is True
    assert in_thread(lambda: lock.acquire(timeout=0.05)) is False
    lock.release()
    assert in_thread(lambda: (lock.acquire(timeout=1), lock.release())[0]) is True


def test_signal_handler_during_timed_wait_keeps_the_deadline(state: Any) -> None:
    # A handler that does not raise: the wait continues for what is left of
    # the timeout (not restarted, not returned early as True).
    lock = state.lock
    hits: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda *a: hits.append(1))
    try:
        with held_elsewhere(lock):
            main = threading.get_ident()
            timers = [threading.Timer(0.05 * k,
                                      lambda: signal.pthread_kill(main, signal.SIGUSR1))
                      for k in range(1, 5)]
            for tm in timers:
                tm.start()
            start = time.monotonic()
            assert lock.acquire(timeout=0.5) is False
            took = time.monotonic() - start
            for tm in timers:
                tm.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert 0.4 < took < 2.0
    assert hits
    assert lock.acquire(False) is True
    lock.release()


def test_a_lock_view_outlives_its_call_state(state: Any) -> None:
    lock = state.lock
    hook = state.hook_lock
    del state
    import gc

    gc.collect()
    with lock:
        assert not _free(lock)
    assert hook.acquire(False)
    hook.release()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_with_a_lock_held_by_the_forking_thread(state: Any) -> None:
    # The forking thread holds the engine lock: in the child it is still
    # held by "this" thread (same ident), as an RLock would be.
    lock = state.lock
    lock.acquire()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            if lock._is_owned():
                lock.release()
                if lock.acquire(timeout=1):
                    lock.release()
                    code = 0
        finally:
            os._exit(code)
    lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
