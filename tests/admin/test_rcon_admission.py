"""The RCON connection caps, sans-IO, with made-up addresses."""

from __future__ import annotations

import pytest

from moonbus.admin.rcon_admission import Admission
from moonbus.errors import ConfigError


def test_one_address_keeps_at_most_its_cap_of_connections_not_logged_in() -> None:
    caps: Admission[str] = Admission(max_connections=100, per_address=3)
    for n in range(3):
        assert caps.admit(f"a{n}", "10.0.0.1").evicted == []
    decision = caps.admit("a3", "10.0.0.1")
    assert decision.admitted and decision.evicted == [("a0", "per_address")]
    assert caps.unauthenticated("10.0.0.1") == 3
    # another address is not touched
    assert caps.admit("b0", "10.0.0.2").evicted == []
    assert caps.unauthenticated("10.0.0.2") == 1


def test_logged_in_connections_do_not_count_against_the_address_cap() -> None:
    caps: Admission[str] = Admission(max_connections=100, per_address=1)
    caps.admit("admin", "10.0.0.1")
    caps.logged_in("admin")
    assert caps.admit("second-admin", "10.0.0.1").evicted == []
    caps.logged_in("second-admin")
    assert caps.admit("third", "10.0.0.1").evicted == []
    assert len(caps) == 3


def test_a_full_server_evicts_the_oldest_not_logged_in_from_any_address() -> None:
    caps: Admission[str] = Admission(max_connections=3, per_address=8)
    caps.admit("admin", "10.0.0.9")
    caps.logged_in("admin")
    caps.admit("idle1", "10.0.0.1")
    caps.admit("idle2", "10.0.0.2")
    decision = caps.admit("newcomer", "10.0.0.3")
    assert decision.admitted and decision.evicted == [("idle1", "server_full")]
    assert len(caps) == 3


def test_refused_only_when_every_connection_is_logged_in() -> None:
    caps: Admission[str] = Admission(max_connections=2, per_address=8)
    for key in ("a", "b"):
        caps.admit(key, "10.0.0.1")
        caps.logged_in(key)
    decision = caps.admit("c", "10.0.0.2")
    assert not decision.admitted and decision.evicted == []
    caps.close("a")
    assert caps.admit("c", "10.0.0.2").admitted


def test_a_logged_out_connection_becomes_the_newest_not_logged_in() -> None:
    caps: Admission[str] = Admission(max_connections=2, per_address=8)
    caps.admit("x", "10.0.0.1")
    caps.admit("y", "10.0.0.1")
    caps.logged_in("x")
    caps.logged_out("x")  # a wrong password on an open connection
    assert caps.admit("z", "10.0.0.1").evicted == [("y", "server_full")]


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"max_connections": 0, "per_address": 1}, "max_connections"),
    ({"max_connections": 1, "per_address": 0}, "max_unauthenticated_per_address"),
])
def test_bad_caps_are_refused(kwargs: dict[str, int], name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} must be at least 1"):
        Admission(**kwargs)
