"""The durable event store interface every backend implements.

The bus calls ``append`` inside its commit section, in ``seq`` order, from
whichever thread emitted; a backend must therefore be thread-safe and must not
call back into the bus. A backend shared by several processes numbers events
itself (``assigns_seq = True``): the bus then calls ``append_new`` instead, for
every event, and takes the seq the store assigned. In *durable* mode
``append`` returns only after the event is on disk (or acknowledged by the
server); in *fast* mode it may return earlier, with the loss window the
backend documents.

Queries return events oldest first (``seq`` order). Retention is applied by the
backend as part of appending, amortized (never a full scan per tick), using the
live ``StoreSettings`` it was given.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar, Protocol, Self

from moonbus.bus.event import Event
from moonbus.errors import ConfigError, StoreError

__all__ = [
    "EventStore",
    "FailureCounts",
    "Follower",
    "RemoteSink",
    "StoreSettings",
    "StoreStatistics",
    "check_query",
    "type_list",
]

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

    def __post_init__(self) -> None:
        checked = _checked_settings(
            {
                "retention_ticks": self.retention_ticks,
                "retention_count": self.retention_count,
                "per_type": self.per_type,
                "types": self.types,
                "log_appends": self.log_appends,
            }
        )
        for key, value in checked.items():
            setattr(self, key, value)

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
        """Change settings atomically; takes effect on the next append or prune.

        Every value is checked first; a bad key or value raises ``ConfigError``
        naming it and nothing changes.
        """
        checked = _checked_settings(changes)
        with self._lock:
            for key, value in checked.items():
                setattr(self, key, value)


_SETTING_NAMES = ("retention_ticks", "retention_count", "per_type", "types", "log_appends")
_LIMIT_NAMES = {"ticks", "count"}


MAX_LIMIT = 2**63 - 1  # SQLite's largest INTEGER: a larger limit cannot be bound in a prune


def _checked_limit(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        raise ConfigError(
            f"store setting {name} must be a whole number from 0 to 2^63-1 ({MAX_LIMIT}) "
            f"or None, not {value!r}"
        )
    return value


def _checked_settings(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and normalise setting values; raises ``ConfigError`` naming the bad one."""
    checked: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in _SETTING_NAMES:
            raise ConfigError(f"unknown store setting {key!r} (known: {', '.join(_SETTING_NAMES)})")
        if key in ("retention_ticks", "retention_count"):
            checked[key] = _checked_limit(key, value)
        elif key == "per_type":
            if not isinstance(value, Mapping):
                raise ConfigError(f"store setting per_type must be a mapping, not {value!r}")
            per_type: dict[str, dict[str, int | None]] = {}
            for event_type, limits in value.items():
                if not isinstance(event_type, str) or not isinstance(limits, Mapping):
                    raise ConfigError(
                        f"store setting per_type needs {{type: {{'ticks'|'count': n}}}}, "
                        f"not {event_type!r}: {limits!r}"
                    )
                unknown = set(limits) - _LIMIT_NAMES
                if unknown:
                    raise ConfigError(
                        f"store setting per_type[{event_type!r}] has unknown limit(s) "
                        f"{sorted(unknown)} (known: count, ticks)"
                    )
                per_type[event_type] = {
                    name: _checked_limit(f"per_type[{event_type!r}][{name!r}]", limit)
                    for name, limit in limits.items()
                }
            checked[key] = per_type
        elif key == "types":
            if value is None:
                checked[key] = None
            elif isinstance(value, str) or not isinstance(value, Iterable):
                raise ConfigError(
                    f"store setting types must be a collection of type names or None, not {value!r}"
                )
            else:
                names = frozenset(value)
                if not all(isinstance(name, str) for name in names):
                    raise ConfigError(f"store setting types must hold strings, not {value!r}")
                checked[key] = names
        else:
            if not isinstance(value, bool):
                raise ConfigError(f"store setting log_appends must be a bool, not {value!r}")
            checked[key] = value
    return checked


def type_list(types: str | Iterable[str] | None) -> list[str] | None:
    """Normalise a ``types`` query argument: one name or several, deduplicated, in order."""
    if types is None:
        return None
    if isinstance(types, str):
        return [types]
    names = list(dict.fromkeys(types))
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(f"event types must be strings, not {name!r}")
    return names


