"""``Runner``: a pool of worker threads running short sandboxed Lua jobs.

Game code uses it for work that should not stall the game loop (AI decisions,
procedural generation, modders' calculations) and collects results through a
``concurrent.futures.Future``, a completion callback, ``await runner.run(...)``
or the action queue that the game loop drains at its frame barrier.

Persistent named states: a job with ``state="npc-ai"`` runs in an environment
whose globals survive between that state's jobs. An environment lives inside
one Lua engine, so all jobs of one state name run on one worker: the state is
pinned, on its first job, to the worker holding the fewest states (ties: the
lowest index), and stays there until ``drop_state``. Jobs of one state
therefore run one at a time, in submission order; jobs without a state run on
any free worker, tiny ones several to a Lua call when many are queued (each
with its own environment, limits and cancellation: see ``batch.py``).

Threads: ``submit``, ``run``, ``compile``, ``drop_state``, ``statistics`` and
``close`` may be called from any thread (``close`` not from a worker thread,
e.g. inside a completion callback); ``drain`` from the thread that owns the
game state. Completion callbacks run on the worker thread that finished the
job (or on the calling thread when the job failed or was cancelled there).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from moonbus.errors import (
    ConfigError,
    JobDataError,
    RunnerBusyError,
    RunnerClosedError,
    RunnerError,
    ScriptError,
)
from moonbus.lua.compile_limits import CompileCounters
from moonbus.lua.sandbox import SandboxFactory
from moonbus.runner.action_queue import ActionQueue
from moonbus.runner.compiled import DEFAULT_JOB_NAME, CompiledJob, JobCompiler
from moonbus.runner.future import JobFuture
from moonbus.runner.job import Job
from moonbus.runner.job_queue import JobQueue
from moonbus.runner.plain import check_args
from moonbus.runner.stats import (
    DEFAULT_WINDOW,
    Outcome,
    RunnerStatistics,
    SubmitStats,
    WorkerStats,
    summarize,
)
from moonbus.runner.worker import Worker
from moonbus.shared import SharedStore

__all__ = ["DEFAULT_JOB_MEMORY", "Runner"]

DEFAULT_JOB_MEMORY = 32 * 1024 * 1024
# Worker engines always track memory (per-job budgets need it); when the
# factory sets no limit, they are created with this effectively unlimited one.
_TRACKING_ONLY_LIMIT = 1 << 62


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be a positive finite number of seconds, not {value!r}")
    return float(value)


def _wait(value: float) -> float:
    """An acquire timeout: 0 (fail at once) or a positive number of seconds."""
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return _positive("acquire_timeout", value)


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive int, not {value!r}")
    return value


class Runner:
    """A pool of ``workers`` threads, each owning one reusable sandboxed Lua engine.

    ``factory``: the sandbox factory for the engines; when omitted the runner
    makes one and closes it on ``close``. ``queue_size`` bounds the jobs
    waiting for a worker; a ``submit`` that finds it full blocks up to
    ``acquire_timeout`` seconds, then raises ``RunnerBusyError``.
    ``default_timeout`` (seconds of Lua run time) and ``default_memory`` (bytes
    the job may allocate on top of what its engine already uses) apply to
    jobs submitted without their own. ``max_source_bytes`` (default: the
    factory's) caps the size of job sources and of ``load`` inside jobs;
    compiling a job runs under the job's time limit (``compile`` without a
    job: ``default_timeout``).
    """

    def __init__(
        self,
        workers: int = 2,
        *,
        factory: SandboxFactory | None = None,
        queue_size: int = 1024,
        acquire_timeout: float = 1.0,
        default_timeout: float = 1.0,
        default_memory: int = DEFAULT_JOB_MEMORY,
        chunk_cache_size: int = 256,
        latency_window: int = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.perf_counter,
        name: str = "moonbus-runner",
        max_source_bytes: int | None = None,
        shared: SharedStore | None = None,
    ) -> None:
        self._workers_n = _positive_int("workers", workers)
        queue_size = _positive_int("queue_size", queue_size)
        self._acquire_timeout = _wait(acquire_timeout)
        self._default_timeout = _positive("default_timeout", default_timeout)
        self._default_memory = _positive_int("default_memory", default_memory)
        chunk_cache_size = _positive_int("chunk_cache_size", chunk_cache_size)
        latency_window = _positive_int("latency_window", latency_window)
        self._clock = clock
        self._shared = shared  # read by jobs submitted with a namespace (shared_view.py)
        self._own_factory = factory is None
        self._factory = factory if factory is not None else SandboxFactory()
        self._queue = JobQueue(self._workers_n, queue_size)
        self._actions = ActionQueue()
        self._submit_stats = SubmitStats()
        self._worker_stats = [WorkerStats(latency_window) for _ in range(self._workers_n)]
        self._on_queued_cancel = self._cancelled_in_queue
        self._closed = False
        self._close_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._state_owner: dict[str, int] = {}
        self._states_per_worker = [0] * self._workers_n
        self._workers: list[Worker] = []
        self._compiler: JobCompiler | None = None
        self._compile_counters = CompileCounters()
        try:
            self._compiler = JobCompiler(self._factory.create(
                f"{name}-compiler", max_source_bytes=max_source_bytes,
                compile_counters=self._compile_counters,
            ))
            lua = self._factory.lua_module
            limit = self._factory.memory_limit
            for index in range(self._workers_n):
                engine = self._factory.create(
                    f"{name}-{index}", memory_limit=limit or _TRACKING_ONLY_LIMIT,
                    max_source_bytes=max_source_bytes, compile_counters=self._compile_counters,
                )
                try:
                    worker = Worker(
                        index,
                        engine,
                        lua_errors=(lua.LuaMemoryError, lua.LuaError),
                        queue=self._queue,
                        actions=self._actions,
                        stats=self._worker_stats[index],
                        clock=clock,
                        chunk_cache_size=chunk_cache_size,
                        thread_name=f"{name}-{index}",
                        shared=shared,
                    )
                except BaseException:
                    engine.close()
                    raise
                self._workers.append(worker)
        except BaseException:
            self._closed = True
            self._queue.close(take_pending=True)
            for worker in self._workers:
                worker.discard()
            self._release()
            raise
        for worker in self._workers:
            worker.start()

    # ------------------------------------------------------------ submitting
    def compile(
        self, source: str, name: str = DEFAULT_JOB_NAME, *, timeout: float | None = None
    ) -> CompiledJob:
        """Check ``source`` once; raises ``ScriptSyntaxError`` (message and ``where``),
        ``ScriptSourceTooLarge`` or ``ScriptTimeout`` (compiling took longer than
        ``timeout``, default ``default_timeout``)."""
        limit = self._default_timeout if timeout is None else _positive("timeout", timeout)
        return self._checker().compile(source, name, limit=limit)

    def submit(
        self,
        job: str | CompiledJob,
        args: Sequence[Any] = (),
        *,
        timeout: float | None = None,
        memory: int | None = None,
        state: str | None = None,
        callback: Callable[[Future[Any]], object] | None = None,
        apply: Callable[[Any], object] | None = None,
        acquire_timeout: float | None = None,
        namespace: str | None = None,
    ) -> JobFuture:
        """Queue a job and return its future.

        ``args`` arrive as the chunk's ``...``; the future's result is the
        chunk's return value (several values: a tuple; none: None). ``apply``,
        when given, is queued with the result for ``drain()`` (successful jobs
        only). ``callback(future)`` runs when the job ends.

        A source that does not compile, or arguments that are not plain data,
        fail the returned future at once (``ScriptSyntaxError``,
        ``ScriptSourceTooLarge``, ``ScriptTimeout`` when compiling it took
        longer than ``timeout`` on this thread, ``JobDataError``). Raises
        ``RunnerBusyError`` when no queue slot frees up within
        ``acquire_timeout`` and ``RunnerClosedError`` after ``close``.

        ``namespace``: the job gets a read-only ``shared`` global over that
        namespace of ``Runner(shared=...)`` (``moonbus.runner.shared_view``).
        """
        if self._closed:
            raise RunnerClosedError("the runner is closed; it accepts no more jobs")
        limit = self._default_timeout if timeout is None else _positive("timeout", timeout)
        budget = self._default_memory if memory is None else _positive_int("memory", memory)
        wait = self._acquire_timeout if acquire_timeout is None else _wait(acquire_timeout)
        if state is not None and (not isinstance(state, str) or not state):
            raise ConfigError(f"state must be a non-empty str or None, not {state!r}")
        if apply is not None and not callable(apply):
            raise ConfigError("apply must be callable")
        if namespace is not None:
            self._check_namespace(namespace)
        future = JobFuture(self._on_queued_cancel)
        if callback is not None:
            future.add_done_callback(callback)
        try:
            compiled = (
                job if isinstance(job, CompiledJob) else self._checker().compile(job, limit=limit)
            )
            plain = check_args(args)
        except (ScriptError, JobDataError) as exc:
            self._submit_stats.record(Outcome.FAILED)
            future.fail_now(exc)
            return future
        # Positional: half the cost of keywords on this hot path (see Job's field order).
        record = Job(compiled, plain, limit, budget, state, apply, future, self._clock(),
                     namespace)
        self._queue.put(record, None if state is None else self._worker_for(state), wait)
        return future

    async def run(
        self,
        job: str | CompiledJob,
        args: Sequence[Any] = (),
        *,
        timeout: float | None = None,
        memory: int | None = None,
        state: str | None = None,
        namespace: str | None = None,
    ) -> Any:
        """``await`` the result of a job (asyncio); cancelling the task cancels the job.

        When the queue is full, waiting for a slot happens in a thread, so the
        event loop never blocks on backpressure.
        """
        options: dict[str, Any] = {"timeout": timeout, "memory": memory, "state": state,
                                   "namespace": namespace}
        try:
            future = self.submit(job, args, acquire_timeout=0, **options)
        except RunnerBusyError:
            if self._acquire_timeout == 0:
                raise
            future = await asyncio.to_thread(self.submit, job, args, **options)
        return await asyncio.wrap_future(future)

    def drop_state(self, state: str) -> JobFuture:
        """Forget the persistent state ``state`` (after its queued jobs ran).

        The future's result is True when the state existed. A later job naming
        ``state`` starts from a fresh environment.
        """
        if self._closed:
            raise RunnerClosedError("the runner is closed; it accepts no more jobs")
        with self._state_lock:
            owner = self._state_owner.pop(state, None)
            if owner is not None:
                self._states_per_worker[owner] -= 1
        future = JobFuture()
        if owner is None:
            future.succeed_now(False)
            return future
        record = Job(
            compiled=None,
            args=(),
            timeout=self._default_timeout,
            memory=self._default_memory,
            state=state,
            apply=None,
            future=future,
            submitted_at=self._clock(),
        )
        self._queue.put(record, owner, self._acquire_timeout, counted=False)
        return future

    def _check_namespace(self, namespace: str) -> None:
        if self._shared is None:
            raise ConfigError(
                f"submit(namespace={namespace!r}) needs a shared store: Runner(shared=store)"
            )
        self._shared.namespace(namespace)  # a bad name raises here, not in the worker

    def _checker(self) -> JobCompiler:
        if self._compiler is None:
            raise RunnerClosedError("the runner is closed")
        return self._compiler

    def _worker_for(self, state: str) -> int:
        with self._state_lock:
            owner = self._state_owner.get(state)
            if owner is None:
                counts = self._states_per_worker
                owner = min(range(len(counts)), key=lambda i: (counts[i], i))
                self._state_owner[state] = owner
                counts[owner] += 1
            return owner

    def _cancelled_in_queue(self, future: JobFuture) -> None:
        self._queue.remove_future(future)
        self._submit_stats.record(Outcome.CANCELLED)

    # ------------------------------------------------------------ main thread
    def drain(self, max_actions: int | None = None) -> int:
        """Run queued ``apply(result)`` actions on this thread; return how many ran."""
        return self._actions.drain(max_actions)

    # ------------------------------------------------------------ any thread
    @property
    def workers(self) -> int:
        return self._workers_n

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending_actions(self) -> int:
        """Actions waiting for ``drain``."""
        return len(self._actions)

    def statistics(self) -> RunnerStatistics:
        """Counters, queue depth, busy workers and latency percentiles (a snapshot)."""
        with self._state_lock:
            states = len(self._state_owner)
        queue = self._queue
        return summarize(
            workers=self._worker_stats,
            submit=self._submit_stats,
            submitted=queue.accepted + self._submit_stats.counts[Outcome.FAILED],
            rejected=queue.rejected,
            queue_depth=queue.depth(),
            pending_actions=len(self._actions),
            states=states,
            compiles=self._compile_counters.snapshot(),
        )

    def close(self, cancel_pending: bool = False) -> None:
        """Stop accepting jobs, finish (or cancel) the pending ones, join the workers.

        With ``cancel_pending`` the queued jobs are cancelled and running jobs
        (also those of a running batch) are aborted; otherwise queued jobs still
        run (each within its time limit). Actions already queued stay available
        to ``drain``. Idempotent.
        """
        current = threading.current_thread()
        if any(worker.thread is current for worker in self._workers):
            raise RunnerError("close() cannot be called from a runner worker thread")
        with self._close_lock:
            first = not self._closed
            self._closed = True
            pending = self._queue.close(take_pending=cancel_pending) if first else []
        for record in pending:
            record.future.cancel()
        if cancel_pending:
            for worker in self._workers:
                for running in worker.running():
                    running.cancel()
        for worker in self._workers:
            worker.join()
        with self._close_lock:
            self._release()

    def _release(self) -> None:
        compiler, self._compiler = self._compiler, None
        if compiler is not None:
            compiler.close()
        if self._own_factory:
            self._factory.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Runner workers={self._workers_n} {state}>"
