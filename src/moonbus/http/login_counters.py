"""Counters of HTTP token checks, shared by the auth middleware and ``/metrics``.

The auth middleware (``moonbus.http.auth``) calls ``accepted``, ``refused`` or
``throttled`` once per checked request; ``/metrics`` reads ``statistics()``.
One instance per app (no module global). Any thread: a lock guards the counts.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["LoginCounters", "LoginStatistics"]


@dataclass(frozen=True)
class LoginStatistics:
    """Requests whose token was accepted / refused (missing or wrong) / throttled (429)."""

    accepted: int
    refused: int
    throttled: int


class LoginCounters:
    """Thread-safe counts of token checks (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accepted = self._refused = self._throttled = 0

    def accepted(self) -> None:
        """A request carried the right token."""
        with self._lock:
            self._accepted += 1

    def refused(self) -> None:
        """A request had no token or a wrong one (answered 401)."""
        with self._lock:
            self._refused += 1

    def throttled(self) -> None:
        """A request from an address with too many wrong tokens (answered 429)."""
        with self._lock:
            self._throttled += 1

    def statistics(self) -> LoginStatistics:
        """The counts now."""
        with self._lock:
            return LoginStatistics(self._accepted, self._refused, self._throttled)
