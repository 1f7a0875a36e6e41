"""The durable event store interface every backend implements.

The bus calls ``append`` inside its commit section, in ``seq`` order, from
whichever thread emitted; a backend must therefore be thread-safe and must not
call back into the bus. In *durable* mode ``append`` returns only after the
event is on disk (or acknowledged by the server); in *fast* mode it may return
earlier, with the loss window the backend documents.

Queries return events oldest first (``seq`` order). Retention is applied by the
backend as part of appending, amortized (never a full scan per tick), using the
live ``StoreSettings`` it was given.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from moonbus.bus.event import Event

__all__ = ["EventStore", "StoreSettings", "StoreStatistics"]

DEFAULT_RETENTION_TICKS = 36_000


@dataclass
class StoreSettings:
    """Live, thread-safe settings read by the store on every append/prune.

    ``retention_ticks``: keep events whose tick is within this many ticks of the
    newest tick seen (``None`` = no tick limit). ``retention_count``: keep at most
    this many events per type (``None`` = no count limit). ``per_type`` overrides
    either limit for one type: ``{"tick": {"ticks": 600, "count": None}}``.
    ``types``: only these types are stored (``None`` = all). ``log_appends``: log
    each append at DEBUG (for operators chasing a problem).
    """

    retention_ticks: int | None = DEFAULT_RETENTION_TICKS
    retention_count: int | None = None
    per_type: dict[str, dict[str, int | None]] = field(default_factory=dict)
    types: frozenset[str] | None = None
    log_appends: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def limits_for(self, event_type: str) -> tuple[int | None, int | None]:
        """(ticks, count) retention for one type, after per-type overrides."""
        with self._lock:
            override = self.per_type.get(event_type, {})
            ticks = override.get("ticks", self.retention_ticks)
            count = override.get("count", self.retention_count)
        return ticks, count

    def wants(self, event_type: str) -> bool:
        """True when events of this type are stored at all."""
        types = self.types
        return types is None or event_type in types

    def update(self, **changes: Any) -> None:
        """Change settings atomically; takes effect on the next append."""
        with self._lock:
            for key, value in changes.items():
                if key.startswith("_") or not hasattr(self, key):
                    raise KeyError(key)
                setattr(self, key, value)


@dataclass(frozen=True)
class StoreStatistics:
    """A snapshot of a store's counters."""

    appended: int
    pruned: int
    stored: int
    pending: int


class EventStore(ABC):
    """A durable, append-only record of committed events."""

    settings: StoreSettings

    @abstractmethod
    def append(self, event: Event) -> None:
        """Record one committed event (called in ``seq`` order, from any thread)."""

    def append_many(self, events: Iterable[Event]) -> None:
        """Record several committed events, in order."""
        for event in events:
            self.append(event)

    @abstractmethod
    def query(
        self,
        *,
        after_tick: int | None = None,
        after_seq: int | None = None,
        types: Sequence[str] | None = None,
        limit: int | None = None,
        newest: bool = False,
    ) -> list[Event]:
        """Events oldest first. ``newest=True`` with ``limit`` returns the last
        ``limit`` matching events (still oldest first)."""

    @abstractmethod
    def summary(self, after_tick: int | None = None) -> dict[str, int]:
        """Count of stored events by type (types sorted by name)."""

    def snapshot(self, after_tick: int | None = None) -> dict[str, list[Event]]:
        """All stored events after a tick, grouped by type (types sorted)."""
        grouped: dict[str, list[Event]] = {}
        for event in self.query(after_tick=after_tick):
            grouped.setdefault(event.type, []).append(event)
        return dict(sorted(grouped.items()))

    @abstractmethod
    def clear(self, event_type: str | None = None) -> int:
        """Delete all events, or all of one type; returns how many were deleted."""

    def export_ndjson(self, fp: IO[str], **query: Any) -> int:
        """Write matching events as NDJSON lines; returns how many were written."""
        count = 0
        for event in self.query(**query):
            fp.write(event.to_json())
            fp.write("\n")
            count += 1
        return count

    @abstractmethod
    def last_seq(self) -> int:
        """Highest ``seq`` ever stored (0 when empty), so a reopened bus continues."""

    @abstractmethod
    def statistics(self) -> StoreStatistics:
        """Counters for introspection and benchmarks."""

    def flush(self) -> None:
        """Make everything appended so far durable (no-op in durable mode)."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release the backend. Idempotent."""

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
