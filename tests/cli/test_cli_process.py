"""The real program in a child process: ``python -m moonbus``, exit codes, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import moonbus

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SRC = Path(moonbus.__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), path) if p)}


def _moonbus(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moonbus", *map(str, args)],
        cwd=cwd, env=_env(), capture_output=True, text=True, timeout=60, check=False,
    )


def test_python_dash_m_runs_an_example(tmp_path: Path) -> None:
    done = _moonbus("run", EXAMPLES / "mining.lua", "--ticks", "60", "--tick-ms", "0",
                    "--summary", "out.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["ticks"] == 60
    assert summary["scripts"]["mining"]["status"] == "running"
    assert "moonbus run: 60 ticks" in done.stdout
    assert "mining/main info: Moonbus starts mining" in done.stderr


def test_python_dash_m_reports_a_syntax_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.lua"
    bad.write_text("function poll()\n  return 1 +\nend\n")
    done = _moonbus("run", "bad.lua", "--ticks", "5", "--tick-ms", "0", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "bad.lua:3: unexpected symbol near 'end'\n"
    checked = _moonbus("check", "bad.lua", cwd=tmp_path)
    assert checked.returncode == 2
    assert checked.stdout == "bad.lua:3: unexpected symbol near 'end'\n"


def test_ctrl_c_stops_the_scripts_cleanly(tmp_path: Path) -> None:
    script = tmp_path / "counter.lua"
    script.write_text(
        'function on_start() logger.info("started") end\n'
        'function poll() shared:int("polls"):increment() return 20 end\n'
        'function on_stop() logger.info("on_stop ran") end\n'
    )
    logs = tmp_path / "log.ndjson"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moonbus", "run", "counter.lua", "--tick-ms", "20",
         "--log-json", str(logs), "--summary", "out.json"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if logs.exists() and "started" in logs.read_text():
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the script never started")
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "interrupted at tick" in stderr
    assert "Traceback" not in stderr
    lines = [json.loads(line)["msg"] for line in logs.read_text().splitlines()]
    assert lines == ["started", "on_stop ran"]
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["ticks"] > 0
    assert summary["scripts"]["counter"]["status"] == "running"
    assert summary["scripts"]["counter"]["shared"]["polls"] > 0
    assert "moonbus run:" in stdout
