"""A feed's own blocking connection to the event stream (``redis_feed.StreamSource``).

Separate from the store's connection because ``XREAD BLOCK`` holds its
connection while it waits, and appends must not wait behind it. Only the
feed's reader thread uses it. Redis failures become ``StoreError``.
"""

from __future__ import annotations

from typing import Any

import redis

from moonbus.errors import StoreError
from moonbus.store.redis_scripts import SCRIPTS, Keys

__all__ = ["StreamReader"]


class StreamReader:
    """A feed's own blocking connection (``StreamSource``); only the feed's reader
    thread uses it. Redis failures become ``StoreError``."""

    def __init__(self, url: str, keys: Keys, shown: str) -> None:
        self._keys = keys
        self._shown = shown
        self._client = redis.Redis.from_url(
            url, protocol=2, socket_connect_timeout=2.0, socket_timeout=10.0
        )
        self._tail = self._client.register_script(SCRIPTS["tail"])
        self._rebase = self._client.register_script(SCRIPTS["rebase"])

    def read(self, after: int, count: int, block_ms: int) -> list[Any]:
        try:
            reply: Any = self._client.xread(
                {self._keys.stream: b"%d-0" % after}, count=count, block=block_ms
            )
        except (redis.RedisError, OSError) as exc:
            raise StoreError(f"reading the event stream at {self._shown} failed: {exc}") from exc
        if not reply:
            return []
        return [
            [entry_id, [part for pair in fields.items() for part in pair]]
            for entry_id, fields in reply[0][1]
        ]

    def tail(self, after: int, count: int) -> tuple[int, list[Any]]:
        try:
            counter, entries = self._tail(
                keys=[self._keys.stream, self._keys.seq], args=[after, count]
            )
        except (redis.RedisError, OSError) as exc:
            raise StoreError(f"reading the event stream at {self._shown} failed: {exc}") from exc
        return int(counter), list(entries)

    def rebase(self, floor: int) -> int:
        """Move the seq counter up to ``floor`` if it is below (Redis lost its
        data); returns the counter before."""
        try:
            return int(self._rebase(keys=[self._keys.seq], args=[floor]))
        except (redis.RedisError, OSError) as exc:
            raise StoreError(f"repairing the seq counter at {self._shown} failed: {exc}") from exc

    def close(self) -> None:
        self._client.close()
