"""The engine's C locks (``_callstate.h``'s ``MbLock``, seen as ``EngineLock``).

Issue 16: the C ``CallState`` owns the engine's ``lock`` and ``hook_lock``,
C locks the C delivery takes without a Python call. Each test runs on the C
locks and on the threading locks ``PyCallState`` keeps (the reference), so
the two behave the same where the engine relies on it: the engine lock is
reentrant, the hook lock is not; a thread that waits releases the GIL (other
threads run Python meanwhile); timeouts and non-blocking acquires; release
by the wrong thread; mutual exclusion; and an abort from another thread
(which takes the hook lock) while a call holds the engine lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.lua.engine_lock_support import fast_module, in_thread

from moonbus.errors import ScriptCancelled
from moonbus.lua.call_state import PyCallState
from moonbus.lua.sandbox import SandboxFactory

pytestmark = pytest.mark.timeout(60, method="thread")


def test_the_engine_lock_is_reentrant(state: Any) -> None:
    lock = state.lock
    with lock:
        assert lock.acquire() is True  # a Python API calling back into the engine
        assert lock.acquire(blocking=False) is True
        assert in_thread(lambda: lock.acquire(blocking=False)) is False
        lock.release()
        lock.release()
        assert in_thread(lambda: lock.acquire(timeout=0.01)) is False
    assert in_thread(lambda: (lock.acquire(blocking=False), lock.release())[0]) is True


def test_the_hook_lock_is_not_reentrant(state: Any) -> None:
    hook = state.hook_lock
    with hook:
        assert hook.acquire(blocking=False) is False
        start = time.perf_counter()
        assert hook.acquire(timeout=0.05) is False
        assert time.perf_counter() - start >= 0.04
    assert hook.acquire(blocking=False) is True
    hook.release()


def test_releasing_a_lock_not_held(state: Any) -> None:
    with pytest.raises(RuntimeError):
        state.lock.release()
    with pytest.raises(RuntimeError):
        state.hook_lock.release()
    state.lock.acquire()
    state.hook_lock.acquire()

    def release_all() -> list[str]:
        outcomes = []
        for lock in (state.lock, state.hook_lock):
            try:
                lock.release()
                outcomes.append("released")
            except RuntimeError:
                outcomes.append("refused")
        return outcomes

    # an RLock belongs to its owner; a Lock may be released by any thread
    assert in_thread(release_all) == ["refused", "released"]
    state.lock.release()
    assert state.hook_lock.acquire(blocking=False) is True
    state.hook_lock.release()


def test_bad_timeouts_are_refused_like_threading(state: Any) -> None:
    with pytest.raises(ValueError):
        state.lock.acquire(False, 1.0)
    with pytest.raises(ValueError):
        state.hook_lock.acquire(timeout=-2)


@pytest.mark.parametrize("name", ["lock", "hook_lock"])
def test_a_waiting_thread_releases_the_gil(state: Any, name: str) -> None:
    lock = getattr(state, name)
    lock.acquire()
    got = threading.Event()

    def wait() -> None:
        with lock:
            got.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    # The waiter blocks in acquire; this thread still runs Python (the GIL is free).
    spins = 0
    deadline = time.perf_counter() + 0.1
    while time.perf_counter() < deadline:
        spins += 1
    assert spins > 1000 and not got.is_set()
    lock.release()
    waiter.join(5)
    assert got.is_set() and not waiter.is_alive()
    assert lock.acquire(blocking=False) is True  # handed over and given back whole
    lock.release()


@pytest.mark.parametrize("name", ["lock", "hook_lock"])
def test_the_lock_excludes_other_threads(state: Any, name: str) -> None:
    lock = getattr(state, name)
    inside = [0]
    seen: list[int] = []

    def work() -> None:
        for _ in range(300):
            with lock:
                inside[0] += 1
                seen.append(inside[0])
                time.sleep(0)  # invites a switch while held
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(seen) == 1200 and set(seen) == {1}
    assert lock.acquire(blocking=False) is True
    lock.release()


def test_a_c_state_shows_its_own_lock_objects() -> None:
    fast = fast_module()
    state = fast.CallState()
    lock = state.lock
    assert state.lock is lock and type(lock) is fast.EngineLock
    assert state.hook_lock is not lock
    assert "unlocked" in repr(lock)
    with lock:
        assert lock.locked() and lock._is_owned() and "locked" in repr(lock)
    del state  # the view keeps the state (and so the lock's memory) alive
    with lock:
        assert lock.locked()
    with pytest.raises(TypeError):
        fast.CallState(lock=threading.RLock(), hook_lock=threading.Lock())
    with pytest.raises(TypeError):
        fast.EngineLock()


@pytest.fixture(params=["c", "python"])
def engine(request: pytest.FixtureRequest) -> Iterator[Any]:
    native = request.param == "c"
    if native:
        fast_module()
    with SandboxFactory(native=native) as factory:
        made = factory.create("locks")
        assert (type(made.call_state) is PyCallState) is not native
        try:
            yield made
        finally:
            made.close()


def test_an_abort_from_another_thread_stops_a_call_holding_the_lock(engine: Any) -> None:
    spin = engine.compile("while true do end", "spin.lua", engine.new_env())
    token = engine.next_token()
    aborted: list[bool] = []

    def abort() -> None:
        while not engine.call_state.in_call:
            time.sleep(0.001)
        # the engine lock is held by the caller; abort takes only the hook lock
        assert engine.lock.acquire(blocking=False) is False
        aborted.append(engine.abort(token, "cancel"))

    thread = threading.Thread(target=abort)
    thread.start()
    start = time.perf_counter()
    with pytest.raises(ScriptCancelled):
        engine.call(spin, limit=20.0)
    thread.join(5)
    assert aborted == [True] and time.perf_counter() - start < 5.0
    assert engine.lock.acquire(blocking=False) is True  # released after the abort
    engine.lock.release()
    ok = engine.compile("return 7", "ok.lua", engine.new_env())
    assert engine.call(ok, limit=1.0) == (7,)


def test_a_nested_call_reenters_the_engine_lock(engine: Any) -> None:
    # A Python API called from Lua calls back into the same engine, same thread.
    inner = engine.compile("return 2", "inner.lua", engine.new_env())
    env = engine.new_env()
    env["host"] = engine.host_function(lambda: engine.call(inner, limit=1.0)[0], "host")
    outer = engine.compile("return host() + 1", "outer.lua", env)
    assert engine.call(outer, limit=2.0) == (3,)


def test_a_caller_waits_for_a_call_on_another_thread(engine: Any) -> None:
    # One thread at a time: a second caller blocks (GIL released) until the first ends.
    env = engine.new_env()
    started, go = threading.Event(), threading.Event()
    env["pause"] = engine.host_function(lambda: (started.set(), go.wait(5))[0], "pause")
    slow = engine.compile("pause() return 1", "slow.lua", env)
    fast_call = engine.compile("return 2", "fast.lua", engine.new_env())
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(engine.call(slow, limit=10.0)))
    first.start()
    assert started.wait(5)
    second = threading.Thread(target=lambda: results.append(engine.call(fast_call, limit=10.0)))
    second.start()
    time.sleep(0.05)
    assert results == [] and second.is_alive()
    go.set()
    first.join(5)
    second.join(5)
    assert results == [(1,), (2,)]
