"""Retention arithmetic and the amortized prune schedule (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moonbus.errors import ConfigError
from moonbus.store.base import StoreSettings
from moonbus.store.retention import PruneSchedule, PruneStep, plan_prune, tick_cutoff


def test_tick_cutoff_keeps_ticks_after_newest_minus_retention() -> None:
    assert tick_cutoff(100, 36) == 64  # delete tick <= 64, keep 65..100
    assert tick_cutoff(None, 36) is None
    assert tick_cutoff(100, None) is None
    assert tick_cutoff(5, 0) == 5


@given(
    newest=st.integers(-1000, 1000),
    retention=st.integers(0, 500),
    tick=st.integers(-2000, 2000),
)
def test_cutoff_matches_the_keep_rule(newest: int, retention: int, tick: int) -> None:
    cutoff = tick_cutoff(newest, retention)
    assert cutoff is not None
    kept = tick > newest - retention
    assert kept == (tick > cutoff)


def test_plan_uses_per_type_overrides_in_type_order() -> None:
    settings = StoreSettings(
        retention_ticks=100,
        retention_count=None,
        per_type={"chat": {"count": 50}, "tick": {"ticks": None}},
    )
    steps = plan_prune(settings, ["tick", "chat", "move", "chat"], newest_tick=1000)
    assert steps == [PruneStep("chat", 900, 50), PruneStep("move", 900, None)]
    assert plan_prune(settings, ["move"], newest_tick=None) == []
    settings.update(retention_ticks=None, retention_count=3)
    assert plan_prune(settings, ["move"], newest_tick=None) == [PruneStep("move", None, 3)]


def test_schedule_by_count_and_by_tick() -> None:
    schedule = PruneSchedule(every=10, tick_step=5)
    assert not schedule.due(9, 100)
    schedule.note(9, 100)
    assert schedule.due(1, 100)
    assert not schedule.due(0, 104)
    assert schedule.due(0, 105)
    schedule.done(105)
    assert not schedule.due(9, 109)
    assert schedule.due(10, None)


def test_schedule_without_ticks_counts_only() -> None:
    schedule = PruneSchedule(every=3, tick_step=1)
    schedule.note(2, None)
    assert not schedule.due(0, None)
    assert schedule.due(1, None)


def test_schedule_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="prune_every"):
        PruneSchedule(every=0, tick_step=1)
    with pytest.raises(ConfigError, match="prune_tick_step"):
        PruneSchedule(every=1, tick_step=0)
