"""The reorder point: commit events numbered by a shared store in global seq order.

Why: when the event store assigns seqs (Redis, shared by several processes),
an emitting thread learns its event's seq only from the store's reply, and
events emitted by other processes arrive later through a feed. Replies and
feed batches come back in any interleaving, but the bus must commit (log,
deliver) in seq order. The ``Sequencer`` holds events that arrived early
until everything before them is committed.

Two modes:

* **local only** (no feed attached): only this process's events are seen, so
  seqs have gaps (other writers) and contiguity means nothing. Every local
  append goes through one connection, in order, so an append registered
  (``begin``) after an event's reply arrived got a larger seq. An event is
  therefore committed once every append registered *before* it arrived has
  arrived or failed: commit order is seq order, with no timeout needed.
* **feed** (``attach``): every seq after the attach point is accounted for,
  either by a local append (``arrived``), by the feed (``remote``: events of
  other processes, and the highest seq the feed has read through), or as
  missing from the stream (deleted before the feed read it). Commits are
  contiguous. A seq the feed read past and no local append can still bring
  (none was registered before the feed got there) is *resolved*: committed
  from the stream copy if it was this process's own event whose emit failed
  after the append was applied, otherwise skipped as missing (logged).

An emitting thread may wait (``arrived(..., wait=True)``) for its own event
to be committed, at most ``timeout`` seconds; then every seq still missing
before it is logged and skipped, so a stuck feed never hangs ``emit``. An
event that arrives after its seq was skipped is logged and not delivered.

"Committed" here means "has its place in the order": committed events queue
in ``take()`` order (seq order); the bus moves them into its log and delivers
them under its own lock. The sequencer has its own lock, never held while a
handler runs, so the feed's reader thread is never held up by handlers.

Threads: every public method may be called from any thread; each takes the
sequencer's lock (``wait`` releases it while waiting).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from moonbus.bus.event import Event
from moonbus.errors import BusError

__all__ = ["Sequencer"]


class Sequencer:
    """See the module docstring."""

    def __init__(
        self,
        *,
        timeout: float,
        logger: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not timeout > 0:
            raise BusError(f"reorder timeout must be > 0 seconds, not {timeout!r}")
        self._cond = threading.Condition(threading.Lock())
        self._out: deque[Event] = deque()  # committed, in seq order, for take()
        self.timeout = timeout
        self._logger = logger
        self._clock = clock
        self._tickets = itertools.count()
        self._flying: dict[int, int] = {}  # ticket -> epoch when it was registered
        self._epoch = 0  # advances whenever a local reply or a feed batch arrives
        self._ready: dict[int, tuple[Event, int]] = {}  # seq -> (event, epoch it arrived)
        self._heap: list[int] = []  # local-only mode: the seqs in _ready
        self.feed = False
        self.next_seq = 1  # feed mode: every seq below is committed or skipped
        self._known: deque[tuple[int, int]] = deque()  # (feed read through seq, epoch)
        self._own: dict[int, Event] = {}  # feed copies of this process's own events
        self.highest = 0  # highest seq committed
        self.skipped = 0
        self.late = 0

    # ----------------------------------------------------------- feed side
    def attach(self, after_seq: int) -> None:
        """Switch to feed mode: the feed reports every seq after ``after_seq``."""
        with self._cond:
            if self._flying or self._ready:
                raise BusError("attach the remote feed before any event is emitted")
            self.feed = True
            self.next_seq = after_seq + 1
            self.highest = max(self.highest, after_seq)

    def remote(self, events: Iterable[Event], *, upto: int, own: Mapping[int, Event]) -> None:
        """A feed batch: other processes' ``events`` (seq order), this process's
        own entries (``own``, by seq), and the feed has read the stream through
        seq ``upto``."""
        with self._cond:
            self._epoch += 1
            for event in events:
                if event.seq < self.next_seq:
                    self._late(event, "from the feed")
                elif event.seq not in self._ready:
                    self._ready[event.seq] = (event, self._epoch)
            for seq, event in own.items():
                if seq >= self.next_seq and seq not in self._ready:
                    self._own[seq] = event
            if upto > (self._known[-1][0] if self._known else self.next_seq - 1):
                self._known.append((upto, self._epoch))
            self._advance()

    # ---------------------------------------------------------- local side
    def begin(self) -> int:
        """Register a local append about to be sent; returns its ticket."""
        with self._cond:
            ticket = next(self._tickets)
            self._flying[ticket] = self._epoch
            return ticket

    def failed(self, ticket: int) -> None:
        """The append of ``ticket`` failed (nothing to commit)."""
        with self._cond:
            del self._flying[ticket]
            self._advance()

    def arrived(self, ticket: int, event: Event, *, wait: bool = False) -> None:
        """The append of ``ticket`` returned ``event`` with its seq. With ``wait``,
        return only once it is committed (or, after ``timeout``, forced)."""
        with self._cond:
            del self._flying[ticket]
            self._epoch += 1
            if event.seq <= self.highest or (self.feed and event.seq < self.next_seq):
                self._late(event, "from this process")
                return
            self._ready[event.seq] = (event, self._epoch)
            if not self.feed:
                heapq.heappush(self._heap, event.seq)
            self._advance()
            if wait:
                self._wait(event.seq)

    def take(self) -> list[Event]:
        """The events committed since the last call, in seq order."""
        with self._cond:
            out = list(self._out)
            self._out.clear()
            return out

    def pending(self, seq: int) -> bool:
        """True while the event ``seq`` waits to be committed."""
        with self._cond:
            return seq in self._ready

    def _wait(self, seq: int) -> None:
        deadline = self._clock() + self.timeout
        while seq in self._ready:
            remaining = deadline - self._clock()
            if remaining <= 0:
                self._force(seq)
                return
            self._cond.wait(remaining)

    # -------------------------------------------------------------- inside
    def _late(self, event: Event, where: str) -> None:
        self.late += 1
        self._logger.error(
            "event seq=%d (%s) %s arrived after its place in the order was skipped; "
            "not delivered here",
            event.seq,
            event.type,
            where,
        )

    def _force(self, seq: int) -> None:
        if self.feed:
            missing = [s for s in range(self.next_seq, seq) if s not in self._ready]
            self._skip_log(missing)
            for s in range(self.next_seq, seq):
                item = self._ready.pop(s, None)
                if item is not None:
                    self._commit_one(item[0])
                self._own.pop(s, None)
            self.next_seq = seq
        else:
            self._logger.error(
                "waited %.1f s for %d earlier append(s) of this process; committing seq %d "
                "without them",
                self.timeout,
                len(self._flying),
                seq,
            )
            while self._heap and self._heap[0] < seq:
                self._commit_one(self._ready.pop(heapq.heappop(self._heap))[0])
        self._advance(force=seq)

    def _skip_log(self, missing: list[int]) -> None:
        self.skipped += len(missing)
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        self._logger.error(
            "waited %.1f s for earlier events; skipping %d missing seq(s)%s",
            self.timeout,
            len(missing),
            f": {shown}" if missing else "",
        )

    def _commit_one(self, event: Event) -> None:
        self.highest = max(self.highest, event.seq)
        self._out.append(event)

    def _oldest_flying(self) -> int | None:
        return min(self._flying.values()) if self._flying else None

    def _advance(self, force: int | None = None) -> None:
        committed = False
        if self.feed:
            while True:
                seq = self.next_seq
                item = self._ready.pop(seq, None)
                if item is None and not self._resolved(seq):
                    break
                if item is not None:
                    self._commit_one(item[0])
                    self._own.pop(seq, None)
                self.next_seq = seq + 1
                committed = True
            while self._known and self._known[0][0] < self.next_seq:
                self._known.popleft()
        else:
            while self._heap:
                seq = self._heap[0]
                event, arrived = self._ready[seq]
                oldest = self._oldest_flying()
                if oldest is not None and oldest < arrived and seq != force:
                    break  # an append sent before this reply may hold a smaller seq
                heapq.heappop(self._heap)
                del self._ready[seq]
                self._commit_one(event)
                committed = True
        if committed:
            self._cond.notify_all()

    def _resolved(self, seq: int) -> bool:
        """Feed mode, ``seq`` not ready: commit its stream copy or skip it, when
        the feed read past it and no local append can still bring it."""
        learned = next((epoch for upto, epoch in self._known if upto >= seq), None)
        if learned is None:
            return False
        oldest = self._oldest_flying()
        if oldest is not None and oldest < learned:
            return False
        own = self._own.pop(seq, None)
        if own is not None:
            self._logger.warning(
                "event seq=%d (%s) of this process is in the stream but its emit failed; "
                "delivering it from the stream",
                seq,
                own.type,
            )
            self._commit_one(own)
        else:
            self.skipped += 1
            self._logger.warning(
                "seq %d is missing from the event stream (deleted before this process read "
                "it); skipped",
                seq,
            )
        return True
