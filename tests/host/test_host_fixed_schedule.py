"""Stepped mode keeps poll deadlines on a fixed schedule (SPEC §10): no drift.

A game loop at 60 fps calls ``run_due`` once per frame with the frame's time;
a poll that returns 100 must run on every 6th frame, for ever, however the
host computes its frame times (``k / 60``, ``k * (1/60)`` or a running sum,
each inexact in binary).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from moonbus.lua.exposure import lua_api
from moonbus.runtime import Runtime

FRAMES = 10_000


@lua_api
class _Frames:
    """Records the frame number at each poll (called on the stepping thread)."""

    def __init__(self) -> None:
        self.current = 0
        self.hits: list[int] = []

    def mark(self) -> None:
        self.hits.append(self.current)


def _by_division(k: int, _prev: float) -> float:
    return k / 60


def _by_product(k: int, _prev: float) -> float:
    return k * (1 / 60)


def _by_sum(k: int, prev: float) -> float:
    return 0.0 if k == 0 else prev + 1 / 60


@pytest.mark.parametrize("frame_time", [_by_division, _by_product, _by_sum],
                         ids=["k/60", "k*(1/60)", "running-sum"])
@pytest.mark.parametrize(("delay_ms", "every"), [(100, 6), (50, 3), (1000, 60)])
def test_polls_hit_every_nth_frame_for_10000_frames(
    tmp_path: Path, frame_time: Callable[[int, float], float], delay_ms: int, every: int
) -> None:
    now = [0.0]
    frames = _Frames()
    with Runtime(threaded=False, clock=lambda: now[0]) as rt:
        rt.register_api("frames", frames)
        script = tmp_path / "poller.lua"
        script.write_text(f"function poll() frames:mark() return {delay_ms} end\n", "utf-8")
        host = rt.load(script)
        host.start()
        t = 0.0
        for k in range(FRAMES):
            t = frame_time(k, t)
            now[0] = t
            frames.current = k
            rt.run_due(t)
        assert host.status == "running"
    expected = list(range(0, FRAMES, every))
    assert frames.hits == expected


def test_fractional_delay_keeps_its_average_rate(tmp_path: Path) -> None:
    """40 ms at 60 fps is 2.4 frames: polls land on the first frame at or after
    each 40 ms deadline (frames 0, 3, 5, 8, 10, 12...), 250 polls in 600 frames,
    instead of drifting to one poll every 3 frames (200)."""
    now = [0.0]
    frames = _Frames()
    with Runtime(threaded=False, clock=lambda: now[0]) as rt:
        rt.register_api("frames", frames)
        script = tmp_path / "poller.lua"
        script.write_text("function poll() frames:mark() return 40 end\n", "utf-8")
        rt.load(script).start()
        for k in range(600):
            now[0] = k / 60
            frames.current = k
            rt.run_due(now[0])
    assert len(frames.hits) == 250
    assert frames.hits[:6] == [0, 3, 5, 8, 10, 12]


def test_a_poll_that_falls_behind_does_not_burst(tmp_path: Path) -> None:
    """A host that stalls for a second does not get ten catch-up polls: the next
    poll counts its delay from when the late one ran."""
    now = [0.0]
    frames = _Frames()
    with Runtime(threaded=False, clock=lambda: now[0]) as rt:
        rt.register_api("frames", frames)
        script = tmp_path / "poller.lua"
        script.write_text("function poll() frames:mark() return 100 end\n", "utf-8")
        rt.load(script).start()
        times = [k / 60 for k in range(13)] + [2.0 + k / 60 for k in range(13)]
        for k, t in enumerate(times):
            now[0] = t
            frames.current = k
            rt.run_due(t)
    # frames 0, 6, 12 on schedule; the stall; then 13 (late), 19, 25: a new schedule
    assert frames.hits == [0, 6, 12, 13, 19, 25]


def test_a_poll_that_sleeps_counts_its_delay_from_its_end(tmp_path: Path) -> None:
    now = [0.0]
    frames = _Frames()
    with Runtime(threaded=False, clock=lambda: now[0]) as rt:
        rt.register_api("frames", frames)
        script = tmp_path / "poller.lua"
        script.write_text("function poll() frames:mark() sleep(50) return 100 end\n", "utf-8")
        rt.load(script).start()
        for k in range(40):
            now[0] = k / 60
            frames.current = k
            rt.run_due(now[0])
    # each round: 3 frames asleep + 6 frames of delay
    assert frames.hits == [0, 9, 18, 27, 36]
