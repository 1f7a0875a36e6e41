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
reproduce the sandbox), unless it names a state. Memory: for the duration of
a job the engine's limit is its usage at job start plus the job's budget,
then the factory limit again. The Lua call goes through a small trampoline
whose first act is to report the call's abort token
(``JobFuture.entered_lua``), so ``cancel()`` can abort it even if it arrives
while the call is starting.

No outcome of a job (error, timeout, out of memory, cancel, bad result) leaves
anything behind in the engine except what a persistent state keeps by design;
the worker then takes its next job normally.

Threads: everything here runs on the worker's own thread except ``start``,
``join`` and ``current`` (read by ``Runner.close`` to cancel running jobs).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
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
from moonbus.runner.compiled import CompiledJob, wrap_source
from moonbus.runner.env_builder import make_builder
from moonbus.runner.future import JobFuture
from moonbus.runner.job import Job
from moonbus.runner.job_queue import JobQueue
from moonbus.runner.stats import Outcome, WorkerStats

__all__ = ["Worker"]

log = logging.getLogger(__name__)

_SCALARS = frozenset({int, float, str, bool, type(None)})


def _all_scalars(values: tuple[Any, ...]) -> bool:
    # A plain loop: cheaper than all() with a generator on one or two values.
    for value in values:  # noqa: SIM110
        if type(value) not in _SCALARS:
            return False
    return True

_TRAMPOLINE = """
local started, build_env = ...
return function(job, env, ...)
  started()
  if env == nil then
    env = build_env()
  end
  return job(env, ...)
end
"""


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
        base_memory_limit: int | None,
        chunk_cache_size: int,
        thread_name: str,
    ) -> None:
        self.index = index
        self._engine = engine
        self._lua_memory_error, self._lua_error = lua_errors
        self._queue = queue
        self._actions = actions
        self._stats = stats
        self._clock = clock
        self._base_limit = base_memory_limit
        self._chunk_cache_size = chunk_cache_size
        self._chunks: OrderedDict[str, Any] = OrderedDict()
        self._states: dict[str, Any] = {}
        self._current: JobFuture | None = None
        self._blank = engine.table()
        builder, self.env_builder_problem = make_builder(engine, self._blank)
        self._fast_env = builder is not None
        if builder is None:
            log.warning(
                "runner worker %d: building job environments with engine.new_env() (%s)",
                index,
                self.env_builder_problem,
            )
        self._trampoline = engine.call(
            engine.compile(_TRAMPOLINE, "runner-trampoline", self._blank),
            self._started,
            builder,
            limit=None,
        )[0]
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    # ------------------------------------------------------------ owner thread
    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def current(self) -> JobFuture | None:
        """The future of the job running now (a racy snapshot, for cancellation)."""
        return self._current

    def discard(self) -> None:
        """Close the engine of a worker whose thread never started."""
        self._teardown()

    # ------------------------------------------------------------ worker thread
    def _run(self) -> None:
        try:
            while (job := self._queue.take(self.index)) is not None:
                try:
                    self._execute(job)
                except Exception as exc:  # a bug in the runner: keep serving jobs
                    log.exception("runner worker %d: internal error", self.index)
                    self._stats.busy = False
                    if not job.future.done():
                        self._stats.record(Outcome.FAILED, self._clock() - job.submitted_at)
                        job.future.finish()
                        job.future.set_exception(exc)
        finally:
            self._teardown()

    def _teardown(self) -> None:
        self._chunks.clear()
        self._states.clear()
        self._trampoline = self._blank = None
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
        try:
            outcome, value = self._run_job(job, job.compiled)
        finally:
            self._current = None
        cancelled = future.finish()
        if cancelled:
            outcome = Outcome.CANCELLED
        stats.record(outcome, self._clock() - job.submitted_at)
        stats.busy = False
        if cancelled:
            future.settle_cancelled()
        elif outcome is Outcome.DONE:
            if job.apply is not None:
                self._actions.put(job.apply, value)
            future.set_result(value)
        else:
            future.set_exception(value)

    def _started(self) -> None:
        """Called from Lua by the trampoline, first thing in every job call."""
        future = self._current
        token = self._engine.current_token()
        if future is not None and token is not None:
            future.entered_lua(self._engine, token)

    def _run_job(self, job: Job, compiled: CompiledJob) -> tuple[Outcome, Any]:
        engine = self._engine
        used = engine.memory_used() or 0
        engine.set_memory_limit(used + job.memory)
        try:
            func = self._chunk(compiled, job.timeout)
            env = self._env(job.state)
            args = self._to_lua(job.args)
            values = engine.call(self._trampoline, func, env, *args, limit=job.timeout)
            return Outcome.DONE, self._to_py(values)
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
        except Exception as exc:  # a bug: fail the job, keep the worker
            log.exception("runner worker %d: unexpected error in job", self.index)
            return Outcome.FAILED, exc
        finally:
            engine.set_memory_limit(self._base_limit)

    def _chunk(self, compiled: CompiledJob, limit: float) -> Any:
        func = self._chunks.get(compiled.digest)
        if func is not None:
            self._chunks.move_to_end(compiled.digest)
            return func
        engine = self._engine
        engine.compile(compiled.source, compiled.name, self._blank)  # a complete chunk?
        wrapper = engine.compile(wrap_source(compiled.source), compiled.name, self._blank)
        func = engine.call(wrapper, limit=limit)[0]
        self._chunks[compiled.digest] = func
        if len(self._chunks) > self._chunk_cache_size:
            self._chunks.popitem(last=False)
        return func

    def _env(self, state: str | None) -> Any:
        if state is None:
            return None if self._fast_env else self._engine.new_env()
        env = self._states.get(state)
        if env is None:
            env = self._engine.new_env()
            self._states[state] = env
        return env

    def _to_lua(self, args: tuple[Any, ...]) -> tuple[Any, ...] | list[Any]:
        if _all_scalars(args):
            return args  # Lua gets these as themselves
        to_lua = self._engine.converter.to_lua
        try:
            return [to_lua(value) for value in args]
        except TypeError as exc:
            raise JobDataError(f"job arguments are not plain data: {exc}") from exc
        except self._lua_memory_error as exc:
            raise ScriptMemoryError("out of memory while copying the job arguments") from exc

    def _to_py(self, values: tuple[Any, ...]) -> Any:
        if _all_scalars(values):
            if not values:
                return None
            return values[0] if len(values) == 1 else values
        to_py = self._engine.converter.to_py
        converted = []
        for number, value in enumerate(values, 1):
            try:
                converted.append(to_py(value))
            except TypeError as exc:
                raise JobDataError(f"job result #{number} is not plain data: {exc}") from exc
            except self._lua_memory_error as exc:
                raise ScriptMemoryError(
                    f"out of memory while reading job result #{number}"
                ) from exc
            except self._lua_error as exc:
                raise ScriptError(f"job result #{number} could not be read: {exc}") from exc
        if not converted:
            return None
        if len(converted) == 1:
            return converted[0]
        return tuple(converted)

    def _drop_state(self, job: Job) -> None:
        # Runs even when its future was cancelled: the runner already forgot the
        # name, so a later job of that name must never find this environment.
        existed = job.state is not None and self._states.pop(job.state, None) is not None
        if job.future.claim():
            job.future.finish()
            job.future.set_result(existed)
