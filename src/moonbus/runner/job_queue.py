"""The bounded job queue between submitting threads and workers.

Why not ``queue.Queue``: jobs of a persistent named state must run on the
worker that holds that state, while other jobs may run on any worker. So there
is one shared FIFO plus one FIFO per worker, counted together against one
capacity, and a worker takes the older of its two heads (by submission
``seq``), so pinned and shared jobs keep their submission order.

No sleep-polling: one lock, one condition per worker (a worker waits on its
own, so a pinned job wakes exactly the worker that must run it) and one
``_space`` condition where submitters wait for a free slot, up to their
acquire timeout. A submit only notifies when some worker is actually idle.

Batches: ``take_batch`` hands a worker its next job plus, when that job is a
shared one and the worker's ``fits`` test accepts them, the shared jobs right
behind it (see
``batch.py``), in one lock acquisition: at most ``limit`` and at most a fair
share of what is queued (the queue split over the workers), and never past
an older job on the worker's own lane, so submission order holds. Jobs a
batch did not start come back with ``put_back``, at the head of the shared
lane in their order; they were accepted once, so they are not counted again
and may briefly take the queue past its capacity.

Threads: ``put`` from any submitting thread; ``take(i)`` / ``take_batch(i)``
only from worker ``i`` (``fits`` runs under the queue lock, on that worker);
``put_back`` from workers; ``remove``, ``close``, ``depth`` from any thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from moonbus.errors import RunnerBusyError, RunnerClosedError
from moonbus.runner.future import JobFuture, Phase
from moonbus.runner.job import Job

__all__ = ["JobQueue"]


class JobQueue:
    """Bounded FIFO with per-worker lanes (see the module docstring)."""

    def __init__(self, workers: int, capacity: int) -> None:
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._ready = [threading.Condition(self._lock) for _ in range(workers)]
        self._shared: deque[Job] = deque()
        self._pinned: list[deque[Job]] = [deque() for _ in range(workers)]
        self._idle: list[int] = []
        self._size = 0
        self._space_waiters = 0
        self._capacity = capacity
        self._seq = 0
        self._closed = False
        self._discarding = False
        self.accepted = 0  # jobs queued by submitters (not internal ones)
        self.rejected = 0  # puts refused with RunnerBusyError

    @property
    def capacity(self) -> int:
        return self._capacity

    def depth(self) -> int:
        """Jobs waiting for a worker."""
        return self._size

    # ---------------------------------------------------------- submitters
    def put(
        self, job: Job, worker: int | None, acquire_timeout: float, *, counted: bool = True
    ) -> None:
        """Queue ``job`` (on ``worker``'s lane when pinned).

        Blocks while the queue is full, up to ``acquire_timeout`` seconds, then
        raises ``RunnerBusyError``; raises ``RunnerClosedError`` after ``close``.
        ``counted`` jobs are counted in ``accepted`` / ``rejected``.
        """
        with self._lock:
            if self._closed:
                raise RunnerClosedError("the runner is closed; it accepts no more jobs")
            if self._size >= self._capacity:
                try:
                    self._wait_for_space(acquire_timeout)
                except RunnerBusyError:
                    self.rejected += counted
                    raise
            self.accepted += counted
            self._seq += 1
            job.seq = self._seq
            self._size += 1
            if worker is None:
                self._shared.append(job)
                if self._idle:
                    self._ready[self._idle.pop()].notify()
            else:
                self._pinned[worker].append(job)
                if worker in self._idle:
                    self._idle.remove(worker)
                    self._ready[worker].notify()

    def _wait_for_space(self, acquire_timeout: float) -> None:
        deadline = time.monotonic() + acquire_timeout
        while self._size >= self._capacity:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunnerBusyError(
                    f"runner queue is full ({self._capacity} jobs waiting) and no slot "
                    f"became free within {acquire_timeout:g} s; submit fewer jobs, add "
                    "workers or raise queue_size / acquire_timeout"
                )
            self._space_waiters += 1
            try:
                self._space.wait(remaining)
            finally:
                self._space_waiters -= 1
            if self._closed:
                raise RunnerClosedError("the runner was closed while waiting for a queue slot")

    # ---------------------------------------------------------- workers
    def take(self, worker: int) -> Job | None:
        """The next job for ``worker``, waiting for one; None once closed and empty."""
        with self._lock:
            lane = self._pinned[worker]
            while True:
                if lane or self._shared:
                    if lane and (not self._shared or lane[0].seq < self._shared[0].seq):
                        job = lane.popleft()
                    else:
                        job = self._shared.popleft()
                    self._size -= 1
                    if self._space_waiters:
                        self._space.notify()
                    return job
                if self._closed:
                    return None
                self._idle.append(worker)
                self._ready[worker].wait()
                if worker in self._idle:
                    self._idle.remove(worker)

    def take_batch(self, worker: int, fits: Callable[[Job, Job], bool], limit: int) -> list[Job]:
        """The next job for ``worker`` and the shared jobs that may join it.

        ``fits(first, job)`` says whether ``job`` may run in one batch with
        ``first`` (``fits(first, first)`` whether ``first`` may be batched at
        all). Waits for a job; an empty list once closed and empty.
        """
        with self._lock:
            lane = self._pinned[worker]
            shared = self._shared
            while not (lane or shared):
                if self._closed:
                    return []
                self._idle.append(worker)
                self._ready[worker].wait()
                if worker in self._idle:
                    self._idle.remove(worker)
            if lane and (not shared or lane[0].seq < shared[0].seq):
                return self._took([lane.popleft()])  # pinned jobs are never batched
            batch = [shared.popleft()]
            first = batch[0]
            if shared and limit > 1 and fits(first, first):
                share = -(-(len(shared) + 1) // len(self._pinned))
                limit = min(limit, share)
                before = lane[0].seq if lane else None
                while (
                    shared
                    and len(batch) < limit
                    and (before is None or shared[0].seq < before)
                    and fits(first, shared[0])
                ):
                    batch.append(shared.popleft())
            return self._took(batch)

    def _took(self, batch: list[Job]) -> list[Job]:
        # Under the lock: the jobs left the queue.
        self._size -= len(batch)
        if self._space_waiters:
            self._space.notify(len(batch))
        return batch

    def put_back(self, jobs: list[Job]) -> None:
        """Return jobs a worker took but did not start (see the module docstring).

        Jobs cancelled meanwhile are left out (a racy read of their phase: one
        cancelled just after is dropped by the worker that takes it).
        """
        jobs = [job for job in jobs if job.future.phase is Phase.QUEUED]
        if not jobs:
            return
        with self._lock:
            self._shared.extendleft(reversed(jobs))
            self._size += len(jobs)
            for _ in range(min(len(jobs), len(self._idle))):
                self._ready[self._idle.pop()].notify()

    # ---------------------------------------------------------- any thread
    @property
    def discarding(self) -> bool:
        """True once closed with ``take_pending``: jobs taken just before must be cancelled."""
        return self._discarding

    def remove_future(self, future: JobFuture) -> bool:
        """Take out the queued job of ``future`` (it was cancelled). False if not queued."""
        with self._lock:
            for lane in (self._shared, *self._pinned):
                for job in lane:
                    if job.future is future:
                        lane.remove(job)
                        self._size -= 1
                        if self._space_waiters:
                            self._space.notify()
                        return True
            return False

    def close(self, *, take_pending: bool) -> list[Job]:
        """Refuse new jobs and wake everyone; with ``take_pending`` return the queued jobs."""
        with self._lock:
            self._closed = True
            taken: list[Job] = []
            if take_pending:
                self._discarding = True
                taken.extend(self._shared)
                self._shared.clear()
                for lane in self._pinned:
                    taken.extend(lane)
                    lane.clear()
                self._size = 0
            self._space.notify_all()
            for ready in self._ready:
                ready.notify_all()
            self._idle.clear()
            taken.sort(key=lambda job: job.seq)
            return taken
