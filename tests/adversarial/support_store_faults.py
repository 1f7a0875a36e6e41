"""Fixtures for the store-fault tests: a redis-server of the test's own (kill -9,
restart with or without its data), a tiny tmpfs to fill, and ``moonbus serve``
as a real process. Everything started here is stopped in ``finally`` blocks,
also when a test fails."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
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

    def __init__(self, directory: Path, *, persist: bool, extra: tuple[str, ...] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI") == "true":
                pytest.fail("redis-server is not installed")
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.directory = directory
        self.persist = persist
        self.extra = extra
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else [
            "--appendonly", "no"]
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--save", "", *persistence, *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except redis.BusyLoadingError:
                return  # up, still loading its data: LOADING replies for a while
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
def own_redis(
    directory: Path, *, persist: bool, extra: tuple[str, ...] = ()
) -> Iterator[OwnRedis]:
    server = OwnRedis(directory, persist=persist, extra=extra)
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
    with open(filler, "wb", buffering=0) as fp:  # unbuffered: close has nothing to flush
        for size in (65536, 512):  # big chunks, then the last scraps
            try:
                while fp.write(b"\0" * size):
                    pass
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


class LoadingRedis:
    """A fake Redis on a free port that answers ``CLIENT``/``PING`` with
    ``+OK``/``+PONG`` and every other command with ``:7``, except that the
    first ``loading_batches`` reads carrying other commands are answered
    ``-LOADING`` for each of their commands, as a restarted Redis loading its
    data does (redis-py then closes the connection). A real server cannot be
    made to answer LOADING on cue; the wire format here is the real one.
    Threads: one acceptor, one per connection; ``close`` stops them."""

    def __init__(self, *, loading_batches: int = 1) -> None:
        self.loading_batches = loading_batches
        self.loading_sent = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        acceptor = threading.Thread(target=self._accept, daemon=True)
        acceptor.start()
        self._threads.append(acceptor)

    def _accept(self) -> None:
        self._server.settimeout(0.1)
        while not self._closing.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            worker.start()
            self._threads.append(worker)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        buffer = b""
        with conn:
            while not self._closing.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                commands, buffer = _split_commands(buffer)
                names = [command[0].upper() for command in commands]
                loading = self.loading_sent < self.loading_batches and any(
                    name not in (b"CLIENT", b"PING") for name in names)
                if loading:
                    self.loading_sent += 1
                replies = [
                    b"+OK\r\n" if name == b"CLIENT" else b"+PONG\r\n" if name == b"PING"
                    else b"-LOADING Redis is loading the dataset in memory\r\n" if loading
                    else b":7\r\n"
                    for name in names
                ]
                try:
                    conn.sendall(b"".join(replies))
                except OSError:
                    return

    def close(self) -> None:
        self._closing.set()
        self._server.close()
        for thread in self._threads:
            thread.join(timeout=5)


def _split_commands(buffer: bytes) -> tuple[list[list[bytes]], bytes]:
    """Complete RESP commands (arrays of bulk strings) at the front of ``buffer``."""
    commands: list[list[bytes]] = []
    while buffer.startswith(b"*"):
        pos = buffer.find(b"\r\n")
        if pos < 0:
            break
        count = int(buffer[1:pos])
        pos += 2
        parts: list[bytes] = []
        for _ in range(count):
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                return commands, buffer
            size = int(buffer[pos + 1 : end])
            start = end + 2
            if len(buffer) < start + size + 2:
                return commands, buffer
            parts.append(buffer[start : start + size])
            pos = start + size + 2
        if len(parts) < count:
            break
        commands.append(parts)
        buffer = buffer[pos:]
    return commands, buffer
