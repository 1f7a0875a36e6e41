"""Operators are never locked out (SPEC 4b): RCON logins under attack.

Real servers on ephemeral ports. Linux routes all of 127.0.0.0/8 to the
loopback, so binding a client socket to 127.0.0.2 gives a second address on
one machine: the attacker comes from there, the operator from 127.0.0.1.
Every wait in these tests is bounded; bounds are generous (a loaded CI box).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from moonbus.admin.rcon_client import RconClient
from moonbus.admin.rcon_codec import (
    SERVERDATA_AUTH,
    SERVERDATA_AUTH_RESPONSE,
    Packet,
    PacketDecoder,
    encode,
)
from moonbus.admin.rcon_server import RconServer

PASSWORD = "operator-pass"
ATTACKER = "127.0.0.2"


def _answer(command: str) -> str:
    return f"ok {command}"


@pytest.fixture
def make_server() -> Iterator[Callable[..., RconServer]]:
    servers: list[RconServer] = []

    def make(**kwargs: object) -> RconServer:
        server = RconServer(_answer, password=PASSWORD, port=0, **kwargs)  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def connect(server: RconServer, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(
        ("127.0.0.1", server.port), timeout=10, source_address=(source, 0)
    )


def wrong_login(server: RconServer, source: str) -> bytes:
    """One wrong-password attempt on a fresh connection; what the server sent back
    (b"" when it closed the connection first: evicted or timed out)."""
    with connect(server, source) as sock:
        sock.sendall(encode(Packet(7, SERVERDATA_AUTH, b"guess")))
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
                if len(received) >= 14:
                    break
        except OSError:
            pass
        return received


def operator_login_seconds(server: RconServer) -> float:
    """Time for the operator (127.0.0.1) to log in and run a command."""
    began = time.monotonic()
    with RconClient("127.0.0.1", server.port, PASSWORD, timeout=15) as client:
        assert client.command("status") == "ok status"
    return time.monotonic() - began


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_sixty_wrong_logins_and_64_idle_sockets_from_the_same_machine(
    make_server: Callable[..., RconServer],
) -> None:
    """The finding: these made a correct login from the same machine wait 2 minutes
    (parallel failures booked check slots one after another) or found the server
    full. Now the operator waits at most one penalty (max_delay), never a queue."""
    server = make_server(auth_failure_max_delay=2.0, auth_timeout=5.0)
    with ThreadPoolExecutor(60) as pool:
        attempts = [pool.submit(wrong_login, server, "127.0.0.1") for _ in range(60)]
        idle = [connect(server) for _ in range(64)]
        try:
            took = operator_login_seconds(server)
            assert took < 6.0, f"the operator waited {took:.1f} s"
        finally:
            for sock in idle:
                sock.close()
        for attempt in attempts:
            answer = attempt.result(timeout=15)  # every attempt ends by its auth timeout
            if answer:
                assert PacketDecoder(4096).feed(answer)[0].id == -1
    stats = server.statistics()
    assert stats.auth_successes == 1
    assert stats.auth_failures >= 1
    assert stats.connections_evicted_per_address > 0
    assert stats.connections_refused == 0


def test_failures_from_another_address_never_slow_the_operator(
    make_server: Callable[..., RconServer],
) -> None:
    server = make_server(auth_failure_delay=5.0, auth_failure_max_delay=10.0, auth_timeout=3.0)
    with ThreadPoolExecutor(30) as pool:
        attempts = [pool.submit(wrong_login, server, ATTACKER) for _ in range(30)]
        # the attacker's address is saturated: 4 failures serve 5 s penalties
        wait_until(lambda: server.statistics().auth_failures >= 4)
        idle = [connect(server, ATTACKER) for _ in range(64)]
        try:
            took = operator_login_seconds(server)
            assert took < 2.0, f"the operator waited {took:.1f} s behind another address"
        finally:
            for sock in idle:
                sock.close()
        for attempt in attempts:
            attempt.result(timeout=15)
    stats = server.statistics()
    assert stats.auth_successes == 1
    assert stats.connections_refused == 0


def test_one_address_holds_a_bounded_number_of_connections_not_logged_in(
    make_server: Callable[..., RconServer],
) -> None:
    server = make_server(max_unauthenticated_per_address=8)
    idle = [connect(server, ATTACKER) for _ in range(20)]
    try:
        wait_until(lambda: server.statistics().connections_evicted_per_address == 12)
        wait_until(lambda: server.statistics().connections_open == 8)
        for sock in idle[:12]:  # the oldest were closed
            sock.settimeout(5)
            assert sock.recv(16) == b""
        assert operator_login_seconds(server) < 5.0  # another address is unaffected
    finally:
        for sock in idle:
            sock.close()


def test_every_login_wait_ends_by_the_auth_timeout(
    make_server: Callable[..., RconServer],
) -> None:
    """A 30 s penalty is cut to the connection's 0.5 s auth timeout."""
    server = make_server(
        auth_failure_delay=30.0, auth_failure_max_delay=30.0, auth_failure_burst=1, auth_timeout=0.5
    )
    began = time.monotonic()
    for _ in range(3):  # the first serves its penalty, the next wait for it: all bounded
        wrong_login(server, ATTACKER)
    assert time.monotonic() - began < 6.0
    stats = server.statistics()
    assert stats.auth_failures == 1
    assert stats.auth_throttled == 2
    assert stats.timeouts >= 2
    assert operator_login_seconds(server) < 5.0


def test_a_correct_password_after_failures_on_the_same_connection_gets_in(
    make_server: Callable[..., RconServer],
) -> None:
    server = make_server(auth_failure_delay=0.05, auth_failure_max_delay=0.1)
    with connect(server) as sock:
        decoder = PacketDecoder(4096)
        for attempt in range(3):
            sock.sendall(encode(Packet(attempt, SERVERDATA_AUTH, b"guess")))
            packets: list[Packet] = []
            while not packets:
                packets = decoder.feed(sock.recv(4096))
            assert packets[0].id == -1
        sock.sendall(encode(Packet(9, SERVERDATA_AUTH, PASSWORD.encode())))
        packets = []
        while not packets:
            packets = decoder.feed(sock.recv(4096))
        assert packets == [Packet(9, SERVERDATA_AUTH_RESPONSE)]
