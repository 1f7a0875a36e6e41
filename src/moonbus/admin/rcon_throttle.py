"""Slow down repeated failed RCON logins from one address, without locking anyone out.

Why this shape: an RCON password is the only thing between the internet and
the admin commands, so guessing it must be slow; but an operator must never
be locked out by someone else's failures, and connections from one machine
(one NAT, one shell box) cannot be told apart before the password is checked.
A throttle that queues attempts one after another per address (one check per
``delay`` seconds) lets 60 parallel wrong logins push a correct one minutes
back. So the cost of a failure is put on the failing attempt instead:

* A password is checked as soon as it arrives, unless the address already
  has ``burst`` failures *serving their penalty* (then the attempt waits until
  the earliest penalty ends, at most ``max_delay``). A correct password is
  never queued behind other attempts, and never waits while fewer than
  ``burst`` penalties of its address are running.
* The ``n``-th failure from an address (counted since its last success or a
  quiet spell of ``forget_after`` seconds) serves a penalty of ``delay(n)``
  (``base_delay``, 2x, 4x ... capped at ``max_delay``): its wrong-password
  answer is sent only when the penalty ends, and the penalty keeps counting
  against the address even if the connection is closed or evicted, so
  reconnecting buys no extra guess.

Guess rate from one address is therefore at most ``burst`` per ``max_delay``
seconds once it has failed a few times (defaults: 4 per 10 s), and a waiting
attempt never waits more than ``max_delay`` for a penalty to end (the server
also bounds every wait by its auth timeout). Failures from one address never
delay another address.

Pure (sans-IO, like ``rcon_codec``): time comes from the ``clock`` you pass
in and the caller does the waiting, so tests drive it without sleeping and
with any addresses. Threads: not thread-safe; the RCON server calls it only
from its event-loop thread.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from moonbus.errors import ConfigError

__all__ = ["LoginThrottle", "throttle_key"]


@dataclass(slots=True)
class _Record:
    failures: int
    last_seen: float
    penalties: list[float] = field(default_factory=list)  # end times, at most ``burst``


class LoginThrottle:
    """Per-address failure counts and running penalties."""

    def __init__(
        self,
        *,
        base_delay: float = 0.25,
        max_delay: float = 10.0,
        burst: int = 4,
        forget_after: float = 900.0,
        max_tracked: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= base_delay <= max_delay < float("inf"):
            raise ConfigError(
                f"need 0 <= auth failure delay <= max delay, got {base_delay} and {max_delay}"
            )
        if not isinstance(burst, int) or burst < 1:
            raise ConfigError(f"auth failure burst must be an integer >= 1, got {burst!r}")
        if not forget_after > 0:
            raise ConfigError(f"forget_after must be positive, got {forget_after}")
        if max_tracked < 1:
            raise ConfigError(f"max_tracked must be at least 1, got {max_tracked}")
        self._base = float(base_delay)
        self._max = float(max_delay)
        self._burst = burst
        self._forget_after = float(forget_after)
        self._max_tracked = max_tracked
        self._clock = clock
        self._records: dict[str, _Record] = {}  # oldest activity first

    @property
    def burst(self) -> int:
        """Failures from one address that may serve their penalty at once."""
        return self._burst

    def delay_after(self, failures: int) -> float:
        """Penalty of the ``failures``-th failed login from an address."""
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

    def wait_before_check(self, address: str) -> float:
        """Seconds an attempt from ``address`` must wait before its password is
        checked: 0 while fewer than ``burst`` of its penalties are running, else
        until the earliest one ends (never more than ``max_delay``). Ask again
        after waiting: another attempt may have taken the freed place."""
        now = self._clock()
        record = self._current(address, now)
        if record is None:
            return 0.0
        running = [end for end in record.penalties if end > now]
        record.penalties = running
        if len(running) < self._burst:
            return 0.0
        return min(running) - now

    def record_failure(self, address: str) -> float:
        """Count a failed login from ``address``; return the penalty (seconds) the
        failing attempt serves before it is answered."""
        now = self._clock()
        record = self._current(address, now)
        if record is None:
            record = _Record(failures=0, last_seen=now)
        else:
            del self._records[address]  # re-insert below: keeps the dict oldest-first
        record.failures += 1
        record.last_seen = now
        penalty = self.delay_after(record.failures)
        running = [end for end in record.penalties if end > now]
        running.append(now + penalty)
        record.penalties = running[-self._burst :]
        self._records[address] = record
        self._prune(now)
        return penalty

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


def throttle_key(address: str, ipv6_prefix: int) -> str:
    """The throttle bucket of a peer address (RCON and HTTP logins, RCON
    admission): IPv4 as it is, IPv6 as its ``/ipv6_prefix`` network, an
    IPv4-mapped IPv6 address as its IPv4 address; anything else (a Unix
    socket, "unknown") as it is."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # no zone id in the key
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
    return str(ip)
