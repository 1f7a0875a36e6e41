"""examples/npc_runner.py: the demo world's NPCs decided by the runner, applied at the barrier."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "npc_runner.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("npc_runner_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _distance(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(abs(a[0] - b[0]), abs(a[1] - b[1]))


def test_decisions_are_applied_every_tick(example: ModuleType) -> None:
    summary = example.simulate(8, workers=2)
    npcs = len(summary["start"])
    assert npcs == 10
    assert summary["applied"] == 8 * npcs
    stats = summary["statistics"]
    assert (stats.done, stats.failed, stats.states) == (8 * npcs, 0, npcs)
    assert summary["moved"] > 0
    player = (20, 20)
    for name, start in summary["start"].items():
        end = summary["end"][name]
        if name.startswith("Goblin"):  # close and aggressive: they close in
            assert _distance(end, player) < _distance(start, player)
            assert summary["moods"][int(name.split("#")[1])] == "hunting"
        else:  # the others stay near home
            assert _distance(end, start) <= 3


def test_same_seed_same_world_whatever_the_worker_count(example: ModuleType) -> None:
    assert example.simulate(6, workers=1)["end"] == example.simulate(6, workers=2)["end"]


def test_main_prints_a_summary(example: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert example.main(["--ticks", "3"]) == 0
    out = capsys.readouterr().out
    assert "tick   3: 10 decisions applied" in out
    assert "30 decisions applied" in out
