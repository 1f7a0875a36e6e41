"""Redis faults against a private ``redis-server`` that the tests kill and restart.

The server keeps an append-only file flushed on every write, so every write
Redis acknowledged survives a restart and the final counts are exact: an
increment is never applied twice, and never reported done when it was not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moonbus.errors import SharedBackendError
from moonbus.shared import SharedStore
from tests.shared.redis_support import PrivateRedis, free_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    private = PrivateRedis(tmp_path)
    private.start()
    try:
        yield private
    finally:
        private.kill()


def test_unreachable_at_start_names_the_url() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    start = time.monotonic()
    with pytest.raises(SharedBackendError, match=f"cannot reach Redis at {url}"):
        SharedStore.from_url(url)
    assert time.monotonic() - start < 10


def test_password_is_not_shown_in_errors() -> None:
    url = f"redis://user:secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(SharedBackendError) as info:
        SharedStore.from_url(url)
    assert "secret" not in str(info.value)
    assert "***" in str(info.value)


def test_restart_between_operations_is_invisible(server: PrivateRedis) -> None:
    with SharedStore.from_url(server.url) as store:
        counter = store.int("hits")
        for _ in range(100):
            counter.increment()
        server.kill()
        server.start()
        # The old connection is dead and the new server has no scripts: the
        # store reconnects and reloads them by itself; nothing is lost or doubled.
        assert counter.increment() == 101
        assert store.table("t").increment("a") == 1
        assert counter.get() == 101


def test_down_longer_than_retry_timeout_fails_then_recovers(server: PrivateRedis) -> None:
    with SharedStore.from_url(server.url, retry_timeout=0.3) as store:
        counter = store.int("hits")
        counter.increment()
        server.kill()
        start = time.monotonic()
        with pytest.raises(SharedBackendError, match=server.url):
            counter.increment()
        assert time.monotonic() - start < 5
        with pytest.raises(SharedBackendError):
            counter.get()
        server.start()
        assert counter.increment() == 2  # the failed increment was never sent


def test_operations_wait_for_a_quick_restart(server: PrivateRedis) -> None:
    with SharedStore.from_url(server.url, retry_timeout=10.0) as store:
        counter = store.int("hits")
        counter.increment()
        server.kill()
        restarter = threading.Timer(0.3, server.start)
        restarter.start()
        try:
            assert counter.increment() == 2  # retried with backoff until the server is back
        finally:
            restarter.join()
        assert counter.get() == 2


def _paused_then_killed(server: PrivateRedis, call: object, mode: str) -> list[object]:
    """Run ``call`` while the server pauses clients, kill the server meanwhile,
    restart it; returns what ``call`` returned or raised."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())  # type: ignore[operator]
        except Exception as exc:
            outcome.append(exc)

    admin = server.client()
    admin.client_pause(3000, all=mode == "ALL")
    admin.close()
    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.3)  # the command is sent and waits in the paused server
    server.kill()
    server.start()
    thread.join(timeout=15)
    assert not thread.is_alive()
    return outcome


def test_write_in_flight_when_the_server_dies_fails_and_is_not_resent(
    server: PrivateRedis,
) -> None:
    with SharedStore.from_url(server.url, retry_timeout=10.0) as store:
        counter = store.int("hits")
        counter.set(5)
        outcome = _paused_then_killed(server, counter.increment, "WRITE")
        assert isinstance(outcome[0], SharedBackendError)
        assert "may or may not have been applied" in str(outcome[0])
        assert counter.get() == 5  # the paused server never ran it; nobody re-sent it
        assert counter.increment() == 6


def test_read_in_flight_when_the_server_dies_is_retried(server: PrivateRedis) -> None:
    with SharedStore.from_url(server.url, retry_timeout=10.0) as store:
        counter = store.int("hits")
        counter.set(7)
        outcome = _paused_then_killed(server, counter.get, "ALL")
        assert outcome == [7]


def test_increments_during_restarts_are_never_doubled_or_lost(server: PrivateRedis) -> None:
    with SharedStore.from_url(server.url, retry_timeout=10.0) as store:
        counter = store.int("hits")
        done = 0
        unknown = 0

        def work(stop: threading.Event) -> None:
            nonlocal done, unknown
            while not stop.is_set():
                try:
                    counter.increment()
                    done += 1
                except SharedBackendError as exc:
                    assert "may or may not have been applied" in str(exc)
                    unknown += 1

        server.restart_while(work)
        final = counter.get()
        assert done > 0
        assert done <= final <= done + unknown
