"""Cross-process delivery: follow the Redis event stream and hand other
processes' events to this process's bus.

Why a feed: the stream already holds every event of the deployment in its
global order, so a process that wants the others' events only has to read it
from where it stood when it attached (earlier events are not replayed).

Two threads, both owned by a ``StreamFeed``:

* the *reader* blocks in ``XREAD`` after the last entry it saw and gives each
  batch to the bus's ``deliver_remote``: other processes' events, the copies of
  this process's own entries (recognised by the store's origin id), and how far
  the stream has been read. The bus commits them in seq order (its reorder
  point) but does not run handlers on this thread, so a slow handler never
  holds up the global order. When ``XREAD`` times out, an atomic *tail* read
  (entries and the seq counter in one script run) tells the bus that every seq
  up to the counter is accounted for, so a seq deleted before it was read is
  resolved within ``block_ms`` instead of waiting for the next event.
* the *deliverer* runs the bus's ``drain`` (the handlers of committed events)
  whenever the reader committed something.

Faults: when Redis is unreachable the reader logs once, retries with backoff
(up to one second apart) and carries on from its last entry when Redis is
back; nothing is re-delivered. If the stream went *backwards* (Redis restarted
without its data), that is logged as an error and counted, and the reader
moves the seq counter back up to the highest seq it knows (read from the
stream, or handed to this process's own appends; the ``rebase`` script, never
down), so new events get seqs after every seq the bus has committed and
delivery goes on (the lost events stay lost). The store's appends do the same
from their side (``redis_backend``).

Threads: ``start`` and ``close`` belong to the owner (the ``Runtime``); the
bus methods are called from the two threads above.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from moonbus.bus.event import Event
from moonbus.errors import StoreError
from moonbus.store.base import RemoteSink
from moonbus.store.event_codec import row_to_event
from moonbus.store.redis_query import entry_origin, entry_row

__all__ = ["StreamFeed", "StreamSource"]

_log = logging.getLogger(__name__)


class StreamSource(Protocol):
    """A blocking connection to the stream (raises ``StoreError`` when Redis fails)."""

    def read(self, after: int, count: int, block_ms: int) -> list[Any]:
        """Entries after seq ``after`` (``[id, [fields]]``), waiting up to ``block_ms``."""

    def tail(self, after: int, count: int) -> tuple[int, list[Any]]:
        """The seq counter and the entries after ``after``, read atomically."""

    def rebase(self, floor: int) -> int:
        """Move the seq counter up to ``floor`` if it is below; the counter before."""

    def close(self) -> None: ...


class StreamFeed:
    """Follows the stream after ``after_seq`` for ``sink``. See the module docstring."""

    def __init__(
        self,
        source: StreamSource,
        sink: RemoteSink,
        *,
        origin: str,
        after_seq: int,
        url: str,
        count: int = 1000,
        block_ms: int = 100,
        seen: Callable[[], int] | None = None,
    ) -> None:
        self._source = source
        # The highest seq this process's store got back from its own appends: the
        # feed may not have read that far yet when Redis loses its data.
        self._seen = seen
        self._sink = sink
        self._origin = origin.encode()
        self._last = after_seq
        self.url = url
        self.count = count
        self.block_ms = block_ms
        self._closing = threading.Event()
        self._wake = threading.Event()
        self.received = 0  # other processes' events handed to the bus (reader thread)
        self.data_losses = 0  # times the stream went back (reader thread)
        self._reader = threading.Thread(target=self._read_loop, name="moonbus-feed", daemon=True)
        self._deliverer = threading.Thread(
            target=self._deliver_loop, name="moonbus-feed-delivery", daemon=True
        )

    @property
    def last_read(self) -> int:
        """The highest seq the feed has read through (written by its reader thread)."""
        return self._last

    def start(self) -> None:
        """Attach the bus (events after ``after_seq`` only) and start both threads."""
        self._sink.attach_remote(self._last)
        self._reader.start()
        self._deliverer.start()

    def close(self) -> None:
        """Stop both threads (after the current read) and close the connection."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._wake.set()
        for thread in (self._reader, self._deliverer):
            if thread.is_alive():
                thread.join()
        self._source.close()

    # --------------------------------------------------------------- reader
    def _read_loop(self) -> None:
        failures = 0
        while not self._closing.is_set():
            try:
                self._step()
            except StoreError as exc:
                if failures == 0:
                    _log.warning("event feed from %s: %s; retrying", self.url, exc)
                failures += 1
                self._closing.wait(min(0.05 * 2 ** min(failures, 5), 1.0))
                continue
            except Exception:  # a bug must not silently stop cross-process delivery
                _log.exception("event feed from %s failed; retrying", self.url)
                failures += 1
                self._closing.wait(1.0)
                continue
            if failures:
                _log.warning("event feed from %s: reading again", self.url)
                failures = 0

    def _step(self) -> None:
        entries = self._source.read(self._last, self.count, self.block_ms)
        upto = None
        if not entries:
            counter, entries = self._source.tail(self._last, self.count)
            floor = max(self._last, self._seen() if self._seen is not None else 0)
            if counter < floor:
                # Redis lost its data. Left alone, every process would be handed
                # seqs its bus has already passed (and drop them): move the
                # counter back up to the highest seq we know of, so the order goes on.
                self._source.rebase(floor)
                self.data_losses += 1
                _log.error(
                    "event stream at %s went back from seq %d to %d (Redis lost its data?); "
                    "the events up to seq %d are gone; the seq counter is moved back up to "
                    "%d so the order and delivery go on",
                    self.url,
                    floor,
                    counter,
                    floor,
                    floor,
                )
                return
            if len(entries) < self.count:
                upto = counter
        remote: list[Event] = []
        own: dict[int, Event] = {}
        for entry in entries:
            event = row_to_event(entry_row(entry))
            if entry_origin(entry) == self._origin:
                own[event.seq] = event
            else:
                remote.append(event)
        if entries:
            self._last = max(self._last, int(entries[-1][0].partition(b"-")[0]))
        if upto is None:
            upto = self._last
        if not entries and upto <= self._last:
            return
        self._last = max(self._last, upto)
        self._sink.deliver_remote(remote, upto=upto, own=own)
        self.received += len(remote)
        self._wake.set()

    # ------------------------------------------------------------ deliverer
    def _deliver_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closing.is_set():
                return
            try:
                self._sink.drain()
            except Exception:  # handlers' errors are the bus's; this is a bus failure
                _log.exception("delivering events from %s failed", self.url)
