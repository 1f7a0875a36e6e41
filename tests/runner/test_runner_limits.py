"""Time and memory limits, cancellation, and workers that are never poisoned."""

from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import Any

import pytest
from runner_helpers import SPIN, wait_for, wait_in_lua

from moonbus.errors import ScriptError, ScriptMemoryError, ScriptTimeout
from moonbus.runner import JobFuture, Runner
from moonbus.runner.future import Phase

ESCAPES = {
    "plain loop": SPIN,
    "pcall loop": "while true do pcall(function() while true do end end) end",
    "xpcall handler loop": (
        "while true do xpcall(function() while true do end end, "
        "function() while true do end end) end"
    ),
    "coroutine loop": (
        "local co = coroutine.wrap(function() while true do end end) "
        "while true do pcall(co) end"
    ),
    "nested coroutines": (
        "local function spin() while true do pcall(coroutine.resume, "
        "coroutine.create(function() while true do end end)) end end "
        "while true do pcall(coroutine.wrap(spin)) end"
    ),
    "error object with looping __tostring": (
        "local e = setmetatable({}, {__tostring = function() while true do end end}) "
        "while true do pcall(error, e) end"
    ),
    "yield across pcall": (
        "local co = coroutine.create(function() while true do "
        "pcall(coroutine.yield) end end) while true do coroutine.resume(co) end"
    ),
}


@pytest.mark.parametrize("source", ESCAPES.values(), ids=list(ESCAPES))
def test_timeouts_cannot_be_escaped(runner1: Runner, source: str) -> None:
    error = runner1.submit(source, timeout=0.05).exception(timeout=10)
    assert isinstance(error, ScriptTimeout)
    assert isinstance(error, TimeoutError)
    assert isinstance(error, ScriptError)
    assert "50 ms" in str(error)
    # the worker is not poisoned
    assert runner1.submit("return 1 + ...", args=(41,)).result(timeout=5) == 42


@pytest.mark.parametrize("source", ESCAPES.values(), ids=list(ESCAPES))
def test_running_jobs_can_be_cancelled_whatever_they_do(runner1: Runner, source: str) -> None:
    fut = runner1.submit(source, timeout=30)
    wait_in_lua(fut)
    assert fut.running()
    assert fut.cancel() is True
    assert fut.cancelled()
    assert fut.done()
    with pytest.raises(cf.CancelledError):
        fut.result(timeout=0)
    assert runner1.submit("return 1 + ...", args=(1,)).result(timeout=5) == 2
    assert runner1.statistics().cancelled == 1


def test_default_timeout_applies(factory: Any) -> None:
    with Runner(workers=1, factory=factory, default_timeout=0.05) as short:
        assert isinstance(short.submit(SPIN).exception(timeout=10), ScriptTimeout)


def test_cancel_is_seen_by_wait_as_completed_and_callbacks(runner1: Runner) -> None:
    seen: list[cf.Future[Any]] = []
    fut = runner1.submit(SPIN, timeout=30, callback=seen.append)
    wait_in_lua(fut)
    waiter = threading.Thread(target=cf.wait, args=([fut],))
    waiter.start()
    assert fut.cancel()
    waiter.join(5)
    assert not waiter.is_alive()
    done, _ = cf.wait([fut], timeout=5)
    assert done == {fut}
    assert list(cf.as_completed([fut], timeout=5)) == [fut]
    assert seen == [fut]


def test_cancel_a_queued_job(runner1: Runner) -> None:
    blocker = runner1.submit(SPIN, timeout=30)
    wait_in_lua(blocker)
    queued = runner1.submit("return 1")
    assert runner1.statistics().queue_depth == 1
    assert queued.cancel() is True
    assert queued.cancelled()
    assert runner1.statistics().queue_depth == 0
    assert cf.wait([queued], timeout=5).done == {queued}
    assert blocker.cancel()
    assert runner1.submit("return 2").result(timeout=5) == 2
    assert runner1.statistics().cancelled == 2


def test_cancel_after_completion_returns_false(runner: Runner) -> None:
    fut = runner.submit("return 1")
    assert fut.result(timeout=5) == 1
    assert fut.cancel() is False
    assert not fut.cancelled()
    failed = runner.submit("return +")
    assert failed.cancel() is False


def test_cancel_twice_is_true_both_times(runner1: Runner) -> None:
    fut = runner1.submit(SPIN, timeout=30)
    wait_in_lua(fut)
    assert fut.cancel()
    assert fut.cancel()


