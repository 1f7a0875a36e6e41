"""One runner worker: a thread that owns one sandboxed Lua engine for its life.

Why reuse one engine: making a Lua state, running the sandbox prelude and
compiling the job costs far more than a short job itself. A worker keeps:

* its ``LuaEngine`` (from the sandbox factory), closed when the worker exits;
* a chunk cache: ``CompiledJob.digest`` → the compiled job function, bounded
  (least recently used first out). Jobs are compiled as
  ``function(_ENV, ...)`` wrappers (see ``moonbus.runner.compiled``), so one
  compiled function serves every environment;
* the persistent environments of the named states pinned to it.

Each job gets a fresh sandboxed global table, built inside the job's own Lua
call (see ``env_builder.py``; ``engine.new_env()`` when the builder cannot
reproduce the sandbox), unless it names a state. Memory: each job first sets
the engine's limit to its usage at that moment plus the job's budget (one
engine call); the limit stays until the next job sets its own, since no Lua
runs on the engine between jobs. Right before the job's Lua call the worker
hands the future the token that call will get (``JobFuture.entering_lua``
with ``engine.next_token()``): a ``cancel()`` from then on aborts the call,
even one that has not started yet (the engine records the token and the call
aborts as it starts), and a cancel that came earlier skips the call.

Batches: when several tiny jobs are queued, the worker takes them together
(``JobQueue.take_batch``) and runs them in one Lua call (``batch.py``: why,
and how each job keeps its own environment, errors, memory budget, time
limit and cancellation). A chunk may join a batch once a single run of it on
this worker came back quickly (in less than ``TINY`` of wall time, never
less than the CPU time it took) with a small result; it is taken off that
list when a batch had to be stopped on it for its time (``SLICE``) or
because it returned more than a batch keeps. A job that was running when
its batch ran out of time runs again alone; the jobs after it go back to the
queue.

No outcome of a job (error, timeout, out of memory, cancel, bad result) leaves
anything behind in the engine except what a persistent state keeps by design;
the worker then takes its next job normally.

Threads: everything here runs on the worker's own thread except ``start``,
``join`` and ``running`` (read by ``Runner.close`` to cancel running jobs),
and ``_fits``, which the queue calls on this worker's thread under its lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from moonbus.errors import (
    JobDataError,
    ScriptCancelled,
    ScriptError,
    ScriptMemoryError,
    ScriptTimeout,
)
from moonbus.lua.engine import LuaEngine
from moonbus.runner.action_queue import ActionQueue
from moonbus.runner.batch import (
    MAX_JOBS,
    SLICE,
    TINY,
    LuaBatch,
    small_args,
    small_result,
)
from moonbus.runner.compiled import CompiledJob, wrap_source
from moonbus.runner.env_builder import make_builder
from moonbus.runner.future import JobFuture
from moonbus.runner.job import Job
from moonbus.runner.job_data import args_fit, args_to_lua, not_utf8, results_to_py
from moonbus.runner.job_queue import JobQueue
from moonbus.runner.shared_view import SharedViews
from moonbus.runner.stats import Outcome, WorkerStats

__all__ = ["Worker"]

log = logging.getLogger(__name__)

_SCALARS = frozenset({int, float, str, bool, type(None)})
# In Lua's "stack overflow" and "C stack overflow" errors.
_STACK_OVERFLOW = "stack overflow"


def _all_scalars(values: tuple[Any, ...]) -> bool:
    # A plain loop: cheaper than all() with a generator on one or two values.
    for value in values:  # noqa: SIM110
        if type(value) not in _SCALARS:
            return False
    return True


def _never(first: Job, job: Job) -> bool:
    return False


# job(env, ...) with a fresh environment unless one is given (and, for jobs
# that read shared values, the read-only ``shared`` view set in it first).
_TRAMPOLINE = resources.files("moonbus.runner").joinpath("trampoline.lua").read_text("utf-8")
_PRELOAD = "local _ = string.find"


class Worker:
    """A worker thread and the Lua engine it owns (see the module docstring)."""

    def __init__(
        self,
        index: int,
        engine: LuaEngine,
        *,
        lua_errors: tuple[type[BaseException], type[BaseException]],
        queue: JobQueue,
        actions: ActionQueue,
        stats: WorkerStats,
        clock: Callable[[], float],
        chunk_cache_size: int,
        thread_name: str,
        shared: Any = None,
    ) -> None:
        self.index = index
        self._engine = engine
        self._lua_memory_error, self._lua_error = lua_errors
        self._queue = queue
        self._actions = actions
        self._stats = stats
        self._clock = clock
        self._chunk_cache_size = chunk_cache_size
        self._chunks: OrderedDict[str, Any] = OrderedDict()
        self._tiny: dict[str, Any] = {}  # digest -> function, chunks that may be batched
        self._states: dict[str, Any] = {}
        self._current: JobFuture | None = None
        self._batch_jobs: list[Job] = []  # the batch running now
        # Pattern functions load on first use (lua.lazy_strings); a worker's state
        # serves many jobs: load them now, so no job's budget pays for them and
        # every job environment is a plain copy of the libraries (make_builder).
        engine.call(engine.compile(_PRELOAD, "runner-preload", engine.new_env(), capped=False),
                    limit=None)
        self._blank = engine.table()
        builder, self.env_builder_problem = make_builder(engine, self._blank)
        self._fast_env = builder is not None
        if builder is None:
            log.warning(
                "runner worker %d: building job environments with engine.new_env() (%s)",
                index,
                self.env_builder_problem,
            )
        # The second trampoline also sets a job's read-only ``shared`` (shared_view.py).
        self._trampoline, self._with_shared = engine.call(
            engine.compile(_TRAMPOLINE, "runner-trampoline", self._blank, capped=False),
            builder,
            limit=None,
        )
        self._shared = shared
        self._views: SharedViews | None = None
        # Batches build environments in Lua: only with the generated builder.
        self._batch = LuaBatch(engine, self._trampoline, self._blank) if self._fast_env else None
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    # ------------------------------------------------------------ owner thread
    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def running(self) -> list[JobFuture]:
        """Futures of the job or batch running now (a racy snapshot, for cancellation)."""
        current = self._current
        if current is not None:
            return [current]
        return [job.future for job in self._batch_jobs]

    def discard(self) -> None:
        """Close the engine of a worker whose thread never started."""
        self._teardown()

    # ------------------------------------------------------------ worker thread
    def _run(self) -> None:
        take, index = self._queue.take_batch, self.index
        fits = self._fits if self._batch is not None else _never
        try:
            while jobs := take(index, fits, MAX_JOBS):
                if len(jobs) == 1:
                    self._serve(jobs[0])
                else:
                    self._serve_batch(jobs)
        finally:
            self._teardown()

    def _serve(self, job: Job) -> None:
        try:
            self._execute(job)
        except Exception as exc:  # a bug in the runner: keep serving jobs
            log.exception("runner worker %d: internal error", self.index)
            self._stats.busy = False
            if not job.future.done():
                self._stats.record(Outcome.FAILED, self._clock() - job.submitted_at)
                job.future.finish()
                job.future.set_exception(exc)

    def _serve_batch(self, jobs: list[Job]) -> None:
        try:
            alone = self._execute_batch(jobs)
        except Exception as exc:  # a bug in the runner: keep serving jobs
            log.exception("runner worker %d: internal error in a batch", self.index)
            now = self._clock()
            for job in jobs:
                if job.future.finish_queued():  # neither settled nor cancelled yet
                    self._stats.record(Outcome.FAILED, now - job.submitted_at)
                    job.future.set_exception(exc)
            return
        if alone is not None:
            self._serve(alone)

    def _teardown(self) -> None:
        self._chunks.clear()
        self._tiny.clear()
        self._states.clear()
        self._trampoline = self._with_shared = self._blank = self._batch = None
        self._views = None
        self._engine.close()

    def _execute(self, job: Job) -> None:
        future = job.future
        if job.compiled is None:
            self._drop_state(job)
            return
        if self._queue.discarding and future.cancel():
            return  # taken just before close(cancel_pending=True)
        if not future.claim():
            return  # cancelled while queued; counted by the runner
        stats = self._stats
        stats.busy = True
        self._current = future
        digest = job.compiled.digest
        learn = self._batch is not None and digest not in self._tiny
        started = time.perf_counter() if learn else 0.0
        try:
            outcome, value = self._run_job(job, job.compiled)
        finally:
            self._current = None
        if learn and outcome is Outcome.DONE and small_result(value):
            func = self._chunks.get(digest)
            if func is not None and time.perf_counter() - started < TINY:
                self._tiny[digest] = func
        cancelled = future.finish()
        if cancelled:
            outcome = Outcome.CANCELLED
        stats.record(outcome, self._clock() - job.submitted_at)
        stats.busy = False
        if cancelled:
            future.settle_cancelled()
        else:
            self._hand_over(job, outcome, value)

    def _run_job(self, job: Job, compiled: CompiledJob) -> tuple[Outcome, Any]:
        # Hot path: cached chunk, fresh env, plain scalars inlined (a frame ~ a lock).
        engine = self._engine
        try:
            engine.set_memory_budget(job.memory)
            func = self._chunks.get(compiled.digest)
            if func is None:
                func = self._load(compiled, job.timeout)
            else:
                self._chunks.move_to_end(compiled.digest)
            state = job.state
            if state is None:
                env = None if self._fast_env else engine.new_env()
            else:
                env = self._state_env(state)
            args: Sequence[Any] = job.args
            if not _all_scalars(job.args):
                args = self._to_lua(job.args)
            else:  # lupa pushes them unprotected: they must fit (lua_room)
                args_fit(engine.converter, job.args)
            namespace = job.namespace
            if namespace is not None:
                args = (self._shared_view(namespace), *args)
            if not job.future.entering_lua(engine, engine.next_token()):
                return Outcome.CANCELLED, None  # cancelled while preparing; Lua never ran
            trampoline = self._trampoline if namespace is None else self._with_shared
            values = engine.call(trampoline, func, env, *args, limit=job.timeout)
            return self._outcome_of(values)
        except ScriptTimeout as exc:
            return Outcome.TIMED_OUT, exc
        except ScriptMemoryError as exc:
            return Outcome.OUT_OF_MEMORY, exc
        except ScriptCancelled as exc:
            return Outcome.CANCELLED, exc
        except (ScriptError, JobDataError) as exc:
            return Outcome.FAILED, exc
        except UnicodeEncodeError as exc:
            problem = JobDataError(f"job arguments contain text that is not valid Unicode: {exc}")
            problem.__cause__ = exc
            return Outcome.FAILED, problem
        except UnicodeDecodeError as exc:
            return Outcome.FAILED, not_utf8(exc)
        except Exception as exc:  # a bug: fail the job, keep the worker
            log.exception("runner worker %d: unexpected error in job", self.index)
            return Outcome.FAILED, exc

    def _load(self, compiled: CompiledJob, limit: float) -> Any:
        """Compile a job that is not in the chunk cache yet, and cache it.

        Both compiles run under the job's time limit, and the plain source
        under the size cap (the wrapped one is that source plus the wrapper).
        """
        engine = self._engine
        engine.compile(compiled.source, compiled.name, self._blank, limit=limit)  # complete?
        wrapper = engine.compile(
            wrap_source(compiled.source), compiled.name, self._blank, limit=limit,
            capped=False,
        )
        func = engine.call(wrapper, limit=limit)[0]
        self._chunks[compiled.digest] = func
        if len(self._chunks) > self._chunk_cache_size:
            evicted, _ = self._chunks.popitem(last=False)
            self._tiny.pop(evicted, None)
        return func

    # ------------------------------------------------------------ batches
    def _fits(self, first: Job, job: Job) -> bool:
        """May ``job`` run in one batch with ``first``? (Queue lock held: plain reads.)"""
        compiled = job.compiled
        return (
            compiled is not None
            and compiled.digest in self._tiny  # first: it rules out most other jobs
            and job.state is None
            and job.namespace is None
            and job.memory == first.memory
            and job.timeout >= SLICE
            and small_args(job.args)
        )

    def _execute_batch(self, jobs: list[Job]) -> Job | None:
        """Run a batch; returns the job to run again alone, if one was stopped."""
        if self._queue.discarding:
            for job in jobs:
                job.future.cancel()  # taken just before close(cancel_pending=True)
            return None
        stats = self._stats
        stats.busy = True
        self._batch_jobs = jobs
        try:
            return self._run_batch(jobs)
        finally:
            self._batch_jobs = []
            stats.busy = False

    def _run_batch(self, jobs: list[Job]) -> Job | None:
        batch, engine, tiny = self._batch, self._engine, self._tiny
        assert batch is not None  # only workers with a batch loop take batches
        flat: list[Any] = []
        digest = ""
        for job in jobs:
            compiled = job.compiled
            if compiled is not None and compiled.digest != digest:  # always set (see _fits)
                digest = compiled.digest
                self._chunks.move_to_end(digest)  # recently used, as for a single job
            flat.append(tiny[digest])
            flat.append(len(job.args))
            flat.extend(job.args)
        try:
            # The job table is made before the budget is set: every job may
            # allocate its budget on top of what the batch itself holds; the
            # table gets a budget of its own and must fit first (lua_room):
            # lupa builds it unprotected, where a failed allocation is a panic.
            engine.set_memory_budget(jobs[0].memory)
            engine.converter.room.admit(flat)
            table = engine.table_from(flat)
        except Exception:  # text that is not valid Unicode, memory: one by one
            self._queue.put_back(jobs[1:])
            return jobs[0]
        try:
            engine.set_memory_budget(jobs[0].memory)
            values = batch.run(len(jobs), table)
        except ScriptError as exc:  # the batch call was aborted (its time) or failed
            done, finished = batch.progress()
            self._settle_values(jobs, finished, self._clock())
            if done >= len(jobs):  # aborted after the last job had finished
                return None
            stopped = jobs[done]
            if isinstance(exc, ScriptTimeout) and stopped.compiled is not None:
                tiny.pop(stopped.compiled.digest, None)
            self._queue.put_back(jobs[done + 1 :])
            return stopped
        now = self._clock()
        if values[0] is True:
            self._settle_values(jobs, values[1:], now)
            self._queue.put_back(jobs[len(values) - 1 :])  # stopped early: see batch.py
            return None
        # Stopped early: values[1] is the stopping job's packed outcome.
        done = len(values) - 2
        self._settle_values(jobs, values[2:], now)
        stopping = jobs[done]
        outcome, value = self._stopped_outcome(batch, values[1])
        self._queue.put_back(jobs[done + 1 :])
        if outcome is Outcome.OUT_OF_MEMORY or (
            outcome is Outcome.FAILED and _STACK_OVERFLOW in str(value)
        ):
            return stopping  # less room in a batch than alone: its run alone decides
        if outcome is Outcome.DONE and stopping.compiled is not None:
            tiny.pop(stopping.compiled.digest, None)  # it returns what a batch cannot keep
        self._settle(stopping, outcome, value, now)
        return None

    def _stopped_outcome(self, batch: LuaBatch, packed: Any) -> tuple[Outcome, Any]:
        """The outcome of the job a batch stopped on, as if it had run alone."""
        try:
            ok, values = batch.unpack(packed)
        except UnicodeDecodeError as exc:
            return Outcome.FAILED, not_utf8(exc)
        except Exception as exc:  # as in _run_job: lupa could not read the values
            log.exception("runner worker %d: unexpected error in job", self.index)
            return Outcome.FAILED, exc
        if ok:
            return self._outcome_of(values)
        error = self._engine.script_error(str(values[0]) if values else "unknown error")
        if isinstance(error, ScriptMemoryError):
            return Outcome.OUT_OF_MEMORY, error
        return Outcome.FAILED, error

    def _settle_values(self, jobs: list[Job], values: Sequence[Any], now: float) -> None:
        """Settle the first ``len(values)`` jobs with their single (scalar) values."""
        record = self._stats.record
        done = Outcome.DONE
        for job, value in zip(jobs, values):  # noqa: B905 (values may be shorter)
            future = job.future
            if future.finish_queued():  # else cancelled while its batch ran
                record(done, now - job.submitted_at)
                if job.apply is not None:
                    self._actions.put(job.apply, value)
                future.set_result(value)

    def _settle(self, job: Job, outcome: Outcome, value: Any, now: float) -> None:
        future = job.future
        if not future.finish_queued():
            return  # cancelled while its batch ran; counted by the runner
        self._stats.record(outcome, now - job.submitted_at)
        self._hand_over(job, outcome, value)

    def _hand_over(self, job: Job, outcome: Outcome, value: Any) -> None:
        """Settle a finished job's future (and queue its action when it succeeded)."""
        if outcome is Outcome.DONE:
            if job.apply is not None:
                self._actions.put(job.apply, value)
            job.future.set_result(value)
        else:
            job.future.set_exception(value)

    def _outcome_of(self, values: tuple[Any, ...]) -> tuple[Outcome, Any]:
        """A job's values as its result, as for a single job."""
        try:
            if _all_scalars(values):
                if not values:
                    return Outcome.DONE, None
                return Outcome.DONE, values[0] if len(values) == 1 else values
            return Outcome.DONE, self._to_py(values)
        except ScriptMemoryError as exc:
            return Outcome.OUT_OF_MEMORY, exc
        except (ScriptError, JobDataError) as exc:
            return Outcome.FAILED, exc
        except UnicodeDecodeError as exc:
            return Outcome.FAILED, not_utf8(exc)

    def _shared_view(self, namespace: str) -> Any:
        views = self._views
        if views is None:
            views = self._views = SharedViews(self._engine, self._blank, self._shared)
        return views.view(namespace)

    def _state_env(self, state: str) -> Any:
        env = self._states.get(state)
        if env is None:
            env = self._engine.new_env()
            self._states[state] = env
        return env

    def _to_lua(self, args: tuple[Any, ...]) -> list[Any]:
        return args_to_lua(self._engine.converter, args, self._lua_memory_error)

    def _to_py(self, values: tuple[Any, ...]) -> Any:
        return results_to_py(self._engine.converter, values, self._lua_memory_error,
                             self._lua_error)

    def _drop_state(self, job: Job) -> None:
        # Runs even when its future was cancelled: the runner forgot the name, so a
        # later job of that name must never find this environment.
        existed = job.state is not None and self._states.pop(job.state, None) is not None
        if job.future.claim():
            job.future.finish()
            job.future.set_result(existed)
