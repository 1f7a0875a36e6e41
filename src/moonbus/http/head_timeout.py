"""uvicorn's h11 protocol with a deadline for each request head (slowloris),
and a cap on open connections that evicts idle ones first.

uvicorn starts no timer when a connection opens, and resets its keep-alive
timer on any byte: a client that connects and sends nothing, or drips a
request head a byte at a time, keeps its connection (a file descriptor)
forever, and a few thousand such clients leave the server none to accept
the operator with. Here every connection must finish a request head within
``head_timeout`` seconds of opening, and the next one within ``head_timeout``
of the previous answer; otherwise it is closed and counted
(``HttpStatistics.head_timeouts``). A request being served (a live stream,
a slow upload of a body the app reads) is never cut by this timer.

The deadline bounds how long one idle connection lives, not how many there
are: without a cap, a client opening connections faster than they expire
holds as many file descriptors as the process may have, and the operator's
own connection is refused by the kernel. So at most ``max_connections`` are
open at once. A connection that would be one more first *evicts* the oldest
connection waiting for a request head (idle: it holds no request, it loses
nothing but its socket; ``connections_evicted``); only when every open
connection is serving a request (streams, exports) is the newcomer itself
closed at once (``connections_refused``). Like RCON's admission: an attacker's
idle connections cannot keep the operator out, they are what goes first.
"Serving a request" includes an answer the client does not read: its send
waits for the socket to drain, for ever, so a few anonymous connections
pipelining requests for a static file (or getting 401s) and never reading
held every place. So when no connection is idle, the oldest one whose writes
are paused (uvicorn's flow control: the kernel's and the transport's buffers
are full) is evicted next, aborted (a close would wait for that buffer).

Threads: the protocol runs on the server's event-loop thread only; the
class's connection table belongs to that thread.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["head_timeout_protocol"]


def head_timeout_protocol(timeout: float, expired: Callable[[], None], *,
                          max_connections: int | None = None,
                          count: Callable[[str], None] | None = None) -> type[H11Protocol]:
    """An ``H11Protocol`` class (one per server: no state shared between servers)
    that closes a connection whose request head is not complete ``timeout``
    seconds after it opened or after its last answer (``expired()`` counts each
    one) and keeps at most ``max_connections`` open (None: no cap), calling
    ``count("connections_evicted")`` or ``count("connections_refused")``."""
    opened = itertools.count()
    open_now: dict[HeadTimeoutProtocol, int] = {}  # connection -> order it opened in

    def make_room() -> bool:
        """Close the oldest idle connection if the table is full; False when
        every open connection is serving a request (no room)."""
        if max_connections is None or len(open_now) < max_connections:
            return True
        idle = [(order, c) for c, order in open_now.items() if c._waiting_for_head()]
        if not idle:  # then the answers nobody reads
            idle = [(order, c) for c, order in open_now.items() if c.flow.write_paused]
        if not idle:
            return False
        _, oldest = min(idle, key=lambda pair: pair[0])
        oldest._drop()
        if count is not None:
            count("connections_evicted")
        return True

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

        def _drop(self) -> None:
            open_now.pop(self, None)
            self._disarm()
            # abort: close() would wait for a write buffer the client never reads
            self.transport.abort()

        def connection_made(self, transport: Any) -> None:
            room = make_room()
            super().connection_made(transport)
            if not room:
                if count is not None:
                    count("connections_refused")
                transport.close()
                return
            open_now[self] = next(opened)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if not self._waiting_for_head():
                self._disarm()  # a request is being served: not this timer's business

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            open_now.pop(self, None)
            self._disarm()
            super().connection_lost(exc)

    return HeadTimeoutProtocol
