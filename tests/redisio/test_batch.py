"""CommandBatcher against a fake link: batching, retries and the never-twice rule.

The fake "server" executes every command it receives at ``send`` time (like a
real server that ran a command whose reply was then lost), so a lost reply
followed by a resend would show up as a double increment.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import pytest

from moonbus.errors import ClosedError, SharedBackendError
from moonbus.redisio.batch import (
    CommandBatcher,
    LinkDown,
    LinkLost,
    Op,
    ReplyError,
    ScriptRef,
    pack,
)

SCRIPT = ScriptRef(sha=hashlib.sha1(b"incr").hexdigest().encode(), source=b"incr")


def _parse(payload: bytes) -> list[list[bytes]]:
    """Split concatenated RESP arrays of bulk strings into commands."""
    commands = []
    pos = 0
    while pos < len(payload):
        end = payload.index(b"\r\n", pos)
        count = int(payload[pos + 1 : end])
        pos = end + 2
        args = []
        for _ in range(count):
            end = payload.index(b"\r\n", pos)
            size = int(payload[pos + 1 : end])
            args.append(payload[end + 2 : end + 2 + size])
            pos = end + 4 + size
        commands.append(args)
    return commands


class FakeLink:
    url = "redis://fake:1/0"

    def __init__(self) -> None:
        self.values: dict[bytes, int] = {}
        self.scripts: set[bytes] = set()
        self.replies: list[Any] = []
        self.sent: list[list[bytes]] = []
        self.down = 0  # ensure_ready calls left that fail
        self.lose_after: int | None = None  # replies readable before the link breaks
        self.loading = 0  # commands left that get a LOADING reply
        self.closed = False
        self.send_delay = 0.0
        self.broken = False

    def ensure_ready(self, busy: bool) -> None:
        if self.down:
            self.down -= 1
            raise LinkDown("connection refused")

    def send(self, payload: bytes) -> None:
        if self.send_delay:
            time.sleep(self.send_delay)
        for command in _parse(payload):
            self.sent.append(command)
            self.replies.append(self._execute(command))

    def _execute(self, command: list[bytes]) -> Any:
        if self.loading:
            self.loading -= 1
            return ReplyError("LOADING", "LOADING Redis is loading the dataset in memory")
        name = command[0]
        if name == b"SCRIPT":
            self.scripts.add(hashlib.sha1(command[2]).hexdigest().encode())
            return command[2]
        if name == b"EVALSHA":
            if command[1] not in self.scripts:
                return ReplyError("NOSCRIPT", "No matching script")
            key = command[3]
            self.values[key] = self.values.get(key, 0) + 1
            return self.values[key]
        if name == b"GET":
            return self.values.get(command[1], 0)
        if name == b"BOOM":
            raise RuntimeError("bug in the link")
        return ReplyError("MOONBUS", "MOONBUS kind string")

    def read(self) -> Any:
        if self.lose_after is not None:
            if self.lose_after == 0:
                self.lose_after = None
                self.replies.clear()
                raise LinkLost("connection reset by peer")
            self.lose_after -= 1
        return self.replies.pop(0)

    def close(self) -> None:
        self.closed = True


def incr(key: bytes = b"k") -> Op:
    return Op(pack(b"EVALSHA", SCRIPT.sha, b"1", key), script=SCRIPT, retry_safe=False)


def get(key: bytes = b"k") -> Op:
    return Op(pack(b"GET", key), script=None, retry_safe=True)


@pytest.fixture
def link() -> FakeLink:
    fake = FakeLink()
    fake.scripts.add(SCRIPT.sha)
    return fake


def test_one_op_round_trip(link: FakeLink) -> None:
    batcher = CommandBatcher(link)
    assert batcher.run(incr()) == 1
    assert batcher.run(get()) == 1
    reply = batcher.run(Op(pack(b"OTHER"), script=None, retry_safe=False))
    assert reply == ReplyError("MOONBUS", "MOONBUS kind string")
    assert batcher.statistics().batches == 3


def test_not_sent_is_retried_until_it_works(link: FakeLink) -> None:
    link.down = 3
    batcher = CommandBatcher(link, retry_timeout=5.0)
    assert batcher.run(incr()) == 1
    assert link.values[b"k"] == 1


def test_not_sent_past_the_deadline_fails_naming_the_url(link: FakeLink) -> None:
    link.down = 10**9
    batcher = CommandBatcher(link, retry_timeout=0.05)
    start = time.monotonic()
    with pytest.raises(SharedBackendError, match="redis://fake:1/0"):
        batcher.run(incr())
    assert time.monotonic() - start < 2
    assert link.values == {}
    link.down = 0
    assert batcher.run(incr()) == 1  # usable again once the link is back


def test_lost_write_fails_and_is_never_sent_twice(link: FakeLink) -> None:
    batcher = CommandBatcher(link, retry_timeout=5.0)
    link.lose_after = 0
    with pytest.raises(SharedBackendError, match="may or may not have been applied"):
        batcher.run(incr())
    assert link.values[b"k"] == 1  # applied once by the server...
    assert len(link.sent) == 1  # ...and never re-sent
    assert batcher.run(incr()) == 2


def test_lost_read_is_retried(link: FakeLink) -> None:
    link.values[b"k"] = 41
    batcher = CommandBatcher(link, retry_timeout=5.0)
    link.lose_after = 0
    assert batcher.run(get()) == 41
    assert len(link.sent) == 2


def test_loss_mid_batch_fails_only_unanswered_writes(link: FakeLink) -> None:
    batcher = CommandBatcher(link, retry_timeout=5.0)
    ops = [incr(b"a"), get(b"a"), incr(b"b"), get(b"b")]
    link.lose_after = 1  # the first reply arrives, then the connection breaks
    batcher._flush(ops)
    assert ops[0].done and ops[0].error is None and ops[0].reply == 1
    assert isinstance(ops[2].error, SharedBackendError)
    assert ops[1].reply == 1 and ops[3].reply == 1  # reads retried, after the write
    assert link.values == {b"a": 1, b"b": 1}
    assert [c[0] for c in link.sent].count(b"EVALSHA") == 2


def test_noscript_loads_the_script_and_resends(link: FakeLink) -> None:
    link.scripts.clear()  # the server restarted and lost its script cache
    batcher = CommandBatcher(link, retry_timeout=0.0)
    assert batcher.run(incr()) == 1
    assert [c[0] for c in link.sent] == [b"EVALSHA", b"SCRIPT", b"EVALSHA"]
    assert link.values[b"k"] == 1


def test_loading_reply_is_retried(link: FakeLink) -> None:
    link.loading = 2
    batcher = CommandBatcher(link, retry_timeout=5.0)
    assert batcher.run(incr()) == 1
    assert link.values[b"k"] == 1


def test_threads_are_batched_and_each_gets_its_own_reply(link: FakeLink) -> None:
    link.send_delay = 0.002  # a slow round trip lets callers pile up
    batcher = CommandBatcher(link)
    results: dict[int, list[int]] = {}

    def work(index: int) -> None:
        key = b"k%d" % index
        results[index] = [batcher.run(incr(key)) for _ in range(50)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[i] == list(range(1, 51)) for i in range(8))
    stats = batcher.statistics()
    assert stats.ops == 400
    assert stats.batches < 400  # several ops shared round trips


def test_close_fails_queued_and_later_ops(link: FakeLink) -> None:
    link.send_delay = 0.2
    batcher = CommandBatcher(link)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            batcher.run(incr())
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=call)
    first.start()
    time.sleep(0.05)  # the first op is in flight, the next one queues
    second = threading.Thread(target=call)
    second.start()
    time.sleep(0.05)
    batcher.close()
    first.join()
    second.join()
    assert len(errors) == 1 and isinstance(errors[0], ClosedError)
    assert link.closed
    with pytest.raises(ClosedError):
        batcher.run(incr())


def test_close_wakes_a_leader_in_backoff(link: FakeLink) -> None:
    link.down = 10**9
    batcher = CommandBatcher(link, retry_timeout=60.0)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            batcher.run(incr())
        except ClosedError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.1)
    start = time.monotonic()
    batcher.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - start < 1
    assert isinstance(errors[0], ClosedError)


def test_a_broken_link_never_strands_waiting_threads(link: FakeLink) -> None:
    batcher = CommandBatcher(link)
    # a moonbus error naming the part, with the foreign error as its cause
    with pytest.raises(SharedBackendError, match=r"shared store at .*RuntimeError: bug in the"):
        batcher.run(Op(pack(b"BOOM"), script=None, retry_safe=True))
    assert batcher.run(incr()) == 1  # the batcher still works
