"""The event store on Redis Streams: one global order for every process.

Every event of a deployment (a key prefix) is one entry of one Redis Stream,
in one global order. The ``seq`` is assigned by Redis: a server-side script
increments the counter and adds the entry (id ``<seq>-0``) in one atomic step,
so every process sees the same seq for the same event and the stream never
has a gap, even when a client dies mid-append. Layout and scripts:
``redis_scripts``; how queries page through it: ``redis_query``; how commands
reach Redis (the shared Redis layer, ``moonbus.redisio``): ``redis_calls``.

Appending
---------
``assigns_seq`` is True: the bus calls ``append_new`` (one round trip, one
script run) and gets the event back with its seq. ``append``/``append_many``
record events that already carry a seq (imports, tests); the first must be
after every seq the deployment has used, or ``StoreError`` says so.
Appends from several threads at once travel together in one round trip
(``CommandBatcher``); each stays one atomic script run, in the order sent.
The store is always *durable* in moonbus's sense: an append returns after
Redis acknowledged it, so the client process dying loses nothing; surviving
a Redis crash is Redis's own persistence setting (``appendonly``/``appendfsync``).
There is no fast mode: a seq that only Redis can assign must be known when
``emit`` returns, so an append cannot be deferred.

Types the settings do not record still get a seq and a stream entry marked
*transit* (other processes receive them); queries, counts and retention skip
them, and the prune deletes them once ``transit_keep`` newer seqs exist.

Retention
---------
Amortized like the SQLite store (``retention.PruneSchedule``): after
``prune_every`` appends of this instance, or once its newest tick moved
``prune_tick_step`` ticks, the appending thread asks the store's pruner thread
(``background.Coalescing``) to run the prune script, so no emit waits for it;
``flush()`` waits for it. Per type an index range (ticks <= cutoff in the tick
index, the oldest beyond the count in the seq index) is deleted from the
stream (``XDEL``) and the indexes, in rounds of at most 5,000 deletions so
Redis never stalls. ``max_events`` adds a global cap: only events among the
newest ``max_events`` seqs are kept, and the stream is cut with ``XTRIM
MINID`` (exact). Memory note: ``XDEL`` frees a stream node once all its
entries are gone, so types with a short retention mixed with long-lived ones
hold some memory until the long-lived ones expire.

Faults, per operation
---------------------
* Redis unreachable when the store is opened: ``StoreError`` naming the URL
  (password hidden).
* Redis down or restarted later: every operation is retried with backoff for
  up to ``retry_timeout`` seconds, then fails with ``StoreError``; the link
  reconnects and re-loads the scripts by itself.
* A reply lost after sending (the server died mid-call): reads are re-sent.
  Appends are re-sent too, and that is safe: each carries this instance's
  origin id and an op number, and the script records its answer under them,
  so a re-sent append that had been applied returns the seqs of its first run
  instead of appending again. An event is never appended twice. If Redis stays
  away past ``retry_timeout`` the append fails with ``StoreError`` (and the
  event may already be in the stream if it was sent before the connection broke).
* Prune and clear are re-sent like reads (deleting twice deletes nothing more;
  only the reported count may be short).
* ``LOADING``, ``BUSY``, ``TRYAGAIN`` replies and connection resets are retried
  within ``retry_timeout``; every failure is a ``StoreError`` naming the event
  store, with a ``kind`` counted in ``statistics().append_failures``.
* Redis lost its data (restarted empty): its seq counter is behind seqs already
  handed out, which the bus would drop. Each append carries the highest seq
  this instance has seen (its appends, its feeds' reads); the script that
  finds the counter below it moves it back up and refuses that one append:
  ``emit`` raises ``StoreError`` (kind ``data_loss``, "lost its data: seq went
  back from N to M"), logged and counted (``data_losses``); later emits get
  seqs after N. The feed repairs the same way (``redis_feed``).

Threads: every method may be called from any thread; ``close`` once, by the
owner, after the users stop. The store owns its pruner thread and the feeds'
threads (``follow``) and stops them in ``close``.
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import IO, Any

from moonbus.bus.event import Event
from moonbus.errors import ConfigError, StoreError
from moonbus.redisio.batch import ReplyError, pack
from moonbus.redisio.link import connect
from moonbus.store.background import Coalescing
from moonbus.store.base import (
    EventStore,
    FailureCounts,
    RemoteSink,
    StoreSettings,
    StoreStatistics,
    check_query,
    type_list,
)
from moonbus.store.event_codec import row_json_line, row_to_event
from moonbus.store.redis_append import OpNumbers, append_call, refused_append
from moonbus.store.redis_calls import RedisCalls
from moonbus.store.redis_feed import StreamFeed
from moonbus.store.redis_query import PAGE_SIZE, QUERY_KEYS, PageReader
from moonbus.store.redis_reader import StreamReader
from moonbus.store.redis_scripts import SCRIPTS, Keys
from moonbus.store.retention import PruneSchedule, plan_prune

__all__ = ["RedisEventStore"]

_log = logging.getLogger(__name__)

_PRUNE_BUDGET = 5_000  # deletions per prune script run
_BATCH = 500  # events per append script run


class RedisEventStore(EventStore):
    """Committed events in a Redis Stream shared by every process using the same
    URL and prefix. See the module docstring."""

    assigns_seq = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "moonbus",
        settings: StoreSettings | None = None,
        retry_timeout: float = 2.0,
        prune_every: int = 1000,
        prune_tick_step: int = 60,
        transit_keep: int = 10_000,
        max_events: int | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError(f"event store prefix must be a non-empty string, not {prefix!r}")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ConfigError(f"event store page_size must be a whole number >= 1, not {page_size}")
        for name, value in (("transit_keep", transit_keep), ("max_events", max_events)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ConfigError(f"event store {name} must be a whole number >= 0, not {value!r}")
        self.settings = settings if settings is not None else StoreSettings()
        self.prefix = prefix
        self.transit_keep = transit_keep
        self.max_events = max_events
        self._schedule = PruneSchedule(every=prune_every, tick_step=prune_tick_step)
        linked = connect(
            url, SCRIPTS, retry_timeout=retry_timeout, what="event store", error=StoreError
        )
        self.url = linked.url
        self._redis_url = url  # with its password, for the feeds' own connections
        self._feeds: list[StreamFeed] = []
        self._redis = RedisCalls(linked.batcher, linked.scripts, linked.url)
        self._keys = Keys(prefix)
        #: Identifies this instance's entries in the stream (``o`` field).
        self.origin = uuid.uuid4().hex[:16]
        self._ops_key = self._keys.ops(self.origin)
        self._ops = OpNumbers()
        self._op_lock = threading.Lock()  # guards the counters below
        self._appended = 0
        self._pruned = 0
        self._high = 0  # highest seq an append of this instance got back
        self._data_losses = 0
        self._failures = FailureCounts()
        self._newest_tick: int | None = None
        self._prune_lock = threading.Lock()  # one prune at a time; owns _schedule
        self._pruner = Coalescing(
            self.prune, name=f"event store {self.url} pruner", on_error=self._prune_failed
        )
        self._pages = PageReader(
            self._redis.call, self._keys, linked.scripts["page"].sha, page_size=page_size
        )

    def __repr__(self) -> str:
        return f"RedisEventStore({self.url!r}, prefix={self.prefix!r})"

    # ------------------------------------------------------------ plumbing

    def _check_open(self) -> None:
        self._redis.check_open()

    # ---------------------------------------------------------------- append

    def _run_append(self, script: str, events: Sequence[Event], *, explicit: bool) -> list[int]:
        """One append script run for ``events`` (at most ``_BATCH``); returns their seqs."""
        keys, fields = append_call(
            self._keys,
            self._ops_key,
            events,
            explicit=explicit,
            wants=self.settings.wants,
            url=self.url,
        )
        op, in_flight = self._ops.start()
        header = (self.origin.encode(), b"%d" % op, b"%d" % in_flight, b"%d" % self._seen())
        try:
            payload = self._redis.payload(script, keys, [*header, *fields])
            reply = self._redis.send(payload, "appending", script)
        except StoreError as exc:
            failure = StoreError(
                f"{exc}; the event was not appended, unless the connection broke after "
                "sending it (then it may be in the stream without this process knowing its seq)",
                kind=exc.kind,
            )
            self._failures.note(failure)
            raise failure from exc.__cause__
        finally:
            self._ops.finish(op)
        if type(reply) is ReplyError:
            failure = refused_append(reply.message, url=self.url, first=events[0].seq)
            if failure.kind == "data_loss":
                _log.error("%s", failure)
                with self._op_lock:
                    self._data_losses += 1
            self._failures.note(failure)
            raise failure
        seqs = [int(seq) for seq in reply]
        with self._op_lock:
            if seqs and seqs[-1] > self._high:
                self._high = seqs[-1]
        return seqs

    def _own_high(self) -> int:
        with self._op_lock:
            return self._high

    def _seen(self) -> int:
        """The highest seq this instance has seen (its appends, its feeds' reads):
        the append scripts' floor (see "Faults" in the module docstring)."""
        with self._op_lock:
            high = self._high
        return max([high, *(feed.last_read for feed in self._feeds)])

    def _appended_now(self, events: Sequence[Event]) -> None:
        """Count appends and run the amortized prune when it is due."""
        ticks = [event.tick for event in events if event.tick is not None]
        with self._op_lock:
            self._appended += len(events)
            if ticks:
                top = max(ticks)
                if self._newest_tick is None or top > self._newest_tick:
                    self._newest_tick = top
            newest = self._newest_tick
        if self.settings.log_appends:
            for event in events:
                _log.debug("event store %s: appended seq %d (%s)", self.url, event.seq, event.type)
        with self._prune_lock:
            if not self._schedule.due(len(events), newest):
                self._schedule.note(len(events), newest)
                return
            self._schedule.done(newest)  # the next one is counted from here
        self._pruner.request()

    def _prune_failed(self, exc: Exception) -> None:
        # The events are appended; the next prune due tries again.
        _log.warning("event store %s: amortized prune failed: %s", self.url, exc)

    def append_new(
        self,
        event_type: str,
        data: Any = None,
        *,
        tick: int | None = None,
        ts: int,
        source: str,
    ) -> Event:
        """Append one event; Redis assigns its seq. Returns the committed event."""
        draft = Event.create(event_type, data, seq=0, tick=tick, source=source, ts=ts)
        return self.append_new_many([draft])[0]

    def append_new_many(self, drafts: Sequence[Event]) -> list[Event]:
        """Append several events in one round trip (their ``seq`` is ignored);
        Redis assigns consecutive-in-order seqs. Returns the committed events."""
        out: list[Event] = []
        for start in range(0, len(drafts), _BATCH):
            part = drafts[start : start + _BATCH]
            seqs = self._run_append("append_new", part, explicit=False)
            out += [
                Event(d.type, d.data, seq, d.tick, d.ts, d.source)
                for d, seq in zip(part, seqs, strict=True)
            ]
        self._appended_now(out)
        return out

    def append(self, event: Event) -> None:
        """Record one event that already has its seq (after every seq used so far)."""
        self.append_many([event])

    def append_many(self, events: Iterable[Event]) -> None:
        """Record events that already have their seqs, in order. The batch's own
        order is checked first (nothing is recorded if a seq is out of order)."""
        batch = list(events)
        for before, event in itertools.pairwise(batch):
            if event.seq <= before.seq:
                raise StoreError(
                    f"event store {self.url}: event seq {event.seq} is not after seq {before.seq}"
                )
        self._check_open()
        for start in range(0, len(batch), _BATCH):
            self._run_append("append_put", batch[start : start + _BATCH], explicit=True)
        if batch:
            self._appended_now(batch)

    def flush(self) -> None:
        """Every append returned after Redis acknowledged it; this also waits for
        the amortized prune requested so far to finish."""
        self._check_open()
        self._pruner.wait_idle()

    # ------------------------------------------------------ prune and clear

    def _state(self) -> tuple[list[str], int | None]:
        """Recorded types and the newest recorded tick."""
        reply = self._redis.call(pack(b"HKEYS", self._keys.count), "reading the types")
        tick = self._redis.call(
            pack(b"HGET", self._keys.meta, b"maxtick"), "reading the newest tick"
        )
        return [name.decode("utf-8") for name in reply], None if tick is None else int(tick)

    def prune(self) -> int:
        """Apply retention now; returns how many events were deleted."""
        with self._prune_lock:
            types, newest = self._state()
            args = [
                b"%d" % _PRUNE_BUDGET,
                b"" if self.transit_keep is None else b"%d" % self.transit_keep,
                b"" if self.max_events is None else b"%d" % self.max_events,
            ]
            for step in plan_prune(self.settings, types, newest):
                args += (
                    step.type.encode("utf-8"),
                    b"" if step.max_tick is None else b"%d" % step.max_tick,
                    b"" if step.keep is None else b"%d" % step.keep,
                )
            keys = (
                self._keys.stream,
                self._keys.count,
                self._keys.meta,
                self._keys.transit,
                self._keys.seq,
            )
            deleted = 0
            while True:
                gone, more = self._redis.script("prune", keys, args, "pruning")
                deleted += int(gone)
                if not more:
                    break
            self._schedule.done(self._newest_tick if newest is None else newest)
        with self._op_lock:
            self._pruned += deleted
        return deleted

    def clear(self, event_type: str | None = None) -> int:
        """Delete all events, or all of one type; the seq numbering goes on."""
        if event_type is not None and not isinstance(event_type, str):
            raise ConfigError(f"event type must be a string, not {event_type!r}")
        keys = (self._keys.stream, self._keys.count, self._keys.meta, self._keys.transit)
        if event_type is None:
            return int(self._redis.script("clear_all", keys, (), "clearing"))
        deleted = 0
        name = event_type.encode("utf-8")
        while True:
            gone, left = self._redis.script(
                "clear_type", keys[:3], (name, b"%d" % _PRUNE_BUDGET), "clearing"
            )
            deleted += int(gone)
            if not left:
                return deleted

    # --------------------------------------------------------------- reading

    def query(
        self,
        *,
        after_tick: int | None = None,
        after_seq: int | None = None,
        types: str | Sequence[str] | None = None,
        limit: int | None = None,
        newest: bool = False,
    ) -> list[Event]:
        """Events oldest first; see ``EventStore.query``."""
        check_query(after_tick, after_seq, limit)
        names = type_list(types)
        self._check_open()
        rows = self._pages.rows(
            after_tick=after_tick, after_seq=after_seq, types=names, limit=limit, newest=newest
        )
        return [row_to_event(row) for row in rows]

    def export_ndjson(self, fp: IO[str], **query: Any) -> int:
        """Stream matching events as NDJSON lines without decoding their data."""
        unknown = set(query) - QUERY_KEYS
        if unknown:
            raise ConfigError(f"unknown export option(s): {', '.join(sorted(unknown))}")
        after_tick, after_seq, limit = (query.get(k) for k in ("after_tick", "after_seq", "limit"))
        check_query(after_tick, after_seq, limit)
        self._check_open()
        count = 0
        for row in self._pages.rows(
            after_tick=after_tick,
            after_seq=after_seq,
            types=type_list(query.get("types")),
            limit=limit,
            newest=bool(query.get("newest", False)),
        ):
            fp.write(row_json_line(row))
            fp.write("\n")
            count += 1
        return count

    def summary(self, after_tick: int | None = None) -> dict[str, int]:
        """Recorded events by type (types sorted). Without ``after_tick`` it reads
        the per-type counters (O(types)); with it, one ``ZCOUNT`` per type."""
        check_query(after_tick, None, None)
        if after_tick is None:
            reply = self._redis.call(pack(b"HGETALL", self._keys.count), "summarising")
        else:
            reply = self._redis.script(
                "summary_after",
                (self._keys.stream, self._keys.count),
                (b"%d" % after_tick,),
                "summarising",
            )
        counts = {
            name.decode("utf-8"): int(n) for name, n in zip(reply[::2], reply[1::2], strict=True)
        }
        return {name: n for name, n in sorted(counts.items()) if n > 0}

    def last_seq(self) -> int:
        """The deployment's highest seq (0 before any), kept across clear and prune."""
        reply = self._redis.call(pack(b"GET", self._keys.seq), "reading the last seq")
        return 0 if reply is None else int(reply)

    def statistics(self) -> StoreStatistics:
        """Appended and pruned by this instance, recorded events stored now."""
        reply = self._redis.call(pack(b"HVALS", self._keys.count), "counting")
        with self._op_lock:
            appended, pruned = self._appended, self._pruned
            data_losses = self._data_losses + sum(feed.data_losses for feed in self._feeds)
        return StoreStatistics(
            appended=appended,
            pruned=pruned,
            stored=sum(int(n) for n in reply),
            pending=0,
            append_failures=self._failures.snapshot(),
            retries=self._redis.statistics().retries,
            data_losses=data_losses,
        )

    def round_trips(self) -> tuple[int, int]:
        """(round trips, commands) sent so far on the store's connection; their
        ratio is how many concurrent operations shared a round trip."""
        stats = self._redis.statistics()
        return stats.batches, stats.ops

    # ------------------------------------------------------------------ feed

    def follow(self, sink: RemoteSink) -> StreamFeed:
        """Hand events that other processes append from now on to ``sink`` (the
        bus), in the global order, on a feed with its own connection and threads
        (see ``redis_feed``). Stop it with ``close()`` (``close`` of the store
        stops it too)."""
        self._check_open()
        source = StreamReader(self._redis_url, self._keys, self.url)
        try:
            feed = StreamFeed(
                source, sink, origin=self.origin, after_seq=self.last_seq(), url=self.url,
                seen=self._own_high,
            )
            feed.start()
        except BaseException:
            source.close()
            raise
        self._feeds.append(feed)
        return feed

    # ----------------------------------------------------------------- close

    def close(self) -> None:
        """Stop the feeds, forget this instance's re-send records and close the
        connection. Idempotent."""
        if self._redis.closed:
            return
        self._pruner.close()
        for feed in self._feeds:
            feed.close()
        try:
            self._redis.call(pack(b"UNLINK", self._ops_key), "closing")
        except StoreError as exc:  # the records expire by themselves
            _log.warning("event store %s: %s", self.url, exc)
        finally:
            self._redis.close()

