"""Two OS processes incrementing one shared int on Redis lose nothing.

Through the Python API for now; the same test through Lua scripts belongs with
the script host.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from moonbus.shared import SharedStore
from tests.shared.redis_support import REDIS_URL, delete_prefix, redis_or_skip, unique_prefix

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SRC = Path(__file__).resolve().parents[2] / "src"

WORKER = """
import sys
from moonbus.shared import SharedStore

url, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with SharedStore.from_url(url, prefix=prefix) as store:
    counter = store.int("hits")
    table = store.table("per_process")
    for _ in range(count):
        counter.increment()
    table.increment("done", count)
"""


def test_two_processes_increment_one_int_exactly() -> None:
    redis_or_skip()
    prefix = unique_prefix()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    try:
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, REDIS_URL, prefix, "10000"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        for worker in workers:
            _, err = worker.communicate(timeout=110)
            assert worker.returncode == 0, err.decode()
        with SharedStore.from_url(REDIS_URL, prefix=prefix) as store:
            assert store.int("hits").get() == 20_000
            assert store.table("per_process").get("done") == 20_000
    finally:
        delete_prefix(prefix)
