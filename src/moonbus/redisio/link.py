"""The Redis connection of every Redis-backed part: redis-py behind the ``Link`` protocol.

This is the one module of ``moonbus.redisio`` that imports ``redis``
(redis-py); the event store's feed (``store/redis_reader.py``) opens its own
blocking connection for ``XREAD``. ``connect`` builds one dedicated
connection (``RedisLink``) per part (a shared store, an event store),
registers the part's server-side scripts with redis-py's ``register_script``
(which gives each its SHA1) and loads them once at start; every later call
is an ``EVALSHA`` sent through ``CommandBatcher`` (``batch.py``), which
re-loads a script and re-sends the call on ``NOSCRIPT`` exactly as redis-py's
``Script`` helper does, but inside a pipelined batch shared by all threads.

Faults (details in ``batch.py``):

- Redis unreachable when the part is built: the part's own error (``error``
  argument of ``connect``) naming the URL, password hidden.
- A malformed URL or a bad ``retry_timeout``: ``ConfigError``.
- Later: ``RedisLink`` reports a connection that cannot be made ready as
  ``LinkDown`` (nothing sent) and one that broke after sending as
  ``LinkLost``; error replies come back as ``ReplyError`` values. The link
  reconnects by itself on the next batch; the scripts are re-loaded on demand.

Threads: ``connect`` runs on the caller's thread; a ``RedisLink`` is driven
only by its batcher's current leader (see ``CommandBatcher``).
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, NoScriptError
from redis.retry import Retry

from moonbus.errors import ConfigError
from moonbus.redisio.batch import (
    CommandBatcher,
    LinkDown,
    LinkLost,
    ReplyError,
    ScriptRef,
    public_url,
)

__all__ = ["Connected", "RedisLink", "connect"]

_CONNECT_TIMEOUT = 2.0
_SOCKET_TIMEOUT = 5.0
_IDLE_CHECK = 0.005  # seconds without a reply after which the link is polled


@dataclass(frozen=True)
class Connected:
    """What ``connect`` hands back: the batcher over one connection, the loaded
    scripts by name, and the URL with its password hidden."""

    batcher: CommandBatcher
    scripts: dict[str, ScriptRef]
    url: str


def connect(
    url: str,
    scripts: Mapping[str, str],
    *,
    retry_timeout: float,
    what: str,
    error: Callable[[str], Exception],
) -> Connected:
    """Connect to ``url``, load ``scripts`` (name -> Lua source) once, and build a
    ``CommandBatcher`` over a ``RedisLink``. Used by every Redis-backed part.

    ``what`` names the part in messages (``"shared store"``); ``error`` builds
    the part's own exception for an unreachable server. A malformed URL or bad
    ``retry_timeout`` raises ``ConfigError``.
    """
    shown = public_url(url)
    if (
        isinstance(retry_timeout, bool)
        or not isinstance(retry_timeout, int | float)
        or not retry_timeout >= 0
    ):
        raise ConfigError(f"retry_timeout must be a number >= 0, got {retry_timeout!r}")
    try:
        pool = redis.ConnectionPool.from_url(
            url,
            protocol=2,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            socket_timeout=_SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # retries are CommandBatcher's job
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{what} URL {shown!r}: {exc}") from exc
    client = redis.Redis(connection_pool=pool)
    registered = {name: client.register_script(source) for name, source in scripts.items()}
    try:
        client.ping()
        for script in registered.values():
            client.script_load(script.script)
    except (redis.RedisError, OSError) as exc:
        pool.disconnect()
        raise error(f"cannot reach Redis at {shown}: {exc}") from exc
    refs = {
        name: ScriptRef(sha=script.sha.encode(), source=scripts[name].encode())
        for name, script in registered.items()
    }
    batcher = CommandBatcher(RedisLink(pool, shown), retry_timeout=float(retry_timeout), what=what)
    return Connected(batcher=batcher, scripts=refs, url=shown)


class RedisLink:
    """One redis-py connection driven by ``CommandBatcher`` (see its ``Link``).

    Only the batcher's current leader calls ``ensure_ready``, ``send`` and
    ``read``; ``close`` is called once, when no leader is active.
    """

    def __init__(self, pool: redis.ConnectionPool, url: str) -> None:
        self.url = url
        self._pool = pool
        self._conn: Any = None
        self._poller = select.poll()
        self._polled: object = None
        self._last_reply = 0.0

    def ensure_ready(self, busy: bool) -> None:
        try:
            if self._conn is None:
                self._conn = self._pool.get_connection()  # connects
            conn = self._conn
            conn.connect()  # no-op while connected
            recent = time.monotonic() - self._last_reply < _IDLE_CHECK
            if not (busy and recent) and self._readable(conn):
                # Nothing is outstanding, so readable means EOF (the server went
                # away, e.g. restarted) or stray data: start a fresh connection
                # before sending, so no write is lost in a dead socket. Skipped
                # for a multi-op batch on a connection that answered within the
                # last few ms: the poll releases the GIL, which costs a thread
                # switch per batch when many threads are waiting.
                conn.disconnect()
                conn.connect()
        except (redis.RedisError, OSError) as exc:
            if self._conn is not None:
                self._conn.disconnect()
            raise LinkDown(str(exc)) from exc

    def _readable(self, conn: Any) -> bool:
        # One poll(2) call (~0.5 us) instead of redis-py's can_read (~5 us); the
        # socket is redis-py's private ``_sock``, re-registered when it changes.
        sock = conn._sock
        if sock is not self._polled:
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN | select.POLLPRI)
            self._polled = sock
        return bool(self._poller.poll(0))

    def send(self, payload: bytes) -> None:
        try:
            self._conn.send_packed_command([payload], check_health=False)
        except (redis.RedisError, OSError) as exc:
            self._conn.disconnect()
            raise LinkLost(str(exc)) from exc

    def read(self) -> Any:
        conn = self._conn
        if conn._sock is None:
            # redis-py closed it (it does on a LOADING reply): the replies still
            # expected in this batch are gone with it.
            raise LinkLost("the connection was closed by the client after an error reply")
        try:
            reply = conn.read_response(disable_decoding=True)
            self._last_reply = time.monotonic()
            return reply
        except NoScriptError as exc:
            return ReplyError("NOSCRIPT", str(exc))
        except BusyLoadingError as exc:  # not executed; redis-py closed the connection
            return ReplyError("LOADING", str(exc))
        except redis.ResponseError as exc:
            message = str(exc)
            return ReplyError(message.split(" ", 1)[0], message)
        except (redis.RedisError, OSError) as exc:
            self._conn.disconnect()
            raise LinkLost(str(exc)) from exc

    def close(self) -> None:
        self._pool.disconnect()
