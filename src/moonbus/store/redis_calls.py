"""The event store's commands over the Redis layer, failing as ``StoreError``.

``RedisCalls`` holds what ``moonbus.redisio.link.connect`` hands the Redis
event store: the ``CommandBatcher`` over its one connection and its loaded
server-side scripts. Every command of the event store is sent as safe to
re-send (appends carry an op number that makes a re-sent one answer its
first run; see "Faults" in ``redis_backend``). A failure of the Redis layer
becomes ``StoreError`` naming the event store and the action, with ``kind``
``lost_reply`` (the connection broke after sending) or ``unreachable``; a
closed batcher becomes ``ClosedError`` naming the store.

Threads: ``send``, ``call`` and ``script`` may be called from any thread (the
batcher batches them); ``close`` once, by the store, after its last command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from moonbus.errors import ClosedError, SharedBackendError, StoreError
from moonbus.redisio.batch import BatchStatistics, CommandBatcher, Op, ReplyError, ScriptRef, pack

__all__ = ["RedisCalls"]


class RedisCalls:
    """One event store's batcher, scripts and URL (password hidden)."""

    def __init__(self, batcher: CommandBatcher, scripts: dict[str, ScriptRef], url: str) -> None:
        self.batcher = batcher
        self.scripts = scripts
        self.url = url
        self.closed = False

    def check_open(self) -> None:
        if self.closed:
            raise ClosedError(f"event store {self.url} is closed")

    def send(self, payload: bytes, action: str, script: str | None = None) -> Any:
        """Send one command and return its reply, error replies included as
        ``ReplyError``; ``script`` names the script an ``EVALSHA`` runs (re-loaded
        on ``NOSCRIPT``)."""
        self.check_open()
        ref = self.scripts[script] if script is not None else None
        try:
            return self.batcher.run(Op(payload, script=ref, retry_safe=True))
        except ClosedError as exc:
            raise ClosedError(f"event store {self.url} is closed") from exc
        except SharedBackendError as exc:
            kind = "lost_reply" if "may or may not have been applied" in str(exc) else (
                "unreachable")
            raise StoreError(f"event store {self.url}: {action} failed: {exc}", kind=kind) from exc

    def call(self, payload: bytes, action: str, script: str | None = None) -> Any:
        """``send``, with an error reply raised as ``StoreError``."""
        reply = self.send(payload, action, script)
        if type(reply) is ReplyError:
            raise StoreError(f"event store {self.url}: Redis refused {action}: {reply.message}")
        return reply

    def payload(self, name: str, keys: Sequence[bytes], args: Sequence[bytes]) -> bytes:
        """The ``EVALSHA`` command of script ``name``."""
        return pack(b"EVALSHA", self.scripts[name].sha, b"%d" % len(keys), *keys, *args)

    def script(self, name: str, keys: Sequence[bytes], args: Sequence[bytes], action: str) -> Any:
        """Run script ``name``; an error reply raises ``StoreError``."""
        return self.call(self.payload(name, keys, args), action, name)

    def statistics(self) -> BatchStatistics:
        return self.batcher.statistics()

    def close(self) -> None:
        """Refuse further commands and close the connection."""
        self.closed = True
        self.batcher.close()
