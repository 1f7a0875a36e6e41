"""Backpressure, closing, statistics and many threads submitting at once."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from typing import Any

import pytest
from runner_helpers import SPIN, wait_for, wait_in_lua

from moonbus.errors import ClosedError, RunnerBusyError, RunnerClosedError, RunnerError
from moonbus.lua.sandbox import SandboxFactory
from moonbus.runner import Runner, RunnerStatistics


@pytest.fixture
def tiny(factory: SandboxFactory) -> Any:
    """One worker, one queue slot, a short acquire timeout."""
    made = Runner(workers=1, factory=factory, queue_size=1, acquire_timeout=0.05)
    yield made
    made.close(cancel_pending=True)


def _fill(tiny: Runner) -> tuple[cf.Future[Any], cf.Future[Any]]:
    blocker = tiny.submit(SPIN, timeout=30)
    wait_in_lua(blocker)
    queued = tiny.submit("return 'queued'")
    return blocker, queued


def test_full_queue_raises_busy_after_acquire_timeout(tiny: Runner) -> None:
    blocker, queued = _fill(tiny)
    start = time.monotonic()
    with pytest.raises(RunnerBusyError, match=r"queue is full \(1 jobs waiting\)") as info:
        tiny.submit("return 1")
    assert time.monotonic() - start >= 0.05
    assert "0.05 s" in str(info.value)
    assert isinstance(info.value, RunnerError)
    with pytest.raises(RunnerBusyError):
        tiny.submit("return 1", acquire_timeout=0)
    stats = tiny.statistics()
    assert (stats.rejected, stats.queue_depth, stats.busy_workers) == (2, 1, 1)
    blocker.cancel()
    assert queued.result(timeout=5) == "queued"


def test_blocked_submit_proceeds_when_a_slot_frees(tiny: Runner) -> None:
    blocker, queued = _fill(tiny)
    results: list[Any] = []

    def submit() -> None:
        results.append(tiny.submit("return 'late'", acquire_timeout=10).result(timeout=10))

    thread = threading.Thread(target=submit)
    thread.start()
    time.sleep(0.05)
    assert thread.is_alive()  # waiting for a slot, not failing
    blocker.cancel()
    thread.join(10)
    assert results == ["late"]
    assert queued.result(timeout=5) == "queued"


def test_blocked_submit_fails_when_the_runner_closes(tiny: Runner) -> None:
    _fill(tiny)
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            tiny.submit("return 1", acquire_timeout=10)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=submit)
    thread.start()
    time.sleep(0.05)
    tiny.close(cancel_pending=True)
    thread.join(10)
    assert len(errors) == 1
    assert isinstance(errors[0], RunnerClosedError)


def test_closed_runner_refuses_everything(factory: SandboxFactory) -> None:
    made = Runner(workers=1, factory=factory)
    made.close()
    assert made.closed
    with pytest.raises(RunnerClosedError, match="closed"):
        made.submit("return 1")
    with pytest.raises(ClosedError):
        made.compile("return 1")
    with pytest.raises(RunnerClosedError):
        made.drop_state("x")
    made.close()  # idempotent


def test_close_finishes_pending_work(factory: SandboxFactory) -> None:
    made = Runner(workers=2, factory=factory)
    futures = [made.submit("return ... * 2", args=(i,)) for i in range(50)]
    made.close()
    assert [f.result(timeout=0) for f in futures] == [i * 2 for i in range(50)]
    assert not any(worker.thread.is_alive() for worker in made._workers)


def test_close_with_cancel_pending(factory: SandboxFactory) -> None:
    made = Runner(workers=1, factory=factory)
    running = made.submit(SPIN, timeout=30)
    wait_in_lua(running)
    queued = [made.submit("return 1") for _ in range(5)]
    made.close(cancel_pending=True)
    assert running.cancelled()
    assert all(f.cancelled() for f in queued)
    assert made.statistics().cancelled == 6


def test_context_manager_closes_and_owns_its_factory() -> None:
    with Runner(workers=1) as made:
        assert made.submit("return 1").result(timeout=5) == 1
        watchdog = made._factory.watchdog
    assert made.closed
    assert not watchdog._thread.is_alive()


def test_shared_factory_is_left_open(factory: SandboxFactory) -> None:
    with Runner(workers=1, factory=factory) as made:
        made.submit("return 1").result(timeout=5)
    assert factory.watchdog._thread.is_alive()
    engine = factory.create("still-works")
    engine.close()


def test_close_from_a_worker_thread_is_refused(runner1: Runner) -> None:
    errors: list[BaseException] = []

    def callback(fut: cf.Future[Any]) -> None:
        try:
            runner1.close()
        except BaseException as exc:
            errors.append(exc)

    runner1.submit("return 1", callback=callback).result(timeout=5)
    wait_for(lambda: bool(errors))
    assert isinstance(errors[0], RunnerError)
    assert "worker thread" in str(errors[0])


def test_many_threads_submitting(factory: SandboxFactory) -> None:
    threads_n, per_thread = 8, 300
    with Runner(workers=2, factory=factory, queue_size=64, acquire_timeout=30) as made:
        compiled = made.compile("local a, b = ... return a * 1000 + b")
        results: dict[int, list[Any]] = {}
        barrier = threading.Barrier(threads_n)

        def submitter(t: int) -> None:
            barrier.wait()
            futures = []
            for i in range(per_thread):
                source = compiled if i % 2 else "local a, b = ... return a * 1000 + b"
                futures.append(made.submit(source, args=(t, i), state=f"s{t}" if i % 3 == 0
                                           else None))
            results[t] = [f.result(timeout=30) for f in futures]

        threads = [threading.Thread(target=submitter, args=(t,)) for t in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for t in range(threads_n):
            assert results[t] == [t * 1000 + i for i in range(per_thread)]
        stats = made.statistics()
        assert stats.submitted == stats.done == threads_n * per_thread
        assert stats.failed == stats.rejected == stats.queue_depth == 0
        assert stats.states == threads_n


def test_statistics_snapshot(runner1: Runner) -> None:
    assert runner1.statistics() == RunnerStatistics(
        workers=1, submitted=0, done=0, failed=0, timed_out=0, out_of_memory=0, cancelled=0,
        rejected=0, queue_depth=0, busy_workers=0, pending_actions=0, states=0,
        latency_p50=None, latency_p95=None, latency_p99=None,
    )
    runner1.submit("return 1", apply=lambda r: None).result(timeout=5)
    runner1.submit("error('x')").exception(timeout=5)
    runner1.submit(SPIN, timeout=0.02).exception(timeout=5)
    runner1.submit("return +")
    blocker = runner1.submit(SPIN, timeout=30)
    wait_in_lua(blocker)
    stats = runner1.statistics()
    assert stats.busy_workers == 1
    assert (stats.submitted, stats.done, stats.failed, stats.timed_out) == (5, 1, 2, 1)
    assert stats.pending_actions == 1
    assert stats.latency_p50 is not None and stats.latency_p99 is not None
    assert 0 < stats.latency_p50 <= stats.latency_p95 <= stats.latency_p99
    assert stats.latency_p99 >= 0.02  # the timed-out job ran at least its limit
    with pytest.raises(AttributeError):
        stats.done = 5  # type: ignore[misc]
    blocker.cancel()
    assert runner1.statistics().busy_workers == 0


class _FailingFactory(SandboxFactory):
    """Makes ``good`` engines, then fails."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.good = good
        self.made: list[Any] = []

    def create(self, name: str, **options: Any) -> Any:
        if len(self.made) == self.good:
            raise RuntimeError("no more engines")
        engine = super().create(name, **options)
        self.made.append(engine)
        return engine


def test_a_failed_start_closes_what_it_made() -> None:
    factory = _FailingFactory(good=2)  # the compiler and one worker
    try:
        with pytest.raises(RuntimeError, match="no more engines"):
            Runner(workers=2, factory=factory)
        assert [engine.closed for engine in factory.made] == [True, True]
    finally:
        factory.close()


def test_an_internal_error_fails_the_job_not_the_worker(
    runner1: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = runner1._workers[0]
    original = worker._run_job
    calls: list[int] = []

    def broken(job: Any, compiled: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("runner bug")
        return original(job, compiled)

    monkeypatch.setattr(worker, "_run_job", broken)
    error = runner1.submit("return 1").exception(timeout=5)
    assert isinstance(error, RuntimeError)
    assert runner1.submit("return 2").result(timeout=5) == 2
    stats = runner1.statistics()
    assert (stats.busy_workers, stats.failed, stats.done) == (0, 1, 1)
