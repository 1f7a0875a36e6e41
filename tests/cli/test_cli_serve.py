"""`moonbus serve` as an operator runs it: a real process, a standard RCON client, SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rcon.source import Client

PASSWORD = "test-secret"


@pytest.fixture(params=["immediate", "deferred"])
def server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    script = tmp_path / "watcher.lua"
    script.write_text(
        'events:on("tick", function(e) shared:int("ticks"):increment() end)\n'
        "function poll() return 100 end\n"
        "function on_stop()\n"
        '  events:emit("watcher_stopped", {ticks = shared:int("ticks"):get()})\n'
        "end\n"
    )
    db = tmp_path / "events.db"
    env = {**os.environ, "MOONBUS_RCON_PASSWORD": PASSWORD}
    log = tmp_path / "serve.log"
    with open(log, "w") as stderr:  # a file, not a pipe: the server can never block on it
        proc = subprocess.Popen(
            [sys.executable, "-m", "moonbus", "serve", str(script), "--rcon-port", "0",
             "--tick-ms", "20", "--events-db", str(db), "--event-delivery", request.param],
            stderr=stderr, stdout=subprocess.DEVNULL, env=env,
        )
    try:
        deadline = time.monotonic() + 30
        match = None
        while match is None and time.monotonic() < deadline and proc.poll() is None:
            match = re.search(r"RCON on 127\.0\.0\.1:(\d+)", log.read_text())
            time.sleep(0.05)
        assert match, log.read_text()
        yield proc, int(match.group(1)), db
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_answers_a_standard_rcon_client_and_stops_cleanly(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc, port, db = server
    time.sleep(0.5)
    with Client("127.0.0.1", port, passwd=PASSWORD, timeout=5) as client:
        assert "events.snapshot" in client.run("help")
        assert client.run("scripts").startswith("watcher running")
        assert "- tick: " in client.run("events")
        assert client.run("listeners") == "watcher event tick 1"
        ticks = json.loads(client.run("shared.dump", "watcher"))["ticks"]
        assert ticks > 0
        assert client.run("script.stop", "watcher") == "stopped watcher (stopped)"
        assert client.run("script.start", "watcher") == "started watcher"
        assert client.run("events.get", "nope") == "[]"
        assert client.run("events", "x").startswith("error: ")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    out = subprocess.run(
        [sys.executable, "-m", "moonbus", "events", "--db", str(db), "--type", "watcher_stopped"],
        capture_output=True, text=True, check=True,
    )
    stopped = json.loads(out.stdout)
    assert len(stopped) == 2  # once for script.stop, once at SIGTERM: on_stop ran both times
    assert stopped[-1]["source"] == "script:watcher"


def test_serve_refuses_to_start_without_a_password(tmp_path: Path) -> None:
    script = tmp_path / "s.lua"
    script.write_text("function poll() end")
    env = {k: v for k, v in os.environ.items() if k != "MOONBUS_RCON_PASSWORD"}
    result = subprocess.run([sys.executable, "-m", "moonbus", "serve", str(script)],
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2
    assert "RCON password is required" in result.stderr
