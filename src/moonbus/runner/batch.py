"""Several tiny runner jobs in one Lua call, each still on its own terms.

Why: lupa releases the GIL for every Lua call and must take it back when the
call returns. With two workers and a submitting thread, that is a thread
hand-off per job, and for a job like ``return 1 + ...`` the hand-off (and the
engine call around it) costs more than the job. A worker that finds several
such jobs queued therefore runs them in one Lua call: one hand-off, one
engine call, one memory-budget call for the lot, and their futures settled
back to back (a thread waiting on them wakes once, not once per job).

What a batch may hold (``Worker`` decides, see ``worker.py``): jobs without
a persistent state, of a chunk that ran on this worker before and came back
quickly (in less than ``TINY``) with a small result (so it is compiled and
likely tiny), with the same memory budget, a time limit of at least
``SLICE``, and arguments that are ``None``, booleans, numbers or strings of
at most ``SHORT`` characters. At most ``MAX_JOBS`` jobs, and no more than a
fair share of the queue.

Each job keeps its own semantics:

* **Environment.** Each job gets a fresh one, built in Lua as for a single
  job (the worker's trampoline); no state job is ever batched.
* **Errors.** Each job runs in its own protected call (the engine's
  ``protected_call``, the very call single jobs get), so an error fails that
  job only, with the same message. The batch stops after it.
* **Memory.** The engine's limit is set once, to its usage at the start of
  the batch plus the (shared) budget. A job's garbage does not count against
  the next one (Lua collects it before failing an allocation), and the batch
  keeps nothing else between jobs: it goes on after a job only when that job
  returned nothing, or one ``nil``, boolean, number or UTF-8 string of at
  most ``SHORT`` bytes, and left no coroutine that the engine keeps alive
  until the end of its call (``LuaEngine.coroutines_tracked``: one whose
  resume did not return normally, the error caught by the job). Any other
  outcome (several values, a table, other text, an error) stops the batch
  right after that job, and is read and reported exactly as for a single
  job.
* **Context.** Inside a batch a job has a little less room than alone (the
  batch's job table, a few Lua frames, one more C level of stack). So a job
  that runs out of memory or overflows the stack in a batch is not failed:
  it runs again alone, and that run decides.
* **Time.** The batch call's time limit is ``SLICE``, no more than any of
  its jobs' limits. A batch that uses it up is aborted like any runaway
  call; the job that was running then has not had its own full limit yet,
  so it is not failed either: it runs again alone, from the start, in a
  fresh environment and with its whole limit. A job therefore ends inside a
  batch only if it used less CPU time than ``SLICE`` (never more than its
  own limit), and a job that needs more ends the way a single job does.
* **Cancellation.** A batched job's future stays ``QUEUED`` until the worker
  settles it, so ``cancel()`` settles it at once, as for a queued job. If
  its Lua code is running at that moment, it is stopped by the slice at the
  latest; its outcome is dropped, and it is not run again.

So every outcome a batched job gets is one its run alone could have had. A
job run again alone cannot tell that it ran before: it has no state, its
environment was fresh, and a batch keeps nothing of it.

Jobs of a batch that did not start (it stopped early or was aborted) go back
to the head of the queue, in order, for any worker.

How results come back: the loop keeps the values of finished jobs in one
table reused by every batch (only small scalars, see above) and a count of
finished jobs, updated after the value, so after an abort ``progress()``
tells exactly which jobs finished. A normal end returns
``true, value1, ..., valueI`` (I < N when a job left a coroutine tracked);
a stop on a job's outcome returns
``false, {n = ..., ok, ...}, value1, ..., value(i-1)``: the stopping job's
packed outcome and the values of the jobs before it.

Threads: used only by the worker that owns the engine.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from moonbus.lua.engine import LuaEngine

__all__ = ["MAX_JOBS", "SHORT", "SLICE", "TINY", "LuaBatch", "small_args", "small_result"]

# CPU seconds a batch call may use before it is stopped (and the minimum time
# limit of a batched job). Well above one watchdog period, so a tiny batch on
# a loaded machine is not stopped by the watchdog's estimate for the time
# before its first sample.
SLICE = 0.005
# Jobs per batch: enough that a worker which gets the GIL only now and then
# (a thread submitting in a loop keeps it for a whole switch interval) still
# gets through the queue, and that hand-offs are rare; few enough that a
# batch of tiny jobs stays well inside SLICE.
MAX_JOBS = 64
# A chunk whose last single run took less time than this (wall time on the
# worker, engine call and bookkeeping included) may be batched; MAX_JOBS such
# jobs stay well inside SLICE.
TINY = 0.00005
# Longest string a batch passes as an argument or keeps as a result.
SHORT = 40

_FLAT = frozenset({int, float, bool, type(None)})

# The loop itself (Lua, shipped next to this module); read once, an immutable string.
_LOOP = resources.files("moonbus.runner").joinpath("batch_loop.lua").read_text("utf-8")


def small_args(args: tuple[Any, ...]) -> bool:
    """True when every argument is None, a bool, a number or a short string."""
    for value in args:
        kind = type(value)
        if kind not in _FLAT and not (kind is str and len(value) <= SHORT):
            return False
    return True


def small_result(value: Any) -> bool:
    """True for a single-job result a batch would keep going after."""
    kind = type(value)
    return kind in _FLAT or (kind is str and len(value.encode()) <= SHORT)


class LuaBatch:
    """The batch loop of one worker's engine (see the module docstring).

    ``trampoline`` is the worker's ``function(job, env, ...)``, which builds a
    fresh environment when ``env`` is nil and calls the job with it.
    """

    def __init__(self, engine: LuaEngine, trampoline: Any, blank: Any) -> None:
        env = engine.new_env()
        library = env["table"]
        chunk = engine.compile(_LOOP, "runner-batch", blank, capped=False)
        self._run, self._progress = engine.call(
            chunk,
            trampoline,
            engine.protected_call,
            engine.coroutines_tracked,
            env["select"],
            env["type"],
            library["unpack"],
            library["pack"],
            env["utf8"]["len"],
            SHORT,
            limit=None,
        )
        self._engine = engine

    def run(self, count: int, jobs: Any) -> tuple[Any, ...]:
        """Run ``count`` jobs; ``jobs`` is the Lua table
        ``{func, nargs, args..., func, nargs, args..., ...}``. Raises like
        ``LuaEngine.call`` when the batch call itself is aborted or fails."""
        return self._engine.call(self._run, count, jobs, limit=SLICE)

    def progress(self) -> tuple[int, tuple[Any, ...]]:
        """After an aborted ``run``: how many jobs finished, and their values."""
        values = self._engine.call(self._progress, limit=None)
        return int(values[0]), values[1:]

    @staticmethod
    def unpack(packed: Any) -> tuple[bool, tuple[Any, ...]]:
        """The ``(ok, values)`` of a stopping job, from its ``table.pack``."""
        items = tuple(packed[i] for i in range(1, int(packed["n"]) + 1))
        return bool(items[0]), items[1:]
