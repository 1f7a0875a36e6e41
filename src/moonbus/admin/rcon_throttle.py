"""Slow down repeated failed RCON logins from one address.

Why: an RCON password is the only thing between the internet and the admin
commands, so guessing it must be slow. After ``n`` failed logins from an
address, its attempts are checked at least ``delay(n)`` seconds apart
(``base_delay``, 2x, 4x ... capped at ``max_delay``), counted from the
previous check: an admin who mistypes once and retries a few seconds later
does not wait; a script hammering the port does. A success forgets the
address, and so does a quiet spell of ``forget_after`` seconds.

Parallel connections from one address do not each get a free guess:
:meth:`LoginThrottle.reserve` hands out check times one after another.

Pure: time comes from the ``clock`` you pass in, and the caller does the
waiting, so tests drive it without sleeping. Threads: not thread-safe; the
RCON server calls it only from its event-loop thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from moonbus.errors import ConfigError

__all__ = ["LoginThrottle"]


@dataclass(slots=True)
class _Record:
    failures: int
    next_slot: float  # when the latest attempt was (or will be) checked
    last_seen: float


class LoginThrottle:
    """Per-address failure counts and the wait each new attempt must serve."""

    def __init__(
        self,
        *,
        base_delay: float = 0.25,
        max_delay: float = 10.0,
        forget_after: float = 900.0,
        max_tracked: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if base_delay < 0 or max_delay < base_delay:
            raise ConfigError(
                f"need 0 <= auth failure delay <= max delay, got {base_delay} and {max_delay}"
            )
        if forget_after <= 0:
            raise ConfigError(f"forget_after must be positive, got {forget_after}")
        if max_tracked < 1:
            raise ConfigError(f"max_tracked must be at least 1, got {max_tracked}")
        self._base = float(base_delay)
        self._max = float(max_delay)
        self._forget_after = float(forget_after)
        self._max_tracked = max_tracked
        self._clock = clock
        self._records: dict[str, _Record] = {}  # oldest activity first

    def delay_after(self, failures: int) -> float:
        """Wait imposed on an attempt made after ``failures`` failed ones."""
        if failures <= 0:
            return 0.0
        return min(self._base * 2.0 ** min(failures - 1, 64), self._max)

    def failures(self, address: str) -> int:
        """Failed logins from ``address`` still remembered."""
        record = self._current(address, self._clock())
        return 0 if record is None else record.failures

    def tracked(self) -> int:
        """Addresses with remembered failures (bounded by ``max_tracked``)."""
        return len(self._records)

    def reserve(self, address: str) -> float:
        """Book a check for an attempt from ``address``; return seconds to wait first."""
        now = self._clock()
        record = self._current(address, now)
        if record is None:
            return 0.0
        slot = max(now, record.next_slot + self.delay_after(record.failures))
        record.next_slot = slot
        return slot - now

    def record_failure(self, address: str) -> None:
        """Count a failed login from ``address``."""
        now = self._clock()
        record = self._current(address, now)
        if record is None:
            record = _Record(failures=0, next_slot=now, last_seen=now)
        else:
            del self._records[address]  # re-insert below: keeps the dict oldest-first
        record.failures += 1
        record.last_seen = now
        self._records[address] = record
        self._prune(now)

    def record_success(self, address: str) -> None:
        """Forget ``address``: it knows the password."""
        self._records.pop(address, None)

    def _current(self, address: str, now: float) -> _Record | None:
        record = self._records.get(address)
        if record is not None and now - record.last_seen > self._forget_after:
            del self._records[address]
            return None
        return record

    def _prune(self, now: float) -> None:
        while self._records:
            oldest_address, oldest = next(iter(self._records.items()))
            stale = now - oldest.last_seen > self._forget_after
            if not stale and len(self._records) <= self._max_tracked:
                return
            del self._records[oldest_address]
