"""The Redis backend of the shared store (``redis://host:port/db``).

This is the only module that imports ``redis`` (redis-py). It builds one
dedicated connection (``RedisLink``) per store, registers the server-side
scripts of ``redis_scripts`` with redis-py's ``register_script`` (which gives
each its SHA1) and loads them once at start; every later call is an
``EVALSHA`` sent through ``CommandBatcher``, which re-loads a script and
re-sends the call on ``NOSCRIPT`` exactly as redis-py's ``Script`` helper does,
but inside a pipelined batch shared by all threads.

Faults, per operation (details in ``redis_batch``):

- Redis unreachable when the store is built: ``SharedBackendError`` naming the URL.
- Redis down later: every operation that was not sent is retried with
  exponential backoff for up to ``retry_timeout`` seconds (default 2), then
  fails with ``SharedBackendError``. Reads also retry when their reply was
  lost. A *write* whose reply was lost (the server died while running it)
  fails at once with ``SharedBackendError`` and is never re-sent: it may or may
  not have been applied, and applying an increment twice is never an option.
- Afterwards the link reconnects by itself; the scripts are re-loaded on demand.

Thread safety: every method may be called from any thread (see
``CommandBatcher``); ``close`` once, by the owner.
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

from moonbus.errors import ConfigError, SharedBackendError
from moonbus.shared.backend import SharedBackend
from moonbus.shared.redis_batch import (
    BatchStatistics,
    CommandBatcher,
    LinkDown,
    LinkLost,
    Op,
    ReplyError,
    ScriptRef,
    pack,
    public_url,
)
from moonbus.shared.redis_handles import (
    RedisBool,
    RedisContext,
    RedisFloat,
    RedisHandle,
    RedisInt,
    RedisString,
    RedisTable,
    decode_table,
)
from moonbus.shared.redis_scripts import SCRIPTS, decode_scalar, index_key, value_key
from moonbus.shared.values import SharedLimits

__all__ = ["Connected", "RedisBackend", "RedisLink", "connect", "public_url"]

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


class RedisBackend(SharedBackend):
    """Shared values in Redis, visible to every process using the same URL and prefix."""

    def __init__(
        self, url: str, *, prefix: str, limits: SharedLimits, retry_timeout: float = 2.0
    ) -> None:
        self.limits = limits
        self.url = public_url(url)
        link = connect(
            url, SCRIPTS, retry_timeout=retry_timeout, what="shared store", error=SharedBackendError
        )
        self._ctx = RedisContext(
            batcher=link.batcher, prefix=prefix, limits=limits, scripts=link.scripts, url=self.url
        )
        self._prefix = prefix

    # -- handles ------------------------------------------------------------

    def _handle(self, cls: type[RedisHandle], namespace: str, name: str) -> Any:
        handle = cls(name, self._ctx, namespace)
        handle._check_kind()
        return handle

    def int_handle(self, namespace: str, name: str) -> RedisInt:
        return self._handle(RedisInt, namespace, name)  # type: ignore[no-any-return]

    def float_handle(self, namespace: str, name: str) -> RedisFloat:
        return self._handle(RedisFloat, namespace, name)  # type: ignore[no-any-return]

    def string_handle(self, namespace: str, name: str) -> RedisString:
        return self._handle(RedisString, namespace, name)  # type: ignore[no-any-return]

    def bool_handle(self, namespace: str, name: str) -> RedisBool:
        return self._handle(RedisBool, namespace, name)  # type: ignore[no-any-return]

    def table_handle(self, namespace: str, name: str) -> RedisTable:
        return self._handle(RedisTable, namespace, name)  # type: ignore[no-any-return]

    # -- store level --------------------------------------------------------

    def _call(self, command: bytes, *, script: str | None = None, retry_safe: bool) -> Any:
        ref = self._ctx.scripts[script] if script else None
        reply = self._ctx.batcher.run(Op(command, script=ref, retry_safe=retry_safe))
        if type(reply) is ReplyError:
            raise SharedBackendError(f"Redis at {self.url} refused a shared-store call: {reply}")
        return reply

    def _namespace_script(self, script: str, namespace: str, *, retry_safe: bool) -> Any:
        sha = self._ctx.scripts[script].sha
        index = index_key(self._prefix, namespace)
        values = index + b":"
        command = pack(b"EVALSHA", sha, b"1", index, values)
        return self._call(command, script=script, retry_safe=retry_safe)

    def contains(self, namespace: str, name: str) -> bool:
        key = value_key(self._prefix, namespace, name)
        return self._call(pack(b"EXISTS", key), retry_safe=True) == 1  # type: ignore[no-any-return]

    def remove(self, namespace: str, name: str) -> bool:
        sha = self._ctx.scripts["remove"].sha
        key = value_key(self._prefix, namespace, name)
        index = index_key(self._prefix, namespace)
        command = pack(b"EVALSHA", sha, b"2", key, index, name.encode("utf-8"))
        return self._call(command, script="remove", retry_safe=False) == 1  # type: ignore[no-any-return]

    def clear(self, namespace: str) -> None:
        self._namespace_script("clear", namespace, retry_safe=False)

    def names(self, namespace: str) -> list[str]:
        reply = self._namespace_script("names", namespace, retry_safe=True)
        return sorted(name.decode("utf-8") for name in reply)

    def dump(self, namespace: str) -> dict[str, Any]:
        reply = self._namespace_script("dump", namespace, retry_safe=True)
        out: dict[str, Any] = {}
        for raw_name, raw_fields in zip(reply[::2], reply[1::2], strict=True):
            name = raw_name.decode("utf-8")
            fields = dict(zip(raw_fields[::2], raw_fields[1::2], strict=True))
            kind = fields.get(b"k")
            try:
                if kind == b"table":
                    out[name] = decode_table(fields)
                else:
                    out[name] = decode_scalar(kind or b"", fields[b"v"])
            except (ValueError, KeyError) as exc:
                raise SharedBackendError(
                    f"shared value {name!r} in Redis at {self.url} is not in moonbus's "
                    f"format: {exc}"
                ) from exc
        return {name: out[name] for name in sorted(out)}

    def statistics(self) -> BatchStatistics:
        """Round trips and commands sent so far by this store's connection."""
        return self._ctx.batcher.statistics()

    def close(self) -> None:
        self._ctx.batcher.close()
