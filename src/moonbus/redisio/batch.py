"""One connection, many threads: batch concurrent commands into one round trip.

Every Redis operation of the shared store and of the event store is *one*
command (a single read such as ``HMGET``, or one ``EVALSHA`` of a server-side
script), so each is atomic on the server by itself. ``CommandBatcher`` only
decides how commands travel:

- A calling thread appends its ``Op`` to a queue. If no thread is talking to
  Redis, the caller becomes the *leader*: it takes the whole queue, writes all
  commands in one ``send`` and reads the replies in order (a pipeline without
  MULTI). Threads that arrive meanwhile wait on a condition; when the leader is
  done it wakes them, and one of those whose op is still queued becomes the
  next leader and sends everything that piled up. With one thread this is a
  plain request/reply; with N threads a round trip carries up to N commands.
- No dedicated thread, no sleep-polling; the connection is used only by the
  current leader, so it needs no lock of its own.

Faults (the link reports them as ``LinkDown`` or ``LinkLost``):

- ``LinkDown`` - the link could not be made ready; *nothing was sent*. Every
  op is retried with exponential backoff until ``retry_timeout`` has passed,
  then fails with ``SharedBackendError`` naming the URL.
- ``LinkLost`` - the connection broke after commands were sent (also when a
  busy batch was written into a connection whose server had just died). An op whose
  reply was not read may or may not have been applied: ops marked
  ``retry_safe`` (reads) are retried like above; every other op (any write)
  fails at once with ``SharedBackendError`` saying the outcome is unknown. An
  increment is therefore never applied twice, and never reported as done when
  it was not.
- ``NOSCRIPT`` (the server restarted and lost its script cache) means the
  command was *not* executed: the script is loaded again (``SCRIPT LOAD``) and
  the op re-sent, whatever its kind. ``LOADING``, ``BUSY``, ``MASTERDOWN`` and
  ``TRYAGAIN`` replies also mean "not executed": the op is retried with
  backoff within ``retry_timeout``, whatever its kind. (redis-py closes the
  connection on ``LOADING``: the link then reports the rest of the batch as
  ``LinkLost``.)
- Anything else that goes wrong while a batch is sent (a client bug) fails
  that batch's ops with ``SharedBackendError`` naming the part (``what``) and
  the URL; it never reaches a caller as a foreign exception.

The link reconnects by itself on the next batch. This module imports no Redis
client: ``link.RedisLink`` adapts redis-py to the ``Link`` protocol, and the
tests drive the batcher with a scripted fake link. Failures are
``SharedBackendError`` whichever part owns the batcher (``what`` names it in
the message); the event store re-raises them as ``StoreError``.

Thread safety: ``run`` may be called from any number of threads; ``close``
from any thread, once the owner is done (late ``run`` calls raise
``ClosedError``; a leader sleeping in backoff wakes up and fails its batch).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from moonbus.errors import ClosedError, SharedBackendError

__all__ = [
    "BatchStatistics",
    "CommandBatcher",
    "Link",
    "LinkDown",
    "LinkLost",
    "Op",
    "ReplyError",
    "ScriptRef",
    "pack",
    "pack_args",
    "public_url",
]

MAX_BATCH = 256
MAX_ROUNDS = 8  # batches one leader sends in a row before handing over

# Error replies meaning the command was refused before it ran (safe to resend).
_NOT_EXECUTED = frozenset({"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN"})


@dataclass(frozen=True, slots=True)
class BatchStatistics:
    """Counters of one batcher: round trips (``batches``), commands (``ops``)
    and commands re-sent after a transient failure (``retries``)."""

    batches: int
    ops: int
    retries: int = 0


def public_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # a malformed netloc: hide everything before the host
        if "@" not in url:
            return url
        return url.partition("://")[0] + "://***@" + url.rpartition("@")[2]
    if password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def pack(*args: bytes) -> bytes:
    """One command in the Redis protocol (RESP) as bytes."""
    return b"*%d\r\n%s" % (len(args), pack_args(args))


def pack_args(args: Sequence[bytes]) -> bytes:
    """The arguments part of a RESP command (after its ``*<count>`` line)."""
    return b"".join([b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args])


class LinkDown(Exception):
    """The link is not usable and nothing of the current batch was sent."""


class LinkLost(Exception):
    """The connection broke after sending; unread replies are unknown."""


@dataclass(frozen=True, slots=True)
class ReplyError:
    """An error reply. ``code`` is its first word (``NOSCRIPT``, ``LOADING``,
    ``MOONBUS`` for our scripts' own errors, ``ERR``...)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ScriptRef:
    """A server-side script: its SHA1 (hex, as bytes) and its source."""

    sha: bytes
    source: bytes


class Link(Protocol):
    """The connection the batcher drives (only the leader calls it)."""

    url: str

    def ensure_ready(self, busy: bool) -> None:
        """Connect if needed and check the connection is alive and idle;
        raise ``LinkDown`` when that fails (nothing sent). ``busy`` says the
        batch holds several ops (the link may then skip a costly liveness probe
        on a connection it used a moment ago)."""

    def send(self, payload: bytes) -> None:
        """Write commands; raise ``LinkLost`` on failure (some may have been sent)."""

    def read(self) -> Any:
        """Read one reply; error replies are returned as ``ReplyError``;
        raise ``LinkLost`` when the connection breaks."""

    def close(self) -> None: ...


class Op:
    """One command and, once ``done``, its ``reply`` (or ``error``).

    A caller that has to wait blocks on its own ``waiter`` lock, released by the
    leader when the op is done or when the caller is ``promoted`` to leader.
    """

    __slots__ = ("done", "error", "payload", "promoted", "reply", "retry_safe", "script", "waiter")

    def __init__(self, payload: bytes, *, script: ScriptRef | None, retry_safe: bool) -> None:
        self.payload = payload
        self.script = script
        self.retry_safe = retry_safe
        self.done = False
        self.reply: Any = None
        self.error: Exception | None = None
        self.waiter: threading.Lock | None = None
        self.promoted = False

    def finish(self, reply: Any = None, error: Exception | None = None) -> None:
        self.reply = reply
        self.error = error
        self.done = True


class CommandBatcher:
    """Sends ops over one ``Link``, batching those issued at the same time.

    Invariant (under ``_mutex``): the queue is empty whenever no leader is
    active, because a leader that finishes with a non-empty queue promotes the
    thread of the first queued op. Waiters are woken one by one (their op is
    done, or they are the next leader), never all at once. A promoted leader
    takes the queue only when it runs, so the callers woken just before it
    have had a chance to queue their next op into its batch.
    """

    def __init__(
        self,
        link: Link,
        *,
        retry_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        what: str = "shared store",
    ) -> None:
        if not retry_timeout >= 0:
            raise ValueError(f"retry_timeout must be >= 0, got {retry_timeout!r}")
        self.what = what  # names the part in messages ("shared store", "event store")
        self._link = link
        self._retry_timeout = retry_timeout
        self._clock = clock
        self._mutex = threading.Lock()
        self._queue: list[Op] = []
        self._leader = False
        self._closed = False
        self._closing = threading.Event()  # wakes a leader sleeping in backoff
        self._batches = 0  # written by the leader only
        self._ops = 0
        self._retries = 0

    def run(self, op: Op) -> Any:
        """Send ``op`` (maybe with others) and return its reply; raises its error."""
        with self._mutex:
            if self._closed:
                raise ClosedError(f"the {self.what} is closed")
            if self._leader:
                waiter = op.waiter = threading.Lock()
                waiter.acquire()
                self._queue.append(op)
                batch = None
            else:
                self._leader = True
                batch = [op]
        if batch is None:
            op.waiter.acquire()  # type: ignore[union-attr]  # set above
            if not op.done:  # promoted: op is first in the queue (FIFO, we lead)
                with self._mutex:
                    batch = self._queue[:MAX_BATCH]
                    del self._queue[:MAX_BATCH]
        if batch is not None:
            self._lead(batch)
        error, op.error = op.error, None
        if error is not None:
            # Raised without keeping a cycle (op -> error -> traceback -> this
            # frame -> op): the error and the caller's frames are freed as soon
            # as the caller drops it, not at some later garbage collection.
            try:
                raise error
            finally:
                del error
        return op.reply

    def _lead(self, batch: list[Op]) -> None:
        """Send batches until the queue is empty or ``MAX_ROUNDS`` were sent,
        waking each batch's callers, then pass leadership on."""
        rounds = 0
        next_batch: list[Op] | None = batch
        while next_batch is not None:
            batch = next_batch
            next_batch = None
            rounds += 1
            try:
                self._flush(batch)
            except BaseException as exc:
                # Never leave an op unfinished: its thread would wait for nothing.
                # A bug or an unexpected client error becomes each op's error (a
                # moonbus error naming the part); only an interrupt propagates.
                for op in batch:
                    if not op.done:
                        error = SharedBackendError(
                            f"{self.what} at {self._link.url}: a batch of commands failed "
                            f"unexpectedly ({type(exc).__name__}: {exc})"
                        )
                        error.__cause__ = exc
                        op.finish(error=error)
                rounds = MAX_ROUNDS  # hand over below
                if not isinstance(exc, Exception):
                    raise
            finally:
                next_batch = self._after_round(batch, keep_leading=rounds < MAX_ROUNDS)

    def _after_round(self, batch: list[Op], *, keep_leading: bool) -> list[Op] | None:
        """Wake the callers of ``batch``; return the next batch to send, or
        promote a successor (or step down) and return None."""
        successor: Op | None = None
        next_batch: list[Op] | None = None
        with self._mutex:
            closed = self._closed
            if not self._queue or closed:
                self._leader = False
            elif keep_leading:
                # Staying leader saves a thread hand-over on the critical path.
                next_batch = self._queue[:MAX_BATCH]
                del self._queue[:MAX_BATCH]
            else:
                successor = self._queue[0]
                successor.promoted = True
        for op in batch:
            if op.waiter is not None and not op.promoted:
                op.waiter.release()
        if successor is not None:
            successor.waiter.release()  # type: ignore[union-attr]
        if closed:
            self._link.close()
        return next_batch

    def statistics(self) -> BatchStatistics:
        """Round trips made and ops sent so far (``ops / batches`` is the mean batch)."""
        return BatchStatistics(batches=self._batches, ops=self._ops, retries=self._retries)

    def close(self) -> None:
        """Refuse new ops, fail queued ones, and close the link (after the
        current leader, if any, has finished)."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._closing.set()
            queued, self._queue = self._queue, []
            leader_active = self._leader
        for op in queued:
            op.finish(error=ClosedError(f"the {self.what} is closed"))
            op.waiter.release()  # type: ignore[union-attr]
        if not leader_active:
            self._link.close()

    # -- the leader's work --------------------------------------------------

    def _flush(self, batch: list[Op]) -> None:
        self._batches += 1
        self._ops += len(batch)
        pending = batch
        deadline: float | None = None
        attempt = 0
        while pending:
            if self._closing.is_set():
                for op in pending:
                    op.finish(error=ClosedError(f"the {self.what} is closed"))
                return
            try:
                self._link.ensure_ready(len(pending) > 1)
                retry, problem = self._exchange(pending)
            except LinkDown as exc:
                retry, problem = pending, f"cannot reach Redis at {self._link.url}: {exc}"
            if not retry:
                return
            now = self._clock()
            if deadline is None:
                deadline = now + self._retry_timeout
            if now >= deadline:
                for op in retry:
                    op.finish(error=SharedBackendError(f"{problem} (gave up after retrying)"))
                return
            delay = min(0.005 * 2**attempt, 0.25, deadline - now)
            attempt += 1
            self._closing.wait(delay)
            self._retries += len(retry)
            pending = retry

    def _exchange(self, pending: Sequence[Op], *, reloaded: bool = False) -> tuple[list[Op], str]:
        """One round trip. Returns the ops to retry and why."""
        lost = f"lost the connection to Redis at {self._link.url}"
        try:
            self._link.send(b"".join(op.payload for op in pending))
        except LinkLost as exc:
            return self._after_loss(list(pending), exc), f"{lost}: {exc}"
        retry: list[Op] = []
        reload: list[Op] = []
        why = ""
        for index, op in enumerate(pending):
            try:
                reply = self._link.read()
            except LinkLost as exc:
                retry += self._after_loss(list(pending[index:]), exc)
                return retry + reload, f"{lost}: {exc}"
            if type(reply) is ReplyError:
                if reply.code == "NOSCRIPT" and op.script is not None and not reloaded:
                    reload.append(op)
                    continue
                if reply.code in _NOT_EXECUTED:
                    why = f"Redis at {self._link.url} is not ready: {reply.message}"
                    retry.append(op)
                    continue
            op.finish(reply)
        if not reload:
            return retry, why
        # A NOSCRIPT op was not run, so sending it again cannot apply it twice.
        try:
            self._load_scripts({op.script.sha: op.script for op in reload if op.script})
        except LinkLost as exc:
            return retry + reload, f"{lost}: {exc}"
        again, why_again = self._exchange(reload, reloaded=True)
        return retry + again, why_again or why

    def _load_scripts(self, scripts: dict[bytes, ScriptRef]) -> None:
        self._link.send(b"".join(pack(b"SCRIPT", b"LOAD", s.source) for s in scripts.values()))
        for script in scripts.values():
            reply = self._link.read()
            if type(reply) is ReplyError:
                raise LinkLost(f"SCRIPT LOAD of {script.sha.decode()} failed: {reply.message}")

    def _after_loss(self, unanswered: list[Op], exc: LinkLost) -> list[Op]:
        """Fail the writes whose outcome is unknown; return the reads to retry."""
        retry = []
        for op in unanswered:
            if op.retry_safe:
                retry.append(op)
            else:
                op.finish(
                    error=SharedBackendError(
                        f"lost the connection to Redis at {self._link.url} after sending a "
                        f"write; it may or may not have been applied and is not retried ({exc})"
                    )
                )
        return retry
