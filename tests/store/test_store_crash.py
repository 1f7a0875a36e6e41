"""kill -9 in the middle of appending: nothing acknowledged is lost, seq has no gap.

A child process appends events and prints each seq once ``append`` (durable,
journal) or ``flush`` (fast) has returned; the test SIGKILLs it mid-run, reopens the
file and checks every acknowledged event is there, in order, with no gap.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import moonbus
from moonbus.store.sqlite import SqliteEventStore

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

_CHILD = """
import sys
from moonbus.bus.event import Event
from moonbus.store.base import StoreSettings
from moonbus.store.sqlite import SqliteEventStore

path, mode = sys.argv[1], sys.argv[2]
store = SqliteEventStore(
    path, mode=None if mode == "default" else mode, batch_size=64,
    settings=StoreSettings(retention_ticks=None),
)
mode = store.mode
seq = store.last_seq()
print("start", seq, mode, flush=True)
while True:
    seq += 1
    store.append(Event.create("a" if seq % 2 else "b", {"n": seq, "pad": "x" * 200},
                              seq=seq, tick=seq // 3))
    if mode in ("durable", "journal"):
        print(seq, flush=True)
    elif seq % 50 == 0:
        store.flush()
        print(seq, flush=True)
"""


def _run_and_kill(path: Path, mode: str, acks_wanted: int) -> tuple[int, list[int]]:
    src = Path(moonbus.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(src)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), mode],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    try:
        first = child.stdout.readline().split()
        assert first[0] == "start", first
        start = int(first[1])
        assert first[2] == ("journal" if mode == "default" else mode), first
        acked: list[int] = []
        while len(acked) < acks_wanted:
            line = child.stdout.readline()
            assert line, "the child stopped before it was killed"
            acked.append(int(line))
        os.kill(child.pid, signal.SIGKILL)
        acked.extend(int(line) for line in child.stdout.read().split())  # already in the pipe
    finally:
        child.kill()
        child.wait(10)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return start, acked


@pytest.mark.parametrize(
    ("mode", "acks"),
    [
        ("durable", 300),
        # ~12,000 WAL frames: the checkpointer thread has copied the WAL into the
        # file many times, and may be in the middle of a checkpoint at the kill
        ("durable", 3000),
        ("fast", 20),
        # acknowledged once in the memory-mapped journal, committed in batches:
        # what the kill leaves in the journal is committed when the file is opened
        ("journal", 300),
        ("journal", 3000),
        # the default for a file is journal mode: the same promise without asking
        ("default", 300),
        ("default", 3000),
    ],
)
def test_kill_9_loses_nothing_acknowledged(tmp_path: Path, mode: str, acks: int) -> None:
    path = tmp_path / "crash.db"
    for round_ in range(2):  # the second round continues numbering after the crash
        start, acked = _run_and_kill(path, mode, acks_wanted=acks)
        assert acked == sorted(acked) and acked[0] > start
        with SqliteEventStore(str(path), create=False) as store:
            events = store.query()
            assert store.last_seq() == events[-1].seq
        seqs = [event.seq for event in events]
        assert seqs == list(range(1, len(seqs) + 1)), f"gap after round {round_}"
        assert seqs[-1] >= acked[-1]
        assert set(acked) <= set(seqs)
        assert all(event.data["n"] == event.seq for event in events)
