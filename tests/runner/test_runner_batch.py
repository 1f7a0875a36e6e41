"""Batches: tiny jobs run several to a Lua call, each still on its own terms.

The jobs are queued behind a job that spins until cancelled, so the worker
finds them all waiting and takes them as one batch; a spy on the worker's
batch loop records the batch sizes (no timing is asserted).
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from runner_helpers import SPIN, wait_for, wait_in_lua

from moonbus.errors import JobDataError, ScriptError, ScriptMemoryError, ScriptTimeout
from moonbus.lua.sandbox import SandboxFactory
from moonbus.runner import CompiledJob, JobFuture, Runner
from moonbus.runner.batch import MAX_JOBS, SHORT, SLICE, LuaBatch, small_args, small_result
from moonbus.runner.future import Phase
from moonbus.runner.job import Job

# Job n of a batch: fails, spins, allocates or returns a table for chosen n.
PICKY = """
local n, fail, spin, hog, big = ...
if n == fail then error("boom " .. n) end
if n == spin then while true do end end
if n == hog then local t = {} for i = 1, 1e8 do t[i] = i end end
if n == big then return {n, n} end
return n * 10
"""


class Batches:
    """Records the size of every batch the runner's workers run, and the
    arguments of every job run alone."""

    def __init__(self, runner: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        self.alone: list[tuple[Any, ...]] = []
        self.started = threading.Event()
        self.gate: threading.Event | None = None
        for worker in runner._workers:
            batch = worker._batch
            assert batch is not None
            monkeypatch.setattr(batch, "run", self._wrap(batch.run))
            monkeypatch.setattr(worker, "_run_job", self._wrap_single(worker._run_job))

    def _wrap_single(self, run_job: Callable[[Job, Any], Any]) -> Callable[[Job, Any], Any]:
        def spy(job: Job, compiled: Any) -> Any:
            self.alone.append(job.args)
            return run_job(job, compiled)

        return spy

    def _wrap(self, run: Callable[[int, Any], Any]) -> Callable[[int, Any], Any]:
        def spy(count: int, jobs: Any) -> Any:
            self.sizes.append(count)
            self.started.set()
            if self.gate is not None:
                self.gate.wait(10)
            return run(count, jobs)

        return spy


@pytest.fixture
def batches(runner1: Runner, monkeypatch: pytest.MonkeyPatch) -> Iterator[Batches]:
    yield Batches(runner1, monkeypatch)


def learn(runner: Runner, job: CompiledJob, *args: Any) -> None:
    """Run ``job`` alone until every worker lists it as tiny (it needs a quick run)."""
    for _ in range(1000):
        if all(job.digest in worker._tiny for worker in runner._workers):
            return
        runner.submit(job, args).result(timeout=5)
    raise AssertionError("the job never ran quickly enough to be batched")


def behind_a_blocker(runner: Runner, submit: Callable[[], list[JobFuture]]) -> list[JobFuture]:
    """Queue the jobs of ``submit`` while the worker spins, then let it go."""
    blocker = runner.submit(SPIN, timeout=30)
    wait_in_lua(blocker)
    futures = submit()
    assert blocker.cancel()
    return futures


def _picky(runner: Runner, count: int, **options: Any) -> tuple[CompiledJob, list[JobFuture]]:
    job = runner.compile(PICKY, name="picky")
    learn(runner, job, 0)
    roles = [options.pop(role, None) for role in ("fail", "spin", "hog", "big")]
    futures = behind_a_blocker(
        runner, lambda: [runner.submit(job, (n, *roles), **options) for n in range(count)]
    )
    return job, futures


def test_tiny_jobs_run_in_batches_in_submission_order(runner1: Runner, batches: Batches) -> None:
    job = runner1.compile("return ... + 1")
    learn(runner1, job, 0)
    before = runner1.statistics()
    order: list[int] = []
    applied: list[int] = []
    count = MAX_JOBS + 10
    futures = behind_a_blocker(runner1, lambda: [
        runner1.submit(job, (n,), callback=lambda f: order.append(f.result()),
                       apply=applied.append)
        for n in range(count)
    ])
    assert [f.result(timeout=5) for f in futures] == list(range(1, count + 1))
    assert order == list(range(1, count + 1))
    assert runner1.drain() == count
    assert applied == list(range(1, count + 1))
    assert batches.sizes == [MAX_JOBS, 10]
    stats = runner1.statistics()
    assert stats.done - before.done == count
    assert (stats.cancelled, stats.failed, stats.queue_depth) == (1, 0, 0)


def test_every_job_of_a_batch_gets_a_fresh_environment(
    runner1: Runner, batches: Batches
) -> None:
    source = (
        "local seen = marker == nil and string.mark == nil and getmetatable(_G) == nil "
        "marker = true string.mark = true setmetatable(_G, {}) math.pi = 3 "
        "return seen and math.pi == 3"
    )
    job = runner1.compile(source)
    learn(runner1, job)
    futures = behind_a_blocker(runner1, lambda: [runner1.submit(job) for _ in range(20)])
    assert [f.result(timeout=5) for f in futures] == [True] * 20
    assert max(batches.sizes) > 1


def test_an_error_in_the_middle_of_a_batch_fails_only_that_job(
    runner1: Runner, batches: Batches
) -> None:
    _, futures = _picky(runner1, 10, fail=4)
    error = futures[4].exception(timeout=5)
    assert isinstance(error, ScriptError)
    assert "boom 4" in str(error)
    assert error.where == "picky:3"
    assert [f.result(timeout=5) for i, f in enumerate(futures) if i != 4] == [
        n * 10 for n in range(10) if n != 4
    ]
    assert batches.sizes[0] == 10  # the jobs after it went back to the queue and ran
    stats = runner1.statistics()
    assert stats.failed == 1
    assert stats.submitted - stats.done == 1 + 1  # the failed job and the cancelled blocker


def test_a_timeout_in_the_middle_of_a_batch_hits_only_that_job(
    runner1: Runner, batches: Batches
) -> None:
    _, futures = _picky(runner1, 8, spin=3, timeout=0.05)
    error = futures[3].exception(timeout=10)
    assert isinstance(error, ScriptTimeout)
    assert "50 ms" in str(error)  # its own limit: it timed out running alone
    assert [f.result(timeout=5) for i, f in enumerate(futures) if i != 3] == [
        n * 10 for n in range(8) if n != 3
    ]
    assert batches.sizes[0] == 8
    assert (3, None, 3, None, None) in batches.alone  # stopped by the slice, run alone
    assert runner1.statistics().timed_out == 1


def test_a_job_longer_than_the_slice_still_gets_its_whole_limit(
    runner1: Runner, batches: Batches
) -> None:
    source = (
        "local n = ... if n == 2 then local x = 0 for i = 1, 2e6 do x = x + 1 end "
        "return x end return n"
    )
    job = runner1.compile(source)
    learn(runner1, job, 0)
    futures = behind_a_blocker(runner1, lambda: [
        runner1.submit(job, (n,), timeout=30) for n in range(6)
    ])
    assert [f.result(timeout=30) for f in futures] == [0, 1, 2_000_000, 3, 4, 5]
    assert batches.sizes[0] == 6
    assert runner1.statistics().timed_out == 0


def test_an_error_is_reported_from_the_batch_itself(runner1: Runner, batches: Batches) -> None:
    _, futures = _picky(runner1, 4, fail=1)
    error = futures[1].exception(timeout=5)
    assert isinstance(error, ScriptError)
    assert "runner-batch" in error.lua_traceback  # not run again alone
    assert batches.sizes[0] == 4
    assert (1, 1, None, None, None) not in batches.alone


def test_a_memory_error_in_the_middle_of_a_batch_hits_only_that_job(
    runner1: Runner, batches: Batches
) -> None:
    _, futures = _picky(runner1, 8, hog=5, memory=1 << 20)
    assert isinstance(futures[5].exception(timeout=10), ScriptMemoryError)
    # A batch leaves a job a little less room than a call of its own: the job
    # ran again alone, and that run decided.
    assert (5, None, None, 5, None) in batches.alone
    assert [f.result(timeout=5) for i, f in enumerate(futures) if i != 5] == [
        n * 10 for n in range(8) if n != 5
    ]
    assert batches.sizes[0] == 8
    assert runner1.statistics().out_of_memory == 1


def test_a_stack_overflow_in_a_batch_is_decided_by_a_run_alone(
    runner1: Runner, batches: Batches
) -> None:
    source = (
        "local n = ... if n == 2 then "
        "local t = setmetatable({}, {__index = function(t, k) return t[k] end}) return t.x end "
        "return n"
    )
    job = runner1.compile(source)
    learn(runner1, job, 0)
    alone = runner1.submit(job, (2,)).exception(timeout=5)
    assert isinstance(alone, ScriptError)
    assert "stack overflow" in str(alone)
    futures = behind_a_blocker(runner1, lambda: [runner1.submit(job, (n,)) for n in range(5)])
    error = futures[2].exception(timeout=5)
    assert isinstance(error, ScriptError)
    assert str(error) == str(alone)
    assert "runner-batch" not in error.lua_traceback
    assert batches.alone.count((2,)) == 2  # once to learn what it does, once after the batch
    assert [futures[n].result(timeout=5) for n in (0, 1, 3, 4)] == [0, 1, 3, 4]
    assert batches.sizes[0] == 5


def test_a_job_that_leaves_a_coroutine_tracked_ends_its_batch(
    runner1: Runner, batches: Batches, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine keeps such a coroutine alive until the end of its call; the
    # next job must not run beside it. Stand-in: every job "leaves one".
    worker = runner1._workers[0]
    engine = worker._engine
    always = engine.call(engine.compile("return function() return true end", "t",
                                        engine.table()), limit=None)[0]
    monkeypatch.setattr(engine, "coroutines_tracked", always)
    monkeypatch.setattr(worker, "_batch", LuaBatch(engine, worker._trampoline, worker._blank))
    job = runner1.compile("return ... * 2")
    learn(runner1, job, 0)
    batches = Batches(runner1, monkeypatch)
    futures = behind_a_blocker(runner1, lambda: [runner1.submit(job, (n,)) for n in range(4)])
    assert [f.result(timeout=5) for f in futures] == [0, 2, 4, 6]
    assert batches.sizes == [4, 3, 2]  # each batch ran one job; the rest went back


def test_a_running_coroutine_is_tracked(factory: SandboxFactory) -> None:
    engine = factory.create("tracking")
    try:
        env = engine.new_env()
        env["tracked"] = engine.coroutines_tracked
        chunk = engine.compile(
            "local co = coroutine.create(function() return tracked() end) "
            "local _, inside = coroutine.resume(co) return inside, tracked()",
            "t", env,
        )
        assert engine.call(chunk, limit=1.0) == (True, False)
    finally:
        engine.close()


def test_a_result_a_batch_cannot_keep_stops_the_batch_after_it(
    runner1: Runner, batches: Batches
) -> None:
    _, futures = _picky(runner1, 8, big=2)
    assert [f.result(timeout=5) for f in futures] == [0, 10, [2, 2], 30, 40, 50, 60, 70]
    assert batches.sizes[0] == 8


def test_cancelling_the_running_job_of_a_batch(runner1: Runner, batches: Batches) -> None:
    batches.gate = threading.Event()
    _, futures = _picky(runner1, 8, spin=3, timeout=30)
    assert batches.started.wait(5)
    # The batch is about to run: its futures are still queued, so cancel()
    # settles at once; the spinning job is stopped by the slice, not rerun.
    assert futures[3].phase is Phase.QUEUED
    assert futures[3].cancel()
    assert futures[3].cancelled()
    batches.gate.set()
    assert [f.result(timeout=10) for i, f in enumerate(futures) if i != 3] == [
        n * 10 for n in range(8) if n != 3
    ]
    stats = runner1.statistics()
    assert (stats.cancelled, stats.timed_out, stats.failed) == (2, 0, 0)
    assert stats.submitted - stats.done == 2


def test_cancelling_a_job_waiting_in_a_running_batch(runner1: Runner, batches: Batches) -> None:
    batches.gate = threading.Event()
    _, futures = _picky(runner1, 8)
    assert batches.started.wait(5)
    assert futures[6].cancel()
    batches.gate.set()
    assert futures[6].cancelled()
    with pytest.raises(cf.CancelledError):
        futures[6].result(timeout=0)
    assert [f.result(timeout=5) for i, f in enumerate(futures) if i != 6] == [
        n * 10 for n in range(8) if n != 6
    ]
    assert runner1.statistics().cancelled == 2


def test_a_state_job_is_never_batched_and_keeps_its_place(
    runner1: Runner, batches: Batches
) -> None:
    job = runner1.compile("local n = ... count = (count or 0) + 1 return n * 100 + count")
    learn(runner1, job, 0)
    order: list[Any] = []

    def submit() -> list[JobFuture]:
        futures = []
        for n in range(12):
            state = "counter" if n in (4, 9) else None
            futures.append(runner1.submit(job, (n,), state=state,
                                          callback=lambda f: order.append(f.result())))
        return futures

    futures = behind_a_blocker(runner1, submit)
    expected = [n * 100 + (1 if n not in (4, 9) else (1 if n == 4 else 2)) for n in range(12)]
    assert [f.result(timeout=5) for f in futures] == expected
    assert order == expected
    assert batches.sizes == [4, 4, 2]  # split around the two state jobs


def test_different_budgets_and_short_limits_split_batches(
    runner1: Runner, batches: Batches
) -> None:
    job = runner1.compile("return ...")
    learn(runner1, job, 0)

    def submit() -> list[JobFuture]:
        return [
            runner1.submit(job, (0,)),
            runner1.submit(job, (1,)),
            runner1.submit(job, (2,), memory=1 << 20),
            runner1.submit(job, (3,), memory=1 << 20),
            runner1.submit(job, (4,), timeout=SLICE / 2),
            runner1.submit(job, ("x" * (SHORT + 1),)),
            runner1.submit(job, ([5],)),
            runner1.submit(job, (7,)),
            runner1.submit(job, (8,)),
        ]

    futures = behind_a_blocker(runner1, submit)
    assert [f.result(timeout=5) for f in futures] == [
        0, 1, 2, 3, 4, "x" * (SHORT + 1), [5], 7, 8
    ]
    assert batches.sizes == [2, 2, 2]


def test_text_that_is_not_utf8_ends_as_for_a_single_job(
    runner1: Runner, batches: Batches
) -> None:
    job = runner1.compile("local n = ... if n == 1 then return '\\255' end return 'ok'")
    learn(runner1, job, 0)
    alone = runner1.submit(job, (1,)).exception(timeout=5)
    futures = behind_a_blocker(runner1, lambda: [runner1.submit(job, (n,)) for n in range(3)])
    assert futures[0].result(timeout=5) == futures[2].result(timeout=5) == "ok"
    error = futures[1].exception(timeout=5)
    assert type(error) is type(alone) is JobDataError
    assert str(error) == str(alone)
    assert "not valid UTF-8" in str(error)
    assert batches.sizes == [3]


def test_arguments_that_are_not_valid_unicode_fail_as_for_a_single_job(
    runner1: Runner, batches: Batches
) -> None:
    job = runner1.compile("return ...")
    learn(runner1, job, 0)
    futures = behind_a_blocker(runner1, lambda: [
        runner1.submit(job, (text,)) for text in ("a", "b", "\ud800", "c", "d")
    ])
    assert isinstance(futures[2].exception(timeout=5), JobDataError)
    assert [futures[i].result(timeout=5) for i in (0, 1, 3, 4)] == ["a", "b", "c", "d"]


def test_close_with_cancel_pending_cancels_a_running_batch(
    factory: SandboxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = Runner(workers=1, factory=factory)
    batches = Batches(made, monkeypatch)
    batches.gate = threading.Event()
    try:
        _, futures = _picky(made, 6, spin=2, timeout=30)
        assert batches.started.wait(5)
    finally:
        closer = threading.Thread(target=made.close, kwargs={"cancel_pending": True})
        closer.start()
        wait_for(lambda: all(f.done() for f in futures))
        batches.gate.set()
        closer.join(10)
    assert not closer.is_alive()
    assert all(f.cancelled() for f in futures)
    assert made.statistics().cancelled == 6 + 1


def test_batches_on_two_workers(factory: SandboxFactory) -> None:
    with Runner(workers=2, factory=factory, queue_size=2000) as made:
        job = made.compile("local a, b = ... return a * 1000 + b")
        results: dict[int, list[Any]] = {}

        def submitter(t: int) -> None:
            futures = [made.submit(job, (t, i)) for i in range(500)]
            results[t] = [f.result(timeout=30) for f in futures]

        threads = [threading.Thread(target=submitter, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for t in range(4):
            assert results[t] == [t * 1000 + i for i in range(500)]
        stats = made.statistics()
        assert stats.submitted == stats.done == 2000
        assert stats.queue_depth == 0


# -------------------------------------------------------------- units
def test_small_args_and_results() -> None:
    assert small_args((None, True, 1, 2.5, "x" * SHORT))
    assert not small_args(("x" * (SHORT + 1),))
    assert not small_args(([1],))
    assert small_result(None) and small_result(1.5) and small_result("é" * (SHORT // 2))
    assert not small_result("é" * SHORT)
    assert not small_result((1, 2))
    assert not small_result([1])


def test_finish_queued() -> None:
    fut = JobFuture()
    assert fut.finish_queued()
    assert fut.phase is Phase.FINISHING
    assert fut.cancel() is False  # too late, as after finish()
    fut.set_result(3)
    assert fut.result() == 3
    cancelled = JobFuture()
    assert cancelled.cancel()
    assert cancelled.finish_queued() is False
    assert cancelled.cancelled()
