"""`moonbus serve --http` as an operator runs it: a real process, the printed link, SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from moonbus.admin.rcon_client import RconClient
from moonbus.cli.http_option import parse_host_port
from moonbus.errors import AdminError, ConfigError

WATCHER = ('events:on("tick", function(e) shared:int("ticks"):increment() end)\n'
           "function poll() return 100 end\n")


def _serve(tmp_path: Path, *args: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], Path]:
    script = tmp_path / "watcher.lua"
    script.write_text(WATCHER)
    log = tmp_path / "serve.log"
    with open(log, "w") as stderr:  # a file, not a pipe: the server can never block on it
        proc = subprocess.Popen(
            [sys.executable, "-m", "moonbus", "serve", str(script), "--tick-ms", "20",
             "--events-db", str(tmp_path / "events.db"), *args],
            stderr=stderr, stdout=subprocess.DEVNULL, env=env, text=True)
    return proc, log


def _wait_for(log: Path, proc: subprocess.Popen[str], pattern: str) -> re.Match[str]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(pattern, log.read_text())
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in: {log.read_text()}")


@pytest.fixture
def clean_env() -> Iterator[dict[str, str]]:
    yield {k: v for k, v in os.environ.items()
           if k not in ("MOONBUS_RCON_PASSWORD", "MOONBUS_HTTP_TOKEN")}


def test_serve_http_only_prints_the_link_and_serves_the_api(tmp_path: Path,
                                                           clean_env: dict[str, str]) -> None:
    proc, log = _serve(tmp_path, "--http", "127.0.0.1:0", env=clean_env)
    try:
        link = _wait_for(log, proc, r"HTTP console on (http://127\.0\.0\.1:(\d+))/#token=(\S+)")
        url, token = link.group(1), link.group(3)
        assert "RCON off (no password)" in _wait_for(log, proc, r"RCON off \(no password\)")[0]
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, timeout=10) as c:
            deadline = time.monotonic() + 20
            while c.get("/api/scripts", headers=auth).json()["scripts"][0]["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert c.get("/api/scripts").status_code == 401
            assert c.post("/api/scripts/watcher/stop", headers=auth).json()["status"] == "stopped"
            assert c.post("/api/scripts/watcher/start", headers=auth).status_code == 200
            # the world ticks every 20 ms; on a loaded machine five may not be logged yet
            while len(c.get("/api/events", params={"type": "tick", "limit": 5},
                            headers=auth).json()["events"]) < 5:
                assert time.monotonic() < deadline, "fewer than 5 ticks logged in 20 s"
                time.sleep(0.05)
            ticks = c.get("/api/events", params={"type": "tick", "limit": 5}, headers=auth)
            assert [e["seq"] for e in ticks.json()["events"]] == sorted(
                e["seq"] for e in ticks.json()["events"])
            assert len(ticks.json()["events"]) == 5
        assert log.read_text().count(token) == 1  # printed once, never logged again
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_http_with_a_token_from_the_environment_does_not_print_it(
        tmp_path: Path, clean_env: dict[str, str]) -> None:
    env = {**clean_env, "MOONBUS_HTTP_TOKEN": "operator-chosen-token", "MOONBUS_RCON_PASSWORD":
           "rcon-secret"}
    proc, log = _serve(tmp_path, "--http", ":0", "--rcon-port", "0", env=env)
    try:
        found = _wait_for(log, proc, r"HTTP console on (http://127\.0\.0\.1:\d+)/ ")
        assert re.search(r"RCON on 127\.0\.0\.1:\d+", log.read_text())
        r = httpx.get(f"{found.group(1)}/api/settings", timeout=10,
                      headers={"Authorization": "Bearer operator-chosen-token"})
        assert r.status_code == 200
        assert "operator-chosen-token" not in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_serve_reports_rcon_logins_in_metrics(tmp_path: Path, clean_env: dict[str, str]) -> None:
    env = {**clean_env, "MOONBUS_HTTP_TOKEN": "operator-chosen-token",
           "MOONBUS_RCON_PASSWORD": "rcon-secret"}
    proc, log = _serve(tmp_path, "--http", ":0", "--rcon-port", "0", env=env)
    try:
        base = _wait_for(log, proc, r"HTTP console on (http://127\.0\.0\.1:\d+)/ ").group(1)
        port = int(_wait_for(log, proc, r"RCON on 127\.0\.0\.1:(\d+)").group(1))
        with pytest.raises(AdminError), RconClient("127.0.0.1", port, "wrong-password") as bad:
            bad.command("scripts")
        with RconClient("127.0.0.1", port, "rcon-secret") as good:
            assert "watcher" in good.command("scripts")
        text = httpx.get(f"{base}/metrics", timeout=10,
                         headers={"Authorization": "Bearer operator-chosen-token"}).text
        logins = {(s.labels["frontend"], s.labels["outcome"]): s.value
                  for family in text_string_to_metric_families(text)
                  if family.name == "moonbus_logins" for s in family.samples}
        assert logins[("rcon", "refused")] == 1
        assert logins[("rcon", "accepted")] == 1
        assert logins[("http", "accepted")] >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_serve_without_password_nor_http_is_refused(tmp_path: Path,
                                                    clean_env: dict[str, str]) -> None:
    script = tmp_path / "s.lua"
    script.write_text("function poll() end")
    result = subprocess.run([sys.executable, "-m", "moonbus", "serve", str(script)],
                            capture_output=True, text=True, env=clean_env, timeout=30)
    assert result.returncode == 2
    assert "or serve over HTTP only with --http HOST:PORT" in result.stderr
    for bad, message in (("nope", "wants HOST:PORT"), ("1.2.3.4:99999", "0..65535"),
                         ("::1:80", "brackets")):
        result = subprocess.run([sys.executable, "-m", "moonbus", "serve", str(script),
                                 "--http", bad, "--events-db", str(tmp_path / "e.db")],
                                capture_output=True, text=True, env=clean_env, timeout=30)
        assert result.returncode == 2, bad
        assert message in result.stderr, (bad, result.stderr)
    result = subprocess.run([sys.executable, "-m", "moonbus", "serve", str(script), "--http",
                             ":0", "--http-token", "short", "--events-db",
                             str(tmp_path / "e.db")],
                            capture_output=True, text=True, env=clean_env, timeout=30)
    assert result.returncode == 2
    assert "8 to 512 characters" in result.stderr


def test_parse_host_port() -> None:
    assert parse_host_port("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_host_port(":0") == ("127.0.0.1", 0)
    assert parse_host_port("[::1]:8080") == ("::1", 8080)
    assert parse_host_port("localhost:1") == ("localhost", 1)
    for bad in ("8080", "host:", "host:x", "host:-1"):
        with pytest.raises(ConfigError):
            parse_host_port(bad)
