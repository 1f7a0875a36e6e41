"""Run store code in a child process and kill it with SIGKILL at a chosen point.

The kill -9 tests of the SQLite store (journal recovery, symlinked paths,
journal faults) all need the same dance: start ``python -c code`` against this
checkout's sources, read what the child acknowledged, SIGKILL it while it still
holds the store open (it blocks on stdin), and always reap it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

import moonbus

T = TypeVar("T")


def run_then_kill(code: str, *args: str, read: Callable[[IO[str]], T]) -> T:
    """Run ``code`` with ``args`` in a child, return ``read(child's stdout)``
    once it returns, then kill the child with SIGKILL (it never closes its store)."""
    src = Path(moonbus.__file__).resolve().parents[1]
    child = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                             stdin=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(src)})
    assert child.stdout is not None and child.stdin is not None
    try:
        result = read(child.stdout)
        os.kill(child.pid, signal.SIGKILL)
        return result
    finally:
        child.kill()
        child.wait(10)
        child.stdout.close()
        child.stdin.close()


def said_done(stdout: IO[str]) -> None:
    """``read`` for a child that prints ``done`` once everything is appended."""
    assert stdout.readline() == "done\n"
