"""Script runner: worker threads, each owning a reusable sandboxed Lua state.

See ``moonbus.runner.pool.Runner`` (SPEC §5).
"""

from moonbus.runner.compiled import CompiledJob
from moonbus.runner.future import JobFuture
from moonbus.runner.pool import DEFAULT_JOB_MEMORY, Runner
from moonbus.runner.stats import RunnerStatistics

__all__ = ["DEFAULT_JOB_MEMORY", "CompiledJob", "JobFuture", "Runner", "RunnerStatistics"]
