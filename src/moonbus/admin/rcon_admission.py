"""Which RCON connections the server keeps: the connection caps, sans-IO.

Why: operators must never be locked out by sockets that do nothing. Two caps:

* one address holds at most ``per_address`` connections that have not logged
  in; a new one from that address evicts its oldest such connection;
* at most ``max_connections`` are open; a new connection evicts the oldest
  connection that has not logged in, from any address; only when every open
  connection is logged in is the newcomer refused.

So idle or guessing sockets cannot hold a place a logged-in admin or a
newcomer with the password needs, and each is gone by its auth timeout
anyway. A logged-in session is never evicted.

Pure, like ``rcon_codec``: keys are any hashable connection objects with the
address passed in, so tests use made-up addresses; the caller closes what
:meth:`Admission.admit` says to evict. Threads: not thread-safe; the RCON
server calls it only from its event-loop thread.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from moonbus.errors import ConfigError

__all__ = ["Admission", "Decision"]

K = TypeVar("K", bound=Hashable)
EvictReason = Literal["per_address", "server_full"]


@dataclass(frozen=True)
class Decision(Generic[K]):
    """The outcome of one new connection: admitted or not, and whom to close."""

    admitted: bool
    evicted: list[tuple[K, EvictReason]] = field(default_factory=list)


class Admission(Generic[K]):
    """Open connections, oldest first, and which of them have not logged in."""

    def __init__(self, *, max_connections: int, per_address: int) -> None:
        for name, value in (
            ("max_connections", max_connections),
            ("max_unauthenticated_per_address", per_address),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be at least 1 (an integer), got {value!r}")
        self.max_connections = max_connections
        self.per_address = per_address
        self._open: dict[K, str] = {}  # connection -> address, oldest first
        self._unauthenticated: dict[K, None] = {}  # oldest first

    def __len__(self) -> int:
        return len(self._open)

    def unauthenticated(self, address: str | None = None) -> int:
        """Open connections not logged in (from ``address``, or all)."""
        if address is None:
            return len(self._unauthenticated)
        return sum(1 for key in self._unauthenticated if self._open[key] == address)

    def admit(self, key: K, address: str) -> Decision[K]:
        """Take a new connection; the caller must close every evicted one."""
        evicted: list[tuple[K, EvictReason]] = []
        same = [other for other in self._unauthenticated if self._open[other] == address]
        if len(same) >= self.per_address:
            evicted.append((same[0], "per_address"))
            self.close(same[0])
        if len(self._open) >= self.max_connections:
            oldest = next(iter(self._unauthenticated), None)
            if oldest is None:
                return Decision(False, evicted)
            evicted.append((oldest, "server_full"))
            self.close(oldest)
        self._open[key] = address
        self._unauthenticated[key] = None
        return Decision(True, evicted)

    def logged_in(self, key: K) -> None:
        """``key`` logged in: it is never evicted from now on."""
        self._unauthenticated.pop(key, None)

    def logged_out(self, key: K) -> None:
        """``key`` failed a later login: it is the newest unauthenticated one."""
        if key in self._open:
            self._unauthenticated[key] = None

    def close(self, key: K) -> None:
        """``key`` is gone (closed, evicted). Unknown keys are ignored."""
        self._open.pop(key, None)
        self._unauthenticated.pop(key, None)
