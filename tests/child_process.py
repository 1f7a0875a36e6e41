"""Run a Python snippet in a child process, with this tree's ``src`` first on
its path and a timeout: for attacks whose failure is a hang (a deadlock on
the GIL) or an abort of the whole process (Lua's panic), which would take the
test run down with them if they ran in it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def run_child(code: str, *args: str, timeout: float,
              hung: str = "the host hung (deadlock on the GIL)"
              ) -> subprocess.CompletedProcess[str]:
    """``python -c code args...``; fails the test with ``hung`` on a timeout."""
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    try:
        return subprocess.run([sys.executable, "-c", code, *args], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(hung)
