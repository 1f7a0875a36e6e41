"""Retention arithmetic, shared by every event-store backend (pure, no I/O).

Retention is per type: events of a type are kept while their tick is within
``retention_ticks`` of the newest tick the store has seen (``tick > newest -
ticks``), and at most ``retention_count`` of the newest events of a type are
kept. Events without a tick are not subject to the tick limit (there is nothing
to compare); only the count limit bounds them.

Pruning is amortized: ``PruneSchedule`` says when a backend should run the
(index-range) deletes: after ``every`` appends, or once the newest tick has
advanced ``tick_step`` ticks since the last prune. Between prunes a type may
briefly hold up to ``every`` extra events or ``tick_step`` extra ticks.

Thread ownership: ``plan_prune`` is a pure function; a ``PruneSchedule`` is
owned by whoever holds the backend's write lock (it has no lock of its own).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from moonbus.errors import ConfigError
from moonbus.store.base import StoreSettings

__all__ = ["PruneSchedule", "PruneStep", "plan_prune", "tick_cutoff"]


@dataclass(frozen=True)
class PruneStep:
    """What to delete for one type: first every event with ``tick <= max_tick``
    (when ``max_tick`` is not None), then all but the newest ``keep`` events
    (when ``keep`` is not None)."""

    type: str
    max_tick: int | None
    keep: int | None


def tick_cutoff(newest_tick: int | None, retention_ticks: int | None) -> int | None:
    """The highest tick that retention deletes, or None when nothing is deleted by tick.

    Keeping ``tick > newest - retention`` means deleting ``tick <= newest - retention``.
    """
    if newest_tick is None or retention_ticks is None:
        return None
    return newest_tick - retention_ticks


def plan_prune(
    settings: StoreSettings, types: Iterable[str], newest_tick: int | None
) -> list[PruneStep]:
    """One step per type that has a limit, in type-name order (deterministic)."""
    steps: list[PruneStep] = []
    for event_type in sorted(set(types)):
        ticks, count = settings.limits_for(event_type)
        cutoff = tick_cutoff(newest_tick, ticks)
        if cutoff is None and count is None:
            continue
        steps.append(PruneStep(event_type, cutoff, count))
    return steps


class PruneSchedule:
    """Decides when an amortized prune is due.

    ``note(appended, newest_tick)`` records a commit of ``appended`` events and
    returns True when a prune is due; ``done(newest_tick)`` records that one ran.
    """

    def __init__(self, *, every: int, tick_step: int) -> None:
        if every < 1:
            raise ConfigError(f"prune_every must be >= 1, not {every!r}")
        if tick_step < 1:
            raise ConfigError(f"prune_tick_step must be >= 1, not {tick_step!r}")
        self.every = every
        self.tick_step = tick_step
        self._since = 0
        self._last_tick: int | None = None

    def due(self, appended: int, newest_tick: int | None) -> bool:
        """Would a commit of ``appended`` more events make a prune due? (No state change.)"""
        if self._since + appended >= self.every:
            return True
        if newest_tick is None:
            return False
        if self._last_tick is None:
            return False
        return newest_tick - self._last_tick >= self.tick_step

    def note(self, appended: int, newest_tick: int | None) -> None:
        """Record a committed batch that did not prune."""
        self._since += appended
        if self._last_tick is None and newest_tick is not None:
            self._last_tick = newest_tick

    def done(self, newest_tick: int | None) -> None:
        """Record that a prune ran (with this newest tick)."""
        self._since = 0
        self._last_tick = newest_tick
