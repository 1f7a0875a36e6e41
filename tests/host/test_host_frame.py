"""``Runtime.frame``: one call per game frame drives a stepped runtime (SPEC §10)."""

from __future__ import annotations

import pytest

from moonbus import ConfigError, Runtime

POLLER = """
events:on("tick", function(e)
  shared:int("last_tick"):set(e.tick)
  shared:string("hp"):set(tostring(e.hp))
end)
function poll()
  shared:table("polls"):set(tostring(shared:int("n"):increment()), time())
  return 100
end
"""


class FrameClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_100_ms_poll_runs_every_6th_frame_of_a_60_fps_loop_for_ever() -> None:
    clock = FrameClock()
    with Runtime(threaded=False, clock=clock) as rt:
        h = rt.load("poller.lua", text=POLLER)
        h.start()
        for frame in range(10_000):
            clock.now = frame / 60
            rt.frame(frame, {"hp": 7})
        polls = h.shared.table("polls").to_table()
        ticks = [polls[str(i)] for i in range(1, len(polls) + 1)]
        # the first poll ran at start (tick unset); then every 6th frame, no drift
        assert ticks[1:] == list(range(6, 10_000, 6))[: len(ticks) - 1]
        assert len(ticks) - 1 == len(range(6, 10_000, 6))
        assert h.shared.int("last_tick").get() == 9_999  # handlers ran inside frame()
        assert h.shared.string("hp").get() == "7"        # the frame's data reached them
        assert rt.tick == 9_999


def test_frame_refuses_a_threaded_runtime() -> None:
    with Runtime(threaded=True, workers=1) as rt, pytest.raises(ConfigError, match="stepped"):
        rt.frame(1)
