"""`moonbus serve --app`: the grid game served as an operator runs it (a real
process started from the repository root, a standard RCON client, SIGTERM)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from rcon.source import Client

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "grid-secret"


def test_serve_runs_the_grid_game_and_answers_rcon(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    env = {**os.environ, "MOONBUS_RCON_PASSWORD": PASSWORD}
    with open(log, "w") as stderr:  # a file, not a pipe: the server never blocks on it
        proc = subprocess.Popen(
            [sys.executable, "-m", "moonbus", "serve", "--app", "examples.grid_game:app",
             "examples/grid/collector.lua", "examples/grid/watcher.lua", "--rcon-port", "0",
             "--tick-ms", "20", "--events-db", str(tmp_path / "events.db")],
            cwd=ROOT, stderr=stderr, stdout=subprocess.DEVNULL, env=env,
        )
    try:
        deadline = time.monotonic() + 30
        match = None
        while match is None and time.monotonic() < deadline and proc.poll() is None:
            match = re.search(r"RCON on 127\.0\.0\.1:(\d+)", log.read_text())
            time.sleep(0.05)
        assert match, log.read_text()
        assert "moonbus serve: grid game, 2 script(s)" in log.read_text()
        with Client("127.0.0.1", int(match.group(1)), passwd=PASSWORD, timeout=5) as client:
            listing = client.run("scripts")
            assert "collector running" in listing and "watcher running" in listing, listing
            spawned = 0
            end = time.monotonic() + 10
            while spawned == 0 and time.monotonic() < end:  # a gem every 5 ticks of 20 ms
                spawned = json.loads(client.run("shared.dump", "watcher")).get("spawned", 0)
                time.sleep(0.1)
            assert spawned > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