def test_concurrent_cancels_of_one_running_job(runner1: Runner) -> None:
    fut = runner1.submit(SPIN, timeout=30)
    wait_in_lua(fut)
    answers: list[bool] = []
    threads = [threading.Thread(target=lambda: answers.append(fut.cancel())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert answers == [True] * 8
    assert runner1.statistics().cancelled == 1


class _Recorder:
    """Stands in for an engine: records aborts."""

    def __init__(self) -> None:
        self.aborts: list[tuple[int, str]] = []

    def abort(self, token: int, reason: str) -> bool:
        self.aborts.append((token, reason))
        return True


def test_cancel_while_preparing_skips_the_call() -> None:
    fut = JobFuture()
    assert fut.claim()
    answer: list[bool] = []
    canceller = threading.Thread(target=lambda: answer.append(fut.cancel()))
    canceller.start()
    wait_for(lambda: fut._cancel_requested)
    assert canceller.is_alive()  # waits until the worker has settled the job
    engine = _Recorder()
    assert fut.entering_lua(engine, 7) is False
    assert engine.aborts == []
    assert fut.phase is Phase.PREPARING
    assert fut.finish() is True
    fut.settle_cancelled()
    canceller.join(5)
    assert answer == [True]
    assert fut.cancelled()


def test_cancel_after_entering_aborts_the_announced_call() -> None:
    fut = JobFuture()
    assert fut.claim()
    engine = _Recorder()
    assert fut.entering_lua(engine, 7) is True
    assert fut.phase is Phase.IN_LUA
    answer: list[bool] = []
    canceller = threading.Thread(target=lambda: answer.append(fut.cancel()))
    canceller.start()
    wait_for(lambda: engine.aborts == [(7, "cancel")])
    assert canceller.is_alive()
    assert fut.finish() is True
    fut.settle_cancelled()
    canceller.join(5)
    assert answer == [True]
    assert fut.cancelled()


def test_cancel_in_finishing_phase_is_too_late() -> None:
    fut = JobFuture()
    assert fut.claim()
    assert fut.finish() is False
    assert fut.phase is Phase.FINISHING
    assert fut.cancel() is False
    fut.set_result(1)
    assert fut.result() == 1


def test_memory_limit(runner1: Runner) -> None:
    hog = "local t = {} for i = 1, 1e8 do t[i] = i end return #t"
    error = runner1.submit(hog, memory=1 << 20).exception(timeout=10)
    assert isinstance(error, ScriptMemoryError)
    assert isinstance(error, MemoryError)
    assert isinstance(error, ScriptError)
    # the worker is not poisoned and the budget is per job
    assert runner1.submit("return 1 + ...", args=(1,)).result(timeout=5) == 2
    grow = "local t = {} for i = 1, 100000 do t[i] = i end return #t"
    assert runner1.submit(grow, memory=16 << 20).result(timeout=10) == 100000


def test_memory_budget_is_relative_to_usage_at_job_start(runner1: Runner) -> None:
    keep = "big = {} for i = 1, 200000 do big[i] = i end return #big"
    assert runner1.submit(keep, state="holder", memory=16 << 20).result(timeout=10) == 200000
    # the state's memory does not eat the next job's budget
    small = "local t = {} for i = 1, 50000 do t[i] = i end return #t"
    assert runner1.submit(small, memory=2 << 20).result(timeout=10) == 50000


def test_memory_error_inside_pcall_is_the_jobs_business(runner1: Runner) -> None:
    source = (
        "local ok = pcall(function() local t = {} for i = 1, 1e8 do t[i] = i end end) "
        "return ok"
    )
    assert runner1.submit(source, memory=1 << 20).result(timeout=10) is False


def test_no_failure_kind_poisons_the_worker(runner1: Runner) -> None:
    failures = [
        runner1.submit("error('boom')"),
        runner1.submit(SPIN, timeout=0.02),
        runner1.submit("local t = {} for i = 1, 1e8 do t[i] = i end", memory=1 << 20),
        runner1.submit("return function() end"),
        runner1.submit("return ...", args=(object(),)),
        runner1.submit("return +"),
    ]
    for fut in failures:
        assert fut.exception(timeout=10) is not None
    cancelled = runner1.submit(SPIN, timeout=30)
    wait_in_lua(cancelled)
    assert cancelled.cancel()
    assert runner1.submit("return 1 + ...", args=(41,)).result(timeout=5) == 42
    stats = runner1.statistics()
    assert (stats.failed, stats.timed_out, stats.out_of_memory, stats.cancelled) == (4, 1, 1, 1)
    assert stats.done == 1
