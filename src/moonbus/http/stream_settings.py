"""The limits of the live streams (Server-Sent Events), one frozen record.

Every limit bounds what one SSE client can cost the server; each has a
default here, a line in ``docs/http.md`` and a counter in
``StreamHub.statistics()``. Pure: no Starlette import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from moonbus.errors import ConfigError

__all__ = ["StreamSettings"]


@dataclass(frozen=True)
class StreamSettings:
    """Limits of the ``/api/stream/...`` endpoints (see ``moonbus.http.streams``).

    ``client_buffer``: items (events or log lines) queued for one client; a
    client that falls this far behind gets a final ``event: dropped`` and its
    stream ends (``clients_dropped``). ``client_buffer_bytes``: the same, in
    bytes of encoded frames (items can be 32 KiB each: the item bound alone
    would let one client that does not read hold 320 MB). ``heartbeat``: seconds between ``: ping``
    comments, so proxies keep an idle stream open. ``pump_interval``: seconds
    between two moves of new items from the emitting threads to the clients (the
    emitting thread only appends to a deque; this is the added latency).
    ``max_clients``: open streams per kind (events, logs); one more is refused
    with 503 (``clients_refused``). ``send_timeout``: a write to a client stuck
    this long ends its stream. ``backlog_page``: events read from the event
    store per query while a client resumes with ``Last-Event-ID``. ``inbox``:
    items that may arrive between two pumps (one hub per kind, shared by all its
    clients); more means the loop thread was starved and every client of that
    kind is dropped (``clients_dropped_behind``), to resume from the event log.
    ``max_sends``: client writes per second per kind, all clients together; with
    more than ``pump_interval * max_sends`` clients open the pump runs every
    ``clients / max_sends`` seconds instead (``pumps`` counts its runs), so the
    server's share of the game's GIL does not grow with the number of clients.
    """

    client_buffer: int = 10_000
    client_buffer_bytes: int = 8 * 1024 * 1024
    heartbeat: float = 15.0
    pump_interval: float = 0.005
    max_clients: int = 64
    send_timeout: float = 30.0
    backlog_page: int = 1_000
    inbox: int = 100_000
    max_sends: int = 2_000

    def __post_init__(self) -> None:
        for name in ("client_buffer", "client_buffer_bytes", "max_clients", "backlog_page",
                     "inbox", "max_sends"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"stream setting {name} must be a whole number >= 1, "
                                  f"got {value!r}")
        for name in ("heartbeat", "pump_interval", "send_timeout"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value <= 0):
                raise ConfigError(f"stream setting {name} must be a number of seconds > 0, "
                                  f"got {value!r}")
