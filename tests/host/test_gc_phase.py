"""Script states loaded together do not collect their garbage in step.

Every handler script makes the same garbage per event (its event table);
with one generational multiplier and the full collection after loading,
all of them reached their next young collection in the same tick: 10,000
scripts made a 300-500 ms tick every ~160 ticks. Each script engine now
makes a different share of garbage right after that collection
(``moonbus.lua.sandbox.gc_phase``), so their collections spread over the
period.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from moonbus.host import engine_side
from moonbus.lua.sandbox import GC_MINOR_MULTIPLIERS, gc_minor_multiplier, gc_phase
from moonbus.runtime import Runtime

# timed handlers and priced deliveries (conftest): no collector pass mid-test
pytestmark = pytest.mark.usefixtures("quiet_collector")

HANDLER = 'events:on("tick", function(e) shared:int("ticks"):increment() end)\n'


def test_phases_cover_the_period_evenly() -> None:
    # each engine's share, as a fraction of the growth that starts its next
    # young collection (its minor multiplier, less 5 %)
    fractions = [gc_phase(i) / (0.95 * gc_minor_multiplier(i) / 100) for i in range(1, 1001)]
    assert all(0 <= f < 1 for f in fractions)
    deciles = Counter(int(f * 10) for f in fractions)
    assert sorted(deciles) == list(range(10))
    assert max(deciles.values()) <= 110  # ~100 each
    assert {gc_minor_multiplier(i) for i in range(3)} == set(GC_MINOR_MULTIPLIERS)


def _collections_per_tick(tmp_path: Path, scripts: int, ticks: int) -> list[int]:
    """How many of ``scripts`` handler scripts' states collected in each tick
    (their Lua memory dropped), after the first few ticks' warm-up."""
    tmp_path.mkdir()
    path = tmp_path / "handler.lua"
    path.write_text(HANDLER, encoding="utf-8")
    with Runtime(threaded=False, clock=lambda: 0.0) as rt:
        hosts = [rt.load(path) for _ in range(scripts)]
        for host in hosts:
            host.start()
        states = [host._event.engine._rt for host in hosts]  # each script's event engine
        before = [s.get_memory_used() for s in states]
        per_tick = []
        for tick in range(1, ticks + 1):
            rt.bus.emit("tick", {"tick": tick}, tick=tick)
            now = [s.get_memory_used() for s in states]
            per_tick.append(sum(1 for a, b in zip(before, now, strict=True) if b < a))
            before = now
        assert sum(h.shared.int("ticks").get() for h in hosts) == scripts * ticks
    return per_tick[5:]


def test_scripts_loaded_together_collect_in_different_ticks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = 200
    spread = _collections_per_tick(tmp_path / "spread", scripts, 150)
    assert sum(spread) >= scripts  # every state collected at least once
    # a period of ~50 ticks holds a few collections each
    assert max(spread) <= scripts // 5, spread
    # without the phases, the states that share a multiplier (a third of
    # them) collect in the same tick
    monkeypatch.setattr(engine_side, "gc_phase", lambda index: 0.0)
    in_step = _collections_per_tick(tmp_path / "in_step", scripts, 150)
    assert max(in_step) >= scripts // 4, in_step
