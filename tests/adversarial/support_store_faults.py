"""Fixtures for the store-fault tests: a redis-server of the test's own (kill -9,
restart with or without its data), a tiny tmpfs to fill, and ``moonbus serve``
as a real process. Everything started here is stopped in ``finally`` blocks,
also when a test fails."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.shared.redis_support import free_port

SRC = Path(__file__).resolve().parents[2] / "src"
PASSWORD = "fault-secret"


class OwnRedis:
    """A ``redis-server`` on a free port. ``persist``: an append-only file
    flushed on every write (a restart keeps the data); else nothing is saved
    (a restart comes back empty, as a server that lost its data)."""

    def __init__(self, directory: Path, *, persist: bool) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI") == "true":
                pytest.fail("redis-server is not installed")
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.directory = directory
        self.persist = persist
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else [
            "--appendonly", "no"]
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--save", "", *persistence],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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
        """SIGKILL, no goodbye."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=10)


@contextmanager
def own_redis(directory: Path, *, persist: bool) -> Iterator[OwnRedis]:
    server = OwnRedis(directory, persist=persist)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextmanager
def small_tmpfs(directory: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``directory`` (needs root: skips otherwise)."""
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                           str(directory)], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {done.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, timeout=10)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system is full; returns it."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb") as fp:
        try:
            while True:
                fp.write(chunk)
                fp.flush()
        except OSError:
            pass
    return filler


@contextmanager
def serve(args: list[str], log: Path) -> Iterator[subprocess.Popen[str]]:
    """``moonbus serve ARGS`` as a process (RCON on a free port); waits until it
    is up. Killed in ``finally`` if the test did not stop it. glibc fills freed
    memory with a pattern (``MALLOC_PERTURB_``), so a use after free crashes at
    once instead of by chance."""
    env = {**os.environ, "MOONBUS_RCON_PASSWORD": PASSWORD, "PYTHONPATH": str(SRC),
           "MALLOC_PERTURB_": "165"}
    with open(log, "w") as stderr:  # a file: the server never blocks on a pipe
        proc = subprocess.Popen(
            [sys.executable, "-m", "moonbus", "serve", *args, "--rcon-port", "0"],
            stderr=stderr, stdout=subprocess.DEVNULL, env=env, text=True,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if re.search(r"RCON on 127\.0\.0\.1:\d+", log.read_text()):
                break
            time.sleep(0.05)
        assert proc.poll() is None, log.read_text()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def stop(proc: subprocess.Popen[str], timeout: float = 20) -> int:
    """SIGTERM and the exit code."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)
