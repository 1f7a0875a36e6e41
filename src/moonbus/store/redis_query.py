"""Reading the Redis event store: a query as a series of atomic pages.

Why pages: one script answering a whole query would block Redis for as long
as the answer takes to build (a full export can be millions of events). The
``page`` script (``redis_scripts``) instead answers at most ``page_size``
events and looks at no more than ``BUDGET_FACTOR`` times as many candidates, atomically, and says
where it stopped (the *cursor*, a seq); the next page starts after (or, for
``newest``, before) it. Each page is a consistent snapshot; a query that
spans pages sees appends and deletions that happen between them, exactly as
a reader of a growing log would (nothing is ever seen twice or out of order,
since pages advance by seq).

How a page finds its events (all index ranges, never a scan of the stream):

* neither types nor a tick: the stream itself, from the cursor (``XRANGE``);
* types, no tick: each type's seq index from the cursor, merged by seq;
* a tick, for a type whose ticks never went backwards: the first seq with a
  greater tick is found in the tick index, and from there it is the seq-index
  case (events without a tick are skipped);
* a tick, for a type whose ticks did go backwards: every seq with a greater
  tick (``ZRANGEBYSCORE``) is taken and filtered by the cursor: O(matches)
  per page, the price of out-of-order ticks (the SQLite store pays a sort too).

Thread ownership: a ``PageReader`` has no state of its own beyond what it was
given; any thread may use it (each call is independent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from moonbus.errors import StoreError
from moonbus.redisio.batch import pack
from moonbus.store.event_codec import Row
from moonbus.store.redis_scripts import Keys

__all__ = ["QUERY_KEYS", "PageReader", "entry_origin", "entry_row"]

QUERY_KEYS = frozenset({"after_tick", "after_seq", "types", "limit", "newest"})

PAGE_SIZE = 1000  # events per page
BUDGET_FACTOR = 4  # candidates a page may look at, per event it may return

Send = Callable[[bytes, str, str], Any]


def entry_row(entry: Any) -> Row:
    """A stream entry ``[id, [t, type, k, tick, ts, ms, s, source, d, data, ...]]``
    as a row ``(seq, tick, type, ts, source, data_json)``."""
    try:
        entry_id, fields = entry
        seq = int(entry_id.partition(b"-")[0])
        tick = fields[3]
        return (
            seq,
            int(tick) if tick else None,
            fields[1].decode("utf-8"),
            int(fields[5]),
            fields[7].decode("utf-8"),
            fields[9].decode("utf-8"),
        )
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        raise StoreError(f"stream entry {entry!r:.200} is not in moonbus's format: {exc}") from exc


def entry_origin(entry: Any) -> bytes:
    """The origin id (``o`` field) of a stream entry written by ``entry_row``'s layout."""
    origin: bytes = entry[1][11]
    return origin


class PageReader:
    """Runs the ``page`` script until a query is answered. ``call(payload,
    action, script)`` sends one command and returns its reply."""

    def __init__(
        self,
        call: Send,
        keys: Keys,
        sha: bytes,
        *,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._call = call
        self._keys = keys
        self._sha = sha
        self.page_size = page_size
        self.budget = page_size * BUDGET_FACTOR

    def rows(
        self,
        *,
        after_tick: int | None,
        after_seq: int | None,
        types: list[str] | None,
        limit: int | None,
        newest: bool,
    ) -> Iterator[Row]:
        """Matching rows in seq order (arguments already checked)."""
        if limit == 0 or types == []:
            return iter(())
        if newest and limit is not None:
            rows = list(self._pages(after_tick, after_seq, types, limit, descending=True))
            rows.reverse()
            return iter(rows)
        return self._pages(after_tick, after_seq, types, limit, descending=False)

    def _pages(
        self,
        after_tick: int | None,
        after_seq: int | None,
        types: list[str] | None,
        limit: int | None,
        *,
        descending: bool,
    ) -> Iterator[Row]:
        lo = max(after_seq, 0) if after_seq is not None else 0
        hi: int | None = None
        tail = [b"" if after_tick is None else b"%d" % after_tick]
        tail += [name.encode("utf-8") for name in types or ()]
        got = 0
        while True:
            want = self.page_size if limit is None else min(self.page_size, limit - got)
            args = (
                b"d" if descending else b"a",
                b"%d" % lo,
                b"inf" if hi is None else b"%d" % hi,
                b"%d" % want,
                b"%d" % self.budget,
                *tail,
            )
            keys = (self._keys.stream, self._keys.count, self._keys.meta)
            payload = pack(b"EVALSHA", self._sha, b"3", *keys, *args)
            done, cursor, entries = self._call(payload, "querying", "page")
            for entry in entries:
                yield entry_row(entry)
            got += len(entries)
            if done or cursor < 0 or (limit is not None and got >= limit):
                return
            if descending:
                hi = cursor
            else:
                lo = cursor
