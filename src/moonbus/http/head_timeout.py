"""uvicorn's h11 protocol with a deadline for each request head (slowloris).

uvicorn starts no timer when a connection opens, and resets its keep-alive
timer on any byte: a client that connects and sends nothing, or drips a
request head a byte at a time, keeps its connection (a file descriptor)
forever, and a few thousand such clients leave the server none to accept
the operator with. Here every connection must finish a request head within
``head_timeout`` seconds of opening, and the next one within ``head_timeout``
of the previous answer; otherwise it is closed and counted
(``HttpStatistics.head_timeouts``). A request being served (a live stream,
a slow upload of a body the app reads) is never cut by this timer.

Threads: the protocol runs on the server's event-loop thread only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["head_timeout_protocol"]


def head_timeout_protocol(timeout: float, expired: Callable[[], None]) -> type[H11Protocol]:
    """An ``H11Protocol`` class (one per server: no shared state) that closes a
    connection whose request head is not complete ``timeout`` seconds after it
    opened or after its last answer; ``expired()`` counts each one."""

    class HeadTimeoutProtocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def _waiting_for_head(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            self._disarm()
            if not self.transport.is_closing() and self._waiting_for_head():
                self._head_timer = self.loop.call_later(timeout, self._expire)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expire(self) -> None:
            self._head_timer = None
            if self._waiting_for_head() and not self.transport.is_closing():
                expired()
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if not self._waiting_for_head():
                self._disarm()  # a request is being served: not this timer's business

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeadTimeoutProtocol
