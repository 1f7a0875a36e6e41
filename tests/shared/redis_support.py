"""Helpers for tests that need Redis: reachability, unique prefixes, cleanup,
and a private ``redis-server`` that a test may stop and start."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_or_skip() -> None:
    """Skip (or fail, when CI is "true") unless the shared Redis answers."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except (redis.RedisError, OSError) as exc:
        reason = f"no Redis at {REDIS_URL}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def unique_prefix() -> str:
    return f"moonbus-test-{uuid.uuid4().hex}"


def delete_prefix(prefix: str, url: str = REDIS_URL) -> None:
    """Delete every key under ``prefix:`` (tests clean up after themselves)."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` of our own on a free port, with an append-only file
    flushed on every write, so a restart keeps every acknowledged write."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            reason = "redis-server is not installed"
            if os.environ.get("CI") == "true":
                pytest.fail(reason)
            pytest.skip(reason)
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except (redis.RedisError, OSError):
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        """SIGKILL: the server dies without a goodbye; the AOF keeps acknowledged writes."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def restart_while(
        self, work: Callable[[threading.Event], None], *, restarts: int = 3, pause: float = 0.3
    ) -> None:
        """Run ``work(stop)`` on a thread while the server is killed and restarted
        ``restarts`` times, ``pause`` seconds apart; then set ``stop`` and join."""
        stop = threading.Event()
        worker = threading.Thread(target=work, args=(stop,))
        worker.start()
        try:
            for _ in range(restarts):
                time.sleep(pause)
                self.kill()
                self.start()
            time.sleep(pause)
        finally:
            stop.set()
            worker.join(timeout=30)
