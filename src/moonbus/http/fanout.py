"""A per-client bounded fan-out hub: items from any thread to many SSE clients.

Why this shape
--------------
The emitting thread (the game's, or whichever thread commits an event or
writes a log line) must not slow down because browsers watch: it does one C
call per item, ``deque.append`` on the hub's *inbox* (the bus handler or log
sink *is* that bound method, so no Python frame runs there). Everything else
happens on the server's event loop thread: a *pump* task wakes every
``pump_interval`` seconds, takes what the inbox holds, encodes each item once
(JSON, SSE framing), joins the frames each filter selects into one *chunk*
(once per filter, not per client) and queues that chunk for every client with
that filter: a pump costs O(items x filters + clients), not O(items x clients).

The per-client part is the dear one: each client woken is a coroutine step,
an ASGI ``send`` and a socket write, tens of microseconds with the GIL held,
taken from the game's thread. So the pump runs every ``pump_interval``, or
less often when many clients are open: at most ``max_sends`` client writes
a second per hub (the interval is ``clients / max_sends`` when that is
longer: 50 clients and the default 2,000/s pump every 25 ms). What the server
costs the game then does not grow with the number of browsers; a client's
latency grows instead, to ``max_clients / max_sends`` at most (32 ms).

Threads
-------
* ``push`` (``inbox.append``): any thread, lock-free (one C call under the GIL).
* Everything else (``join``, ``leave``, the pump, ``StreamClient``): the one
  event loop thread of the server. Nothing here takes a lock.

Bounds
------
* Per client: at most ``capacity`` encoded items, and at most
  ``capacity_bytes`` bytes of them, wait for its socket. One more and the
  client is *dropped*: its buffer is emptied, it gets one final message and
  its stream ends (``clients_dropped``) — never a growing queue. (The byte
  bound matters: 10,000 events of 32 KiB each would be 320 MB for one
  client that does not read.)
* The inbox holds at most ``inbox`` items (a ``deque`` with ``maxlen``).
  If the pump finds it full, items may have been lost between two pumps (the
  loop thread was starved): every client is dropped with that reason
  (``clients_dropped_behind``), as none can be served without a gap; they
  resume from the event log with ``Last-Event-ID``.
* At most ``max_clients`` clients at once; ``join`` refuses one more.

The source is attached (``attach(push) -> detach``) when the first client
joins and detached when the last one leaves, so an idle server costs the
emitting thread nothing at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Chunk", "FanOut", "HubStatistics", "StreamClient"]

T = TypeVar("T")
Encoder = Callable[[T], tuple[int, bytes]]  # item -> (key, SSE frame); key orders events


@dataclass(frozen=True)
class HubStatistics:
    """Counters of one hub (``FanOut.statistics``), read on any thread."""

    clients: int  # open streams now
    clients_accepted: int  # streams opened since start
    clients_refused: int  # refused: max_clients were open
    clients_dropped: int  # dropped: their buffer of capacity items was full
    clients_dropped_behind: int  # dropped: the pump found the inbox full (loop starved)
    items_in: int  # items taken from the inbox by the pump
    items_queued: int  # (item, client) pairs queued for sending
    pumps: int  # pump runs (the pump interval stretches with many clients: max_sends)


class Chunk:
    """The frames one pump selected for one filter, encoded and joined once and
    shared by every client with that filter (``keys`` ascend; 0: no key)."""

    __slots__ = ("count", "data", "first", "last", "pairs")

    def __init__(self, pairs: list[tuple[int, bytes]]) -> None:
        self.pairs = pairs
        self.count = len(pairs)
        self.data = b"".join(frame for _, frame in pairs)
        self.first = pairs[0][0] if pairs else 0
        self.last = pairs[-1][0] if pairs else 0


class StreamClient(Generic[T]):
    """One SSE client of a hub (event loop thread only).

    ``wants``: the client's filter (None: every item); clients with the same
    ``group`` (e.g. the same type pattern) have the same filter and share the
    chunks it selects. ``covered``: items with a key up to this one were sent
    from the backlog already and are skipped here (no duplicate between the
    backlog and the live feed).
    """

    __slots__ = ("_buffer", "_bytes", "_capacity", "_capacity_bytes", "_queued", "_wake",
                 "covered", "dropped", "group", "wants")

    def __init__(self, wants: Callable[[T], bool] | None, capacity: int,
                 group: Hashable | None = None, capacity_bytes: int | None = None) -> None:
        self.wants = wants
        self.group = group
        self.covered = 0
        self.dropped: str | None = None
        self._capacity = capacity
        self._capacity_bytes = capacity_bytes
        self._buffer: deque[Chunk] = deque()
        self._queued = 0
        self._bytes = 0
        self._wake = asyncio.Event()

    def offer(self, chunk: Chunk) -> bool:
        """Queue a chunk; False (and the client dropped) when that would put more
        than ``capacity`` items or ``capacity_bytes`` bytes in its buffer."""
        if self._queued + chunk.count > self._capacity:
            self.drop(f"slow client: {self._capacity} items were waiting to be sent")
            return False
        limit = self._capacity_bytes
        if limit is not None and self._bytes + len(chunk.data) > limit:
            self.drop(f"slow client: more than {limit} bytes were waiting to be sent")
            return False
        self._buffer.append(chunk)
        self._queued += chunk.count
        self._bytes += len(chunk.data)
        self._wake.set()
        return True

    def drop(self, reason: str) -> None:
        """End this client: forget what it had queued, wake it to say why."""
        if self.dropped is None:
            self.dropped = reason
            self._buffer.clear()
            self._queued = self._bytes = 0
            self._wake.set()

    def take(self) -> bytes:
        """Every queued frame past ``covered``, joined (b"" when none)."""
        buffer = self._buffer
        covered = self.covered
        parts: list[bytes] = []
        while buffer:
            chunk = buffer.popleft()
            if chunk.first == 0 or chunk.first > covered:
                parts.append(chunk.data)
            elif chunk.last > covered:
                parts.extend(frame for key, frame in chunk.pairs if key > covered)
        self._queued = self._bytes = 0
        self._wake.clear()
        return b"".join(parts)

    async def wait(self) -> None:
        """Until something was queued or the client was dropped."""
        if not self._buffer and self.dropped is None:
            await self._wake.wait()

    @property
    def queued(self) -> int:
        """Items waiting now."""
        return self._queued


class FanOut(Generic[T]):
    """The hub of one stream kind (events or log lines); see the module docstring."""

    def __init__(
        self,
        *,
        attach: Callable[[Callable[[T], None]], Callable[[], None]],
        encode: Encoder[T],
        capacity: int,
        max_clients: int,
        pump_interval: float,
        inbox: int,
        capacity_bytes: int | None = None,
        max_sends: float = 2_000.0,
    ) -> None:
        self._attach = attach
        self._encode = encode
        self._capacity = capacity
        self._capacity_bytes = capacity_bytes  # None: items only
        self._max_clients = max_clients
        self._interval = pump_interval
        self._max_sends = max_sends
        self._inbox: deque[T] = deque(maxlen=inbox)
        self._clients: list[StreamClient[T]] = []
        self._detach: Callable[[], None] | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._accepted = self._refused = self._dropped = self._behind = 0
        self._items_in = self._items_queued = self._pumps = 0

    # ------------------------------------------------------------- clients
    @property
    def full(self) -> bool:
        """True when ``max_clients`` streams are open."""
        return len(self._clients) >= self._max_clients

    def refuse(self) -> None:
        """Count a stream refused because the hub is full."""
        self._refused += 1

    def join(self, wants: Callable[[T], bool] | None,
             group: Hashable | None = None) -> StreamClient[T] | None:
        """A new client (None when ``max_clients`` are open). Attaches the source
        first, so every item from now on reaches the client. ``group``: a name
        for ``wants`` that clients with the same filter share (None: its own)."""
        if self.full:
            self.refuse()
            return None
        client: StreamClient[T] = StreamClient(wants, self._capacity, group,
                                               self._capacity_bytes)
        self._clients.append(client)
        self._accepted += 1
        if self._detach is None:
            self._inbox.clear()
            self._detach = self._attach(self._inbox.append)
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.get_running_loop().create_task(self._pump_loop())
        return client

    def leave(self, client: StreamClient[T]) -> None:
        """The client's stream ended; the last one detaches the source."""
        with contextlib.suppress(ValueError):
            self._clients.remove(client)
        if not self._clients:
            self._stop_source()

    def close(self) -> None:
        """Drop every client and detach (the app shuts down; loop thread)."""
        for client in list(self._clients):
            client.drop("the server is shutting down")
        self._clients.clear()
        self._stop_source()
        task = self._pump_task
        if task is not None and not task.done():
            task.cancel()

    def _stop_source(self) -> None:
        detach, self._detach = self._detach, None
        if detach is not None:
            detach()
        self._inbox.clear()

    # ---------------------------------------------------------------- pump
    @property
    def interval(self) -> float:
        """Seconds until the next pump: ``pump_interval``, or ``clients / max_sends``
        when more clients are open (see the module docstring)."""
        return max(self._interval, len(self._clients) / self._max_sends)

    async def _pump_loop(self) -> None:
        while self._clients:
            await asyncio.sleep(self.interval)
            self._pumps += 1
            self.pump()

    def pump(self) -> int:
        """Move what the inbox holds to the clients; returns the items moved."""
        inbox = self._inbox
        count = len(inbox)
        if not count:
            return 0
        behind = count >= (inbox.maxlen or 0)  # appends may have pushed out older items
        popleft = inbox.popleft
        items = [popleft() for _ in range(count)]
        self._items_in += count
        clients = self._clients
        if behind:
            for client in clients:
                self._behind += 1
                client.drop("the server fell behind: more than "
                            f"{inbox.maxlen} items arrived between two pumps")
            clients.clear()
            self._stop_source()
            return count
        encode = self._encode
        encoded: list[tuple[int, bytes] | None] = [None] * count
        chunks: dict[Hashable, Chunk] = {}
        queued = 0
        for client in clients:
            if client.dropped is not None:
                continue
            group = client.group
            chunk = chunks.get(group) if group is not None else None
            if chunk is None:
                wants = client.wants
                pairs = []
                for index, item in enumerate(items):
                    if wants is None or wants(item):
                        pair = encoded[index]
                        if pair is None:
                            pair = encoded[index] = encode(item)
                        pairs.append(pair)
                chunk = Chunk(pairs)
                if group is not None:
                    chunks[group] = chunk
            if not chunk.count:
                continue
            if client.offer(chunk):
                queued += chunk.count
            else:
                self._dropped += 1
        self._items_queued += queued
        if any(c.dropped is not None for c in clients):
            self._clients = [c for c in clients if c.dropped is None]
            if not self._clients:
                self._stop_source()
        return count

    def statistics(self) -> HubStatistics:
        """Counters (plain int reads; any thread)."""
        return HubStatistics(
            clients=len(self._clients),
            clients_accepted=self._accepted,
            clients_refused=self._refused,
            clients_dropped=self._dropped,
            clients_dropped_behind=self._behind,
            items_in=self._items_in,
            items_queued=self._items_queued,
            pumps=self._pumps,
        )
