"""The Redis backend of the shared store (``redis://host:port/db``).

The connection, the pipelined batching and the retry rules are the Redis
layer's (``moonbus.redisio``: ``link.connect`` builds one ``RedisLink`` and
loads the scripts of ``redis_scripts`` once; ``batch.CommandBatcher`` sends
every call as one command, an ``EVALSHA`` for the scripts, re-loading a
script on ``NOSCRIPT``). This module maps the shared store's operations onto
those commands; ``redis_handles`` does the same for the typed handles.

Faults, per operation (details in ``moonbus.redisio.batch``):

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

from typing import Any

from moonbus.errors import SharedBackendError
from moonbus.redisio.batch import BatchStatistics, Op, ReplyError, pack, public_url
from moonbus.redisio.link import connect
from moonbus.shared.backend import SharedBackend
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

__all__ = ["RedisBackend"]


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
