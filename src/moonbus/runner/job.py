"""One unit of work for the runner, as it travels from ``submit`` to a worker.

Threads: made by the submitting thread, read by exactly one worker; never
changed after it is queued (except ``seq``, set by the queue under its lock).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moonbus.runner.compiled import CompiledJob
from moonbus.runner.future import JobFuture

__all__ = ["Job"]


@dataclass(slots=True, eq=False)
class Job:
    """A queued job. ``compiled is None`` marks the internal "drop this state" job.

    ``Runner.submit`` makes it with positional arguments (cheaper on its hot
    path): keep the field order.
    """

    compiled: CompiledJob | None
    args: tuple[Any, ...]
    timeout: float
    memory: int
    state: str | None
    apply: Callable[[Any], object] | None
    future: JobFuture
    submitted_at: float
    namespace: str | None = None  # a read-only ``shared`` of this namespace (shared_view.py)
    seq: int = 0
