"""Results that must touch game state, handed to the host's main thread.

Why: game state (the world, its entities) is owned by the game loop's thread
and is not thread-safe. A job that decides something for the game gives an
``apply`` callable at submit; when the job succeeds, the worker queues
``apply(result)`` here *before* it settles the future, and the game loop runs
the queued actions at its frame barrier with ``drain()``, on its own thread,
in completion order.

Threads: ``put`` from workers; ``drain`` from the one thread that owns the game
state (the "main thread"; any single thread may play that role). ``deque``
append/popleft are atomic, so no lock is needed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from moonbus.errors import ConfigError

__all__ = ["ActionQueue"]


class ActionQueue:
    """FIFO of ``(apply, result)`` pairs run by ``drain``."""

    def __init__(self) -> None:
        self._actions: deque[tuple[Callable[[Any], object], Any]] = deque()

    def put(self, apply: Callable[[Any], object], result: Any) -> None:
        self._actions.append((apply, result))

    def __len__(self) -> int:
        return len(self._actions)

    def drain(self, max_actions: int | None = None) -> int:
        """Run queued actions (at most ``max_actions``) and return how many ran.

        Actions queued while draining wait for the next call, so one frame's
        work is bounded. An action that raises propagates out of ``drain``;
        it counts as consumed and the remaining actions stay queued.
        """
        if max_actions is not None and max_actions < 0:
            raise ConfigError(f"max_actions must be >= 0 or None, not {max_actions!r}")
        budget = len(self._actions)
        if max_actions is not None:
            budget = min(budget, max_actions)
        ran = 0
        while ran < budget:
            apply, result = self._actions.popleft()
            ran += 1
            apply(result)
        return ran
