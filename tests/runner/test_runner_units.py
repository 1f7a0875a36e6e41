"""Pure pieces of the runner: job queue lanes, plain-data checks, statistics."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from runner_helpers import wait_for

from moonbus.errors import JobDataError, RunnerBusyError, RunnerClosedError
from moonbus.runner.compiled import CompiledJob, wrap_source
from moonbus.runner.future import JobFuture
from moonbus.runner.job import Job
from moonbus.runner.job_queue import JobQueue
from moonbus.runner.plain import INT_MAX, INT_MIN, check_args
from moonbus.runner.stats import Outcome, SubmitStats, WorkerStats, percentile, summarize

_COMPILED = CompiledJob.of("return 1", "job")


def _job(label: str = "") -> Job:
    return Job(
        compiled=_COMPILED, args=(label,), timeout=1.0, memory=1, state=None, apply=None,
        future=JobFuture(), submitted_at=0.0,
    )


def test_queue_keeps_submission_order_across_lanes() -> None:
    queue = JobQueue(workers=2, capacity=10)
    jobs = [_job(str(i)) for i in range(5)]
    queue.put(jobs[0], None, 0)
    queue.put(jobs[1], 0, 0)  # pinned to worker 0
    queue.put(jobs[2], None, 0)
    queue.put(jobs[3], 1, 0)  # pinned to worker 1
    queue.put(jobs[4], 0, 0)
    assert queue.depth() == 5
    taken0 = [queue.take(0) for _ in range(4)]
    assert taken0 == [jobs[0], jobs[1], jobs[2], jobs[4]]
    assert queue.take(1) is jobs[3]
    assert queue.depth() == 0
    assert queue.accepted == 5


def test_pinned_job_wakes_its_own_worker() -> None:
    queue = JobQueue(workers=2, capacity=10)
    got: dict[int, Any] = {}

    def worker(index: int) -> None:
        got[index] = queue.take(index)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    job = _job()
    queue.put(job, 1, 0)
    threads[1].join(5)
    assert got == {1: job}
    assert threads[0].is_alive()
    queue.close(take_pending=False)
    threads[0].join(5)
    assert got[0] is None


def test_queue_capacity_and_busy_error() -> None:
    queue = JobQueue(workers=1, capacity=2)
    queue.put(_job(), None, 0)
    queue.put(_job(), None, 0)
    with pytest.raises(RunnerBusyError, match="2 jobs waiting"):
        queue.put(_job(), None, 0.01)
    with pytest.raises(RunnerBusyError):
        queue.put(_job(), None, 0, counted=False)
    assert (queue.accepted, queue.rejected) == (2, 1)


def test_queue_remove_future_frees_a_slot() -> None:
    queue = JobQueue(workers=1, capacity=1)
    job = _job()
    queue.put(job, 0, 0)
    assert queue.remove_future(job.future) is True
    assert queue.remove_future(job.future) is False
    queue.put(_job(), None, 0)
    assert queue.depth() == 1


def test_queue_close_returns_pending_in_order_and_refuses_more() -> None:
    queue = JobQueue(workers=2, capacity=10)
    jobs = [_job(str(i)) for i in range(4)]
    for i, job in enumerate(jobs):
        queue.put(job, i % 2 if i else None, 0)
    assert queue.close(take_pending=True) == jobs
    assert queue.discarding
    assert queue.take(0) is None
    with pytest.raises(RunnerClosedError):
        queue.put(_job(), None, 0)


def test_queue_close_keeps_pending_for_the_workers() -> None:
    queue = JobQueue(workers=1, capacity=10)
    job = _job()
    queue.put(job, None, 0)
    assert queue.close(take_pending=False) == []
    assert queue.take(0) is job
    assert queue.take(0) is None


def _fits_labels(*labels: str) -> Any:
    def fits(first: Job, job: Job) -> bool:
        return job.args[0] in labels

    return fits


def test_take_batch_takes_fitting_shared_jobs_in_order() -> None:
    queue = JobQueue(workers=1, capacity=10)
    jobs = [_job(label) for label in "aabab"]
    for job in jobs:
        queue.put(job, None, 0)
    assert queue.take_batch(0, _fits_labels("a"), 10) == jobs[:2]  # stops at the first misfit
    assert queue.take_batch(0, _fits_labels("a"), 10) == [jobs[2]]  # b cannot be batched
    assert queue.take_batch(0, _fits_labels("a", "b"), 10) == jobs[3:]
    assert queue.depth() == 0


def test_take_batch_limit_and_fair_share() -> None:
    queue = JobQueue(workers=2, capacity=20)
    jobs = [_job("a") for _ in range(10)]
    for job in jobs:
        queue.put(job, None, 0)
    assert queue.take_batch(0, _fits_labels("a"), 3) == jobs[:3]
    # 7 left for 2 workers: at most 4 for this one
    assert queue.take_batch(1, _fits_labels("a"), 10) == jobs[3:7]
    assert queue.take_batch(0, _fits_labels("a"), 10) == jobs[7:9]
    assert queue.take_batch(1, _fits_labels("a"), 10) == jobs[9:]


def test_take_batch_never_passes_an_older_pinned_job() -> None:
    queue = JobQueue(workers=1, capacity=10)
    jobs = [_job("a") for _ in range(5)]
    queue.put(jobs[0], None, 0)
    queue.put(jobs[1], None, 0)
    queue.put(jobs[2], 0, 0)  # pinned to worker 0, e.g. a state job
    queue.put(jobs[3], None, 0)
    queue.put(jobs[4], None, 0)
    assert queue.take_batch(0, _fits_labels("a"), 10) == jobs[:2]
    assert queue.take_batch(0, _fits_labels("a"), 10) == [jobs[2]]  # pinned: never batched
    assert queue.take_batch(0, _fits_labels("a"), 10) == jobs[3:]


def test_take_batch_waits_and_ends_when_closed() -> None:
    queue = JobQueue(workers=1, capacity=10)
    got: list[list[Job]] = []
    thread = threading.Thread(target=lambda: got.append(queue.take_batch(0, _fits_labels(), 4)))
    thread.start()
    job = _job()
    queue.put(job, None, 0)
    thread.join(5)
    assert got == [[job]]
    queue.close(take_pending=False)
    assert queue.take_batch(0, _fits_labels(), 4) == []


def test_put_back_returns_jobs_to_the_head_in_order() -> None:
    queue = JobQueue(workers=1, capacity=3)
    jobs = [_job(str(i)) for i in range(5)]
    for job in jobs[:3]:
        queue.put(job, None, 0)
    taken = queue.take_batch(0, _fits_labels("0", "1", "2"), 3)
    assert taken == jobs[:3]
    queue.put(jobs[3], None, 0)
    queue.put(jobs[4], None, 0)
    assert jobs[1].future.cancel()  # cancelled while its batch ran: not put back
    queue.put_back(taken[1:])
    assert queue.depth() == 3  # may pass capacity: those jobs were accepted once
    assert [queue.take(0) for _ in range(3)] == [jobs[2], jobs[3], jobs[4]]
    assert queue.accepted == 5


def test_put_back_wakes_an_idle_worker() -> None:
    queue = JobQueue(workers=2, capacity=10)
    job = _job()
    queue.put(job, None, 0)
    assert queue.take(0) is job
    got: list[Job | None] = []
    waiter = threading.Thread(target=lambda: got.append(queue.take(1)))
    waiter.start()
    wait_for(lambda: queue._idle == [1])
    queue.put_back([job])
    waiter.join(5)
    assert got == [job]


def test_put_back_after_close_still_runs_the_jobs() -> None:
    queue = JobQueue(workers=1, capacity=10)
    job = _job()
    queue.put(job, None, 0)
    assert queue.take(0) is job
    queue.close(take_pending=False)
    queue.put_back([job])
    assert queue.take(0) is job
    assert queue.take(0) is None


def test_wrap_source_keeps_line_numbers() -> None:
    wrapped = wrap_source("a()\nb()")
    assert wrapped.splitlines()[1] == "b()"
    assert wrapped.endswith("\nend")


def test_compiled_job_digest_depends_on_name_and_source() -> None:
    assert CompiledJob.of("x", "a").digest == CompiledJob.of("x", "a").digest
    assert CompiledJob.of("x", "a").digest != CompiledJob.of("x", "b").digest
    assert CompiledJob.of("x", "a").digest != CompiledJob.of("y", "a").digest


# -------------------------------------------------------------- plain data
def test_check_args_accepts_plain_data() -> None:
    value = (None, True, INT_MIN, INT_MAX, 1.5, "s", [1, {"a": (2, 3)}], {1: "x", 2.5: "y"})
    assert check_args(value) == value
    assert check_args([1, 2]) == (1, 2)


def test_shared_but_acyclic_values_are_fine() -> None:
    shared = [1, 2]
    assert check_args(({"a": shared, "b": shared},)) == ({"a": shared, "b": shared},)


@pytest.mark.parametrize("bad", [{1, 2}, frozenset(), bytearray(b"x"), 1j, object, range(3)])
def test_check_args_refuses_other_types(bad: Any) -> None:
    with pytest.raises(JobDataError, match=r"args\[0\]"):
        check_args((bad,))


# -------------------------------------------------------------- statistics
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1),
       st.floats(min_value=0.01, max_value=1.0))
def test_percentile_is_nearest_rank(values: list[float], fraction: float) -> None:
    ordered = sorted(values)
    result = percentile(ordered, fraction)
    assert result in ordered
    at_or_below = sum(1 for v in ordered if v <= result)
    assert at_or_below >= math.ceil(fraction * len(ordered)) - 1e-9
    strictly_below = sum(1 for v in ordered if v < result)
    assert strictly_below < max(1, math.ceil(fraction * len(ordered)))


def test_percentile_of_nothing() -> None:
    assert percentile([], 0.5) is None


def test_worker_stats_window_is_bounded_and_recent() -> None:
    stats = WorkerStats(window=4)
    for i in range(10):
        stats.record(Outcome.DONE, float(i))
    assert sorted(stats.latencies()) == [6.0, 7.0, 8.0, 9.0]
    assert stats.counts[Outcome.DONE] == 10


def test_summarize_adds_workers_and_submit_side() -> None:
    a, b = WorkerStats(), WorkerStats()
    a.record(Outcome.DONE, 1.0)
    b.record(Outcome.TIMED_OUT, 3.0)
    b.busy = True
    submit = SubmitStats()
    submit.record(Outcome.FAILED)
    submit.record(Outcome.CANCELLED)
    snap = summarize(workers=[a, b], submit=submit, submitted=4, rejected=1, queue_depth=2,
                     pending_actions=3, states=1)
    assert (snap.done, snap.timed_out, snap.failed, snap.cancelled) == (1, 1, 1, 1)
    assert (snap.workers, snap.busy_workers, snap.queue_depth, snap.rejected) == (2, 1, 2, 1)
    assert (snap.latency_p50, snap.latency_p99) == (1.0, 3.0)
