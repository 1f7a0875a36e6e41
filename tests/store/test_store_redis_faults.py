"""Redis faults for the event store: restarts, outages, lost replies, dying clients.

Restart cases run against a private ``redis-server`` (append-only file flushed
on every write, so every acknowledged append survives) that the tests kill and
start again. The dying-client case uses the shared Redis with its own prefix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from tests.shared.redis_support import (
    REDIS_URL,
    PrivateRedis,
    delete_prefix,
    redis_or_skip,
    unique_prefix,
)

from moonbus.bus import Bus, Event
from moonbus.errors import StoreError
from moonbus.runtime import Runtime
from moonbus.store.redis_backend import RedisEventStore
from moonbus.store.redis_scripts import Keys

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    private = PrivateRedis(tmp_path)
    private.start()
    try:
        yield private
    finally:
        private.kill()


def seqs_in_stream(client: redis.Redis, prefix: str = "moonbus") -> list[int]:
    return [int(i.split(b"-")[0]) for i, _ in client.xrange(Keys(prefix).stream)]


def test_restart_between_appends_is_invisible(server: PrivateRedis) -> None:
    with RedisEventStore(server.url) as store:
        for n in range(5):
            store.append_new("hit", {"n": n}, tick=n, ts=n, source="t")
        server.kill()
        server.start()
        # dead connection, empty script cache: reconnects and reloads by itself
        assert store.append_new("hit", {"n": 5}, tick=5, ts=5, source="t").seq == 6
        assert [e.data["n"] for e in store.query()] == list(range(6))
        assert store.summary(after_tick=2) == {"hit": 3}


def test_down_longer_than_retry_timeout_fails_clearly_then_recovers(server: PrivateRedis) -> None:
    with RedisEventStore(server.url, retry_timeout=0.3) as store:
        store.append_new("hit", None, ts=0, source="t")
        server.kill()
        start = time.monotonic()
        reason = f"appending failed: cannot reach Redis at {server.url}"
        with pytest.raises(StoreError, match=reason):
            store.append_new("hit", None, ts=1, source="t")
        assert time.monotonic() - start < 5
        with pytest.raises(StoreError, match="querying failed"):
            store.query()
        server.start()
        # the failed append never reached Redis: the numbering has no gap
        assert store.append_new("hit", None, ts=2, source="t").seq == 2
        assert seqs_in_stream(server.client()) == [1, 2]


def test_appends_wait_for_a_quick_restart(server: PrivateRedis) -> None:
    with RedisEventStore(server.url, retry_timeout=10.0) as store:
        store.append_new("hit", None, ts=0, source="t")
        server.kill()
        restarter = threading.Timer(0.3, server.start)
        restarter.start()
        try:
            assert store.append_new("hit", None, ts=1, source="t").seq == 2
        finally:
            restarter.join()


def test_append_in_flight_when_the_server_dies_is_resent_once(server: PrivateRedis) -> None:
    with RedisEventStore(server.url, retry_timeout=10.0) as store:
        store.append_new("hit", None, ts=0, source="t")
        outcome: list[object] = []

        def append() -> None:
            try:
                outcome.append(store.append_new("hit", {"n": 1}, ts=1, source="t"))
            except Exception as exc:
                outcome.append(exc)

        admin = server.client()
        admin.client_pause(3000, all=False)  # writes (scripts included) wait
        admin.close()
        thread = threading.Thread(target=append)
        thread.start()
        time.sleep(0.3)  # sent, waiting in the paused server
        server.kill()
        server.start()
        thread.join(timeout=15)
        assert not thread.is_alive()
        [event] = outcome
        assert not isinstance(event, Exception), event
        assert event.seq == 2  # type: ignore[attr-defined]
        assert seqs_in_stream(server.client()) == [1, 2]


def test_emits_during_restarts_are_never_doubled_or_lost(server: PrivateRedis) -> None:
    with RedisEventStore(server.url, retry_timeout=10.0) as store, Bus(store=store) as bus:
        committed: list[int] = []
        failed = 0

        def work(stop: threading.Event) -> None:
            nonlocal failed
            n = 0
            while not stop.is_set():
                try:
                    event = bus.emit("hit", {"n": n})
                    assert event.seq == (committed[-1] if committed else 0) + 1 + failed
                    committed.append(event.seq)
                except StoreError:
                    failed += 1
                n += 1

        server.restart_while(work)
        assert len(committed) > 10
        assert failed == 0  # every outage was shorter than retry_timeout
        client = server.client()
        entries = client.xrange(Keys("moonbus").stream)
        numbers = [json.loads(fields[b"d"])["n"] for _, fields in entries]
        assert numbers == list(range(len(committed)))  # each emit exactly once, in order
        assert seqs_in_stream(client) == committed == list(range(1, len(committed) + 1))
        assert [e.seq for e in bus.log()] == committed


APPENDER = """
import sys
from moonbus.store.redis_backend import RedisEventStore

store = RedisEventStore(sys.argv[1], prefix=sys.argv[2])
print("ready", flush=True)
n = 0
while True:
    store.append_new("hit", {"n": n}, tick=n, ts=n, source="victim")
    n += 1
"""


def test_a_client_killed_mid_append_leaves_no_gap() -> None:
    redis_or_skip()
    prefix = unique_prefix()
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    try:
        victims = [
            subprocess.Popen(
                [sys.executable, "-c", APPENDER, REDIS_URL, prefix],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        for victim in victims:
            assert victim.stdout is not None
            assert victim.stdout.readline().strip() == b"ready"
        time.sleep(0.5)
        for victim in victims:
            victim.send_signal(signal.SIGKILL)
            _, err = victim.communicate(timeout=10)
            assert victim.returncode == -signal.SIGKILL, err.decode()
        with RedisEventStore(REDIS_URL, prefix=prefix) as store:
            last = store.last_seq()
            assert last > 10
            client = redis.Redis.from_url(REDIS_URL)
            try:
                assert seqs_in_stream(client, prefix) == list(range(1, last + 1))
            finally:
                client.close()
            assert store.summary() == {"hit": last}
            assert [e.seq for e in store.query(types="hit")] == list(range(1, last + 1))
    finally:
        delete_prefix(prefix)


def test_delivery_to_another_process_survives_a_restart(server: PrivateRedis) -> None:
    """Runtime B follows the stream while A emits through two Redis restarts:
    B receives exactly A's committed events, in order, once."""
    a_url = f"{server.url}?retry_timeout=10"
    with Runtime(events=a_url, threaded=False) as a, Runtime(
        events=a_url, threaded=False
    ) as b:
        got: list[int] = []
        done = threading.Event()

        def record(event: Event) -> None:
            got.append(event.data["n"])
            if len(got) == 300:
                done.set()

        b.bus.on("hit", record)
        sent = []
        for n in range(300):
            if n in (100, 200):
                server.kill()
                restart = threading.Timer(0.3, server.start)
                restart.start()
            sent.append(a.bus.emit("hit", {"n": n}).seq)
            if n in (100, 200):
                restart.join()
        assert done.wait(30), f"B got {len(got)} of 300"
        time.sleep(0.3)  # a duplicate would arrive now
        assert got == list(range(300))
        assert sent == sorted(sent)
        assert [e.seq for e in b.bus.log(types="hit")] == sent