def check_query(after_tick: int | None, after_seq: int | None, limit: int | None) -> None:
    """Reject nonsensical query arguments with a ``ConfigError`` naming the argument."""
    for name, value in (("after_tick", after_tick), ("after_seq", after_seq)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{name} must be an int or None, not {value!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"limit must be a whole number >= 0 or None, not {limit!r}")


@dataclass(frozen=True)
class StoreStatistics:
    """A snapshot of a store's counters.

    ``append_failures``: appends that raised, by ``StoreError.kind``
    (``disk_full``, ``locked``, ``unreachable``...). ``retries``: commands
    re-sent after a transient failure (Redis). ``data_losses``: times the
    server was found to have lost events (Redis; see ``RedisEventStore``).
    ``checkpoints`` / ``checkpoint_failures``: WAL checkpoints the SQLite
    store's checkpoint thread ran / that failed (a failing one leaves the
    events in the WAL, which grows until one succeeds). ``journal_waits``:
    appends that found the SQLite journal full and waited for its writer;
    ``journal_orphans``: journals of another database moved aside at open
    (journal mode, ``moonbus.store.sqlite_journal_open``).
    """

    appended: int
    pruned: int
    stored: int
    pending: int
    append_failures: Mapping[str, int] = field(default_factory=dict)
    retries: int = 0
    data_losses: int = 0
    checkpoints: int = 0
    checkpoint_failures: int = 0
    journal_waits: int = 0
    journal_orphans: int = 0


class FailureCounts:
    """Append failures by kind, for ``StoreStatistics``. Any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def note(self, error: StoreError) -> None:
        with self._lock:
            self._counts[error.kind] = self._counts.get(error.kind, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))


class RemoteSink(Protocol):
    """Where a store's feed hands events emitted by other processes (the bus).

    ``attach_remote(after_seq)``: every event after ``after_seq`` will be
    accounted for by the feed. ``deliver_remote(events, upto=, own=)``: other
    processes' ``events`` (seq order), this process's own entries by seq, and
    the feed has read through seq ``upto``; commits, does not run handlers.
    ``drain()``: run the handlers of committed events (the feed's delivery thread).
    """

    def attach_remote(self, after_seq: int) -> None: ...

    def deliver_remote(
        self, events: Sequence[Event], *, upto: int, own: Mapping[int, Event]
    ) -> None: ...

    def drain(self) -> None: ...


class Follower(Protocol):
    """A running feed; ``close()`` stops it."""

    def close(self) -> None: ...


class EventStore(ABC):
    """A durable, append-only record of committed events.

    ``assigns_seq``: False for a store that records the seqs the bus assigns
    (``append``); True for one that assigns them itself (``append_new``), so
    that several processes writing one store share one numbering.
    """

    settings: StoreSettings
    assigns_seq: ClassVar[bool] = False

    def append_new(
        self,
        event_type: str,
        data: Mapping[str, Any] | None = None,
        *,
        tick: int | None = None,
        ts: int,
        source: str,
    ) -> Event:
        """Append a new event and return it with the seq the store assigned
        (stores with ``assigns_seq``). Called for every event, recorded type or
        not, from any thread; raises ``StoreError`` when nothing was appended."""
        raise StoreError(
            f"{type(self).__name__} does not assign seqs: the bus numbers the events "
            "and calls append()"
        )

    @abstractmethod
    def append(self, event: Event) -> None:
        """Record one committed event (called in ``seq`` order, from any thread)."""

    def append_many(self, events: Iterable[Event]) -> None:
        """Record several committed events, in order."""
        for event in events:
            self.append(event)

    def follow(self, sink: RemoteSink) -> Follower | None:
        """Start handing events that *other processes* append to this store to
        ``sink`` (from now on; nothing earlier is replayed). None when the store
        is private to this process."""
        return None

    @abstractmethod
    def query(
        self,
        *,
        after_tick: int | None = None,
        after_seq: int | None = None,
        types: str | Sequence[str] | None = None,
        limit: int | None = None,
        newest: bool = False,
    ) -> list[Event]:
        """Events oldest first. ``newest=True`` with ``limit`` returns the last
        ``limit`` matching events (still oldest first).

        ``after_tick`` keeps events whose tick is greater (events without a tick
        never match it); ``after_seq`` keeps events whose seq is greater;
        ``types`` is one type name or several. Bad arguments raise ``ConfigError``.
        """

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
    def prune(self) -> int:
        """Apply retention now (normally done amortized by ``append``); returns
        how many events were deleted."""

    @abstractmethod
    def last_seq(self) -> int:
        """Highest ``seq`` ever stored (0 when empty), so a reopened bus continues."""

    @abstractmethod
    def statistics(self) -> StoreStatistics:
        """Counters for introspection and benchmarks."""

    @abstractmethod
    def flush(self) -> None:
        """Make everything appended so far durable (nothing to do in durable mode)."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release the backend. Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
