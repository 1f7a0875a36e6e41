"""The failed-login throttle, driven by a fake clock."""

from __future__ import annotations

import pytest

from moonbus.admin.rcon_throttle import LoginThrottle
from moonbus.errors import ConfigError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(clock: FakeClock, **kwargs: float) -> LoginThrottle:
    options = {"base_delay": 1.0, "max_delay": 8.0, "forget_after": 100.0, **kwargs}
    return LoginThrottle(clock=clock, **options)  # type: ignore[arg-type]


def fail(throttle: LoginThrottle, clock: FakeClock, address: str) -> float:
    """One failed attempt that waits its turn; returns the wait it was given."""
    wait = throttle.reserve(address)
    clock.advance(wait)
    throttle.record_failure(address)
    return wait


def test_the_delay_doubles_per_failure_up_to_the_cap() -> None:
    clock = FakeClock()
    throttle = make(clock)
    waits = [fail(throttle, clock, "10.0.0.1") for _ in range(7)]
    assert waits == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert throttle.failures("10.0.0.1") == 7


def test_addresses_are_counted_separately() -> None:
    clock = FakeClock()
    throttle = make(clock)
    for _ in range(3):
        fail(throttle, clock, "10.0.0.1")
    assert throttle.reserve("10.0.0.2") == 0.0
    assert throttle.reserve("10.0.0.1") == 4.0


def test_success_resets_the_address() -> None:
    clock = FakeClock()
    throttle = make(clock)
    for _ in range(4):
        fail(throttle, clock, "10.0.0.1")
    throttle.record_success("10.0.0.1")
    assert throttle.failures("10.0.0.1") == 0
    assert throttle.reserve("10.0.0.1") == 0.0


def test_time_already_waited_counts() -> None:
    clock = FakeClock()
    throttle = make(clock)
    fail(throttle, clock, "a")
    fail(throttle, clock, "a")  # two failures: next attempt owes 2 s after the last slot
    clock.advance(1.5)
    assert throttle.reserve("a") == pytest.approx(0.5)


def test_parallel_attempts_queue_up() -> None:
    clock = FakeClock()
    throttle = make(clock)
    fail(throttle, clock, "a")
    fail(throttle, clock, "a")
    # three connections try at the same instant: each waits behind the one before
    assert [throttle.reserve("a") for _ in range(3)] == [2.0, 4.0, 6.0]


def test_a_quiet_address_is_forgotten() -> None:
    clock = FakeClock()
    throttle = make(clock)
    for _ in range(5):
        fail(throttle, clock, "a")
    clock.advance(100.5)
    assert throttle.failures("a") == 0
    assert throttle.reserve("a") == 0.0


def test_memory_is_bounded() -> None:
    clock = FakeClock()
    throttle = make(clock, max_tracked=3)
    for n in range(10):
        fail(throttle, clock, f"10.0.0.{n}")
    assert throttle.tracked() == 3
    assert throttle.failures("10.0.0.9") == 1
    assert throttle.failures("10.0.0.0") == 0


def test_stale_entries_are_pruned_when_others_fail() -> None:
    clock = FakeClock()
    throttle = make(clock)
    fail(throttle, clock, "old")
    clock.advance(150)
    fail(throttle, clock, "new")
    assert throttle.tracked() == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_delay": -1.0}, "auth failure delay"),
        ({"base_delay": 5.0, "max_delay": 1.0}, "auth failure delay"),
        ({"forget_after": 0.0}, "forget_after must be positive"),
        ({"max_tracked": 0}, "max_tracked must be at least 1"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LoginThrottle(**kwargs)  # type: ignore[arg-type]
