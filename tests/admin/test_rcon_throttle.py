"""The failed-login throttle, driven by a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from moonbus.admin.rcon_server import RconServer
from moonbus.admin.rcon_session import Session
from moonbus.admin.rcon_throttle import LoginThrottle, throttle_key
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
    """One failed attempt on one connection: waits for a place, is checked, serves
    its penalty. Returns the total time it took."""
    began = clock.now
    while (wait := throttle.wait_before_check(address)) > 0:
        clock.advance(wait)
    clock.advance(throttle.record_failure(address))
    return clock.now - began


def test_the_penalty_doubles_per_failure_up_to_the_cap() -> None:
    clock = FakeClock()
    throttle = make(clock)
    penalties = [fail(throttle, clock, "10.0.0.1") for _ in range(7)]
    assert penalties == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert throttle.failures("10.0.0.1") == 7


def test_addresses_are_counted_separately() -> None:
    clock = FakeClock()
    throttle = make(clock, burst=1)
    throttle.record_failure("10.0.0.1")
    assert throttle.wait_before_check("10.0.0.1") == 1.0
    assert throttle.wait_before_check("10.0.0.2") == 0.0
    assert throttle.failures("10.0.0.2") == 0


def test_success_resets_the_address() -> None:
    clock = FakeClock()
    throttle = make(clock, burst=1)
    for _ in range(4):
        throttle.record_failure("10.0.0.1")
    throttle.record_success("10.0.0.1")
    assert throttle.failures("10.0.0.1") == 0
    assert throttle.wait_before_check("10.0.0.1") == 0.0


def test_a_check_waits_only_when_the_burst_is_serving_penalties() -> None:
    clock = FakeClock()
    throttle = make(clock, burst=3)
    assert [throttle.record_failure("a") for _ in range(3)] == [1.0, 2.0, 4.0]
    # three penalties running: the next attempt waits for the earliest to end
    assert throttle.wait_before_check("a") == 1.0
    clock.advance(1.0)
    assert throttle.wait_before_check("a") == 0.0


def test_sixty_parallel_failures_never_queue_a_later_attempt() -> None:
    """The bug this design replaced: parallel failures booked check slots one after
    another, so a correct login from the same address waited minutes."""
    clock = FakeClock()
    throttle = make(clock, burst=4)
    waits = []
    for _ in range(60):  # 60 attempts arriving together, each checked when allowed
        wait = throttle.wait_before_check("a")
        waits.append(wait)
        if wait == 0:
            throttle.record_failure("a")
    assert max(waits) <= 8.0  # never more than max_delay
    assert waits.count(0.0) == 4  # only the burst was checked at once
    # a later attempt (the operator) waits at most max_delay, however many failed
    assert 0 < throttle.wait_before_check("a") <= 8.0
    clock.advance(8.0)
    assert throttle.wait_before_check("a") == 0.0


def test_guess_rate_is_bounded_by_burst_per_penalty() -> None:
    clock = FakeClock()
    throttle = make(clock, burst=2)
    checked = 0
    start = clock.now
    while clock.now - start < 80.0:
        wait = throttle.wait_before_check("a")
        if wait > 0:
            clock.advance(wait)
            continue
        throttle.record_failure("a")
        checked += 1
    # after the ramp-up (1+2+4 s), two guesses per 8 s
    assert checked <= 2 * 80 / 8 + 4


def test_a_quiet_address_is_forgotten() -> None:
    clock = FakeClock()
    throttle = make(clock)
    for _ in range(5):
        fail(throttle, clock, "a")
    clock.advance(100.5)
    assert throttle.failures("a") == 0
    assert throttle.wait_before_check("a") == 0.0


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
        ({"burst": 0}, "auth failure burst must be an integer >= 1"),
        ({"max_delay": float("inf")}, "auth failure delay"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LoginThrottle(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("address", "prefix", "bucket"),
    [
        ("203.0.113.7", 64, "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::9", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::9", 128, "2001:db8:1:2:ffff::9/128"),
        ("2001:db8:1:2:ffff::9", 48, "2001:db8:1::/48"),
        ("::ffff:203.0.113.7", 64, "203.0.113.7"),
        ("fe80::1%eth0", 64, "fe80::/64"),
        ("unknown", 64, "unknown"),
    ],
)
def test_throttle_key_groups_ipv6_by_network(address: str, prefix: int, bucket: str) -> None:
    assert throttle_key(address, prefix) == bucket


class _PeerWriter:
    """Just enough of a StreamWriter for a Session to read its peer."""

    def __init__(self, address: str) -> None:
        self._address = address

    def get_extra_info(self, name: str) -> Any:
        return (self._address, 40000, 0, 0) if name == "peername" else None


def test_rcon_sessions_of_one_ipv6_network_share_a_throttle_bucket() -> None:
    """An attacker with a /64 must not get a fresh guess budget per address: the
    login throttle and the per-address admission cap count by the network."""
    server = RconServer(str, password="x", auth_ipv6_prefix=64)

    async def buckets() -> tuple[str, str, str]:
        task = asyncio.current_task()
        assert task is not None
        made = [Session(server, asyncio.StreamReader(), _PeerWriter(a), task)  # type: ignore[arg-type]
                for a in ("2001:db8::1", "2001:db8::ffff:2", "2001:db8:0:1::1")]
        assert made[0].address == "2001:db8::1"  # logs still name the address itself
        return made[0].bucket, made[1].bucket, made[2].bucket

    first, second, other = asyncio.run(buckets())
    assert first == second == "2001:db8::/64"
    assert other == "2001:db8:0:1::/64"
