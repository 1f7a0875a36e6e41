"""kill -9 of a real process emitting through the default SQLite store (journal
mode), at random points, again and again on the same file: every event whose
``append`` returned is there after the next open, once, in order, with its own
data; at most the one append in flight when the kill came may be there too.

Why: the journal's promise is exactly this (``moonbus.store.sqlite_journal``),
and the in-process tests only simulate a death by closing the mapping.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import moonbus
from moonbus.store.base import StoreSettings
from moonbus.store.sqlite import SqliteEventStore

PADS = (0, 10, 300, 3000, 9000)  # data sizes, picked by seq (so the reader can check)

CHILD = """
import sys
from moonbus.bus.event import Event
from moonbus.store.base import StoreSettings
from moonbus.store.factory import open_event_store
PADS = __PADS__
store = open_event_store(sys.argv[1], settings=StoreSettings(retention_ticks=None))
seq = store.last_seq()
print("open", seq, flush=True)
while True:
    seq += 1
    pad = PADS[(seq * 2654435761) % len(PADS)]
    store.append(Event.create("t%d" % (seq % 7), {"n": seq, "pad": "x" * pad},
                              seq=seq, tick=seq // 5, ts=seq))
    print(seq, flush=True)
""".replace("__PADS__", repr(PADS))


def _session(url: str, acks: int) -> tuple[int, list[int]]:
    """Run one child until it acknowledged ``acks`` appends, kill -9 it; the
    last seq it found at open and every seq it acknowledged."""
    src = Path(moonbus.__file__).resolve().parents[1]
    child = subprocess.Popen([sys.executable, "-c", CHILD, url], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(src)})
    assert child.stdout is not None
    acked: list[int] = []
    try:
        first = child.stdout.readline().split()
        assert first and first[0] == "open", first
        while len(acked) < acks:
            line = child.stdout.readline()
            assert line, "the child died by itself"
            acked.append(int(line))
        os.kill(child.pid, signal.SIGKILL)
        acked += [int(line) for line in child.stdout]  # printed before the kill landed
    finally:
        child.kill()
        child.wait(30)
        child.stdout.close()
    return int(first[1]), acked


@pytest.mark.parametrize("options", ["", "?journal_bytes=65536"])
def test_kill_9_at_random_points_loses_and_repeats_nothing(tmp_path: Path, options: str) -> None:
    path = str(tmp_path / "events.db")
    url = f"sqlite:///{path}{options}"
    rnd = random.Random(f"kill-9 {options}")
    acked: list[int] = []
    in_flight: set[int] = set()
    for _ in range(8):
        found, seqs = _session(url, rnd.choice((1, 5, 50, 400, 1500)))
        assert found >= (acked[-1] if acked else 0)  # an acknowledged event came back
        acked += seqs
        in_flight.add(seqs[-1] + 1)
    with SqliteEventStore(path, mode="durable", settings=StoreSettings(retention_ticks=None)) \
            as store:
        events = store.query()
    stored = [e.seq for e in events]
    assert stored == sorted(set(stored)), "duplicated or reordered"
    lost = sorted(set(acked) - set(stored))
    assert not lost, f"acknowledged but lost: {lost[:10]}"
    assert set(stored) - set(acked) <= in_flight
    for e in events:
        assert e.data == {"n": e.seq, "pad": "x" * PADS[(e.seq * 2654435761) % len(PADS)]}
        assert e.type == f"t{e.seq % 7}"
