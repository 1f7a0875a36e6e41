"""The RCON server over real TCP on an ephemeral port.

Clients: the ``rcon`` package from PyPI (a standard client), our own
``RconClient``, and raw sockets for what well-behaved clients never send.
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from rcon.exceptions import WrongPassword
from rcon.source import Client

from moonbus.admin.rcon_client import RconClient
from moonbus.admin.rcon_codec import (
    SERVERDATA_AUTH,
    SERVERDATA_AUTH_RESPONSE,
    SERVERDATA_EXECCOMMAND,
    SERVERDATA_RESPONSE_VALUE,
    Packet,
    PacketDecoder,
    encode,
)
from moonbus.admin.rcon_server import RconServer, RconServerStatistics
from moonbus.errors import AdminAuthError, AdminError, ClosedError, ConfigError

PASSWORD = "s3cret-ü"


class Handler:
    """A stand-in command handler: echo, long answers, failures and a slow command."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.slow_started = threading.Event()

    def __call__(self, command: str) -> str:
        name, _, arg = command.partition(" ")
        if name == "echo":
            return arg
        if name == "long":
            return (arg or "x") * 20_000
        if name == "size":
            return "y" * int(arg)
        if name == "boom":
            raise RuntimeError("the game exploded")
        if name == "none":
            return None  # type: ignore[return-value]
        if name == "slow":
            self.slow_started.set()
            self.release.wait(5)
            return "slow done"
        return f"unknown command {command!r}"


@pytest.fixture
def handler() -> Iterator[Handler]:
    h = Handler()
    yield h
    h.release.set()


@pytest.fixture
def make_server(handler: Handler) -> Iterator[Callable[..., RconServer]]:
    servers: list[RconServer] = []

    def make(**kwargs: object) -> RconServer:
        options: dict[str, object] = {"password": PASSWORD, "port": 0, **kwargs}
        server = RconServer(handler, **options)  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., RconServer]) -> RconServer:
    return make_server(auth_failure_delay=0.0, auth_failure_max_delay=0.0)


def raw(server: RconServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return sock


def read_packets(sock: socket.socket, count: int) -> list[Packet]:
    decoder = PacketDecoder(max_packet_size=1 << 20)
    packets: list[Packet] = []
    while len(packets) < count:
        data = sock.recv(65536)
        assert data, f"connection closed after {len(packets)} of {count} packets"
        packets.extend(decoder.feed(data))
    return packets


def login(sock: socket.socket) -> None:
    sock.sendall(encode(Packet(1, SERVERDATA_AUTH, PASSWORD.encode())))
    assert read_packets(sock, 1) == [Packet(1, SERVERDATA_AUTH_RESPONSE)]


def assert_closed_by_server(sock: socket.socket) -> None:
    sock.settimeout(5)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def still_serving(server: RconServer) -> None:
    with RconClient("127.0.0.1", server.port, PASSWORD) as client:
        assert client.command("echo alive") == "alive"


# -- standard client: the rcon package -----------------------------------------


def test_rcon_package_runs_commands(server: RconServer) -> None:
    with Client("127.0.0.1", server.port, passwd=PASSWORD, timeout=5) as client:
        assert client.run("echo", "hello") == "hello"
        assert client.run("echo", "ünïcødé") == "ünïcødé"
        assert client.run("long") == "x" * 20_000  # 5 packets, reassembled by the client
        for size in (4095, 4096, 4097, 8192):  # around its fragment threshold
            assert client.run("size", str(size)) == "y" * size
        assert client.run("echo", "after") == "after"


def test_rcon_package_logins_are_reliable(server: RconServer) -> None:
    for _ in range(30):
        with Client("127.0.0.1", server.port, passwd=PASSWORD, timeout=5) as client:
            assert client.run("echo", "ok") == "ok"


def test_rcon_package_wrong_password(server: RconServer) -> None:
    client = Client("127.0.0.1", server.port, passwd="nope", timeout=5)
    try:
        with pytest.raises(WrongPassword):
            client.connect(login=True)
    finally:
        client.close()  # its __enter__ leaks the socket when login raises
    assert server.statistics().auth_failures == 1


# -- our own client ---------------------------------------------------------------


def test_own_client_runs_commands(server: RconServer) -> None:
    with RconClient("127.0.0.1", server.port, PASSWORD) as client:
        assert client.command("echo hello") == "hello"
        assert client.command("echo ") == ""
        assert client.command("long") == "x" * 20_000
        assert client.command("long é") == "é" * 20_000  # 40,000 bytes, split on characters
        assert client.command("echo last") == "last"
    stats = server.statistics()
    assert stats.commands_served == 5
    assert stats.auth_successes == 1


def test_own_client_wrong_password(server: RconServer) -> None:
    client = RconClient("127.0.0.1", server.port, "wrong")
    with pytest.raises(AdminAuthError, match=rf"127\.0\.0\.1:{server.port} refused the password"):
        client.connect()
    client.close()


def test_handler_errors_are_answers_and_the_connection_lives(server: RconServer) -> None:
    with RconClient("127.0.0.1", server.port, PASSWORD) as client:
        assert client.command("boom") == "error: RuntimeError: the game exploded"
        assert client.command("none") == "error: the command handler returned NoneType, not str"
        assert client.command("echo fine") == "fine"
    assert server.statistics().command_errors == 2


def test_moonbus_errors_are_answered_with_their_message() -> None:
    def refuse(command: str) -> str:
        raise AdminError(f"no such command: {command}")

    server = RconServer(refuse, password=PASSWORD, port=0)
    with server, RconClient("127.0.0.1", server.port, PASSWORD) as client:
        assert client.command("frobnicate") == "error: no such command: frobnicate"


# -- protocol details, with raw sockets ------------------------------------------


def test_login_is_answered_by_one_auth_response(server: RconServer) -> None:
    with raw(server) as sock:
        sock.sendall(encode(Packet(77, SERVERDATA_AUTH, b"bad")))
        assert read_packets(sock, 1) == [Packet(-1, SERVERDATA_AUTH_RESPONSE)]
        sock.sendall(encode(Packet(78, SERVERDATA_AUTH, PASSWORD.encode())))
        assert read_packets(sock, 1) == [Packet(78, SERVERDATA_AUTH_RESPONSE)]
        sock.sendall(encode(Packet(79, SERVERDATA_EXECCOMMAND, b"echo in sync")))
        assert read_packets(sock, 1) == [Packet(79, SERVERDATA_RESPONSE_VALUE, b"in sync")]


def test_source_auth_preamble_on_request(make_server: Callable[..., RconServer]) -> None:
    server = make_server(source_auth_preamble=True)
    with raw(server) as sock:
        sock.sendall(encode(Packet(77, SERVERDATA_AUTH, b"bad")))
        assert read_packets(sock, 2) == [
            Packet(77, SERVERDATA_RESPONSE_VALUE),
            Packet(-1, SERVERDATA_AUTH_RESPONSE),
        ]
        sock.sendall(encode(Packet(78, SERVERDATA_AUTH, PASSWORD.encode())))
        assert read_packets(sock, 2) == [
            Packet(78, SERVERDATA_RESPONSE_VALUE),
            Packet(78, SERVERDATA_AUTH_RESPONSE),
        ]
    with RconClient("127.0.0.1", server.port, PASSWORD) as client:  # skips the preamble
        assert client.command("echo ok") == "ok"


class McrconStyle:
    """Reads exactly as mcrcon (Tiiffi) does: one packet per request.

    Login succeeds unless that one packet has id -1; a command's answer is the
    next packet, which must carry the command's id.
    """

    PID = 0x0BADC0DE

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.decoder = PacketDecoder(max_packet_size=4096)  # mcrcon's own limit

    def next_packet(self) -> Packet:
        packets: list[Packet] = []
        while not packets:
            packets = self.decoder.feed(self.sock.recv(1))  # never reads ahead
        return packets[0]

    def auth(self, password: str) -> bool:
        self.sock.sendall(encode(Packet(self.PID, SERVERDATA_AUTH, password.encode())))
        return self.next_packet().id != -1

    def command(self, text: str) -> str | None:
        self.sock.sendall(encode(Packet(self.PID, SERVERDATA_EXECCOMMAND, text.encode())))
        packet = self.next_packet()
        return packet.body.decode() if packet.id == self.PID else None


def test_mcrcon_style_clients_work(server: RconServer) -> None:
    wrong = McrconStyle(server.port)
    with wrong.sock:
        assert not wrong.auth("wrong")
    right = McrconStyle(server.port)
    with right.sock:
        assert right.auth(PASSWORD)
        assert [right.command(f"echo {n}") for n in range(3)] == ["0", "1", "2"]


def test_commands_before_login_are_refused(server: RconServer) -> None:
    with raw(server) as sock:
        sock.sendall(encode(Packet(5, SERVERDATA_EXECCOMMAND, b"echo hi")))
        assert read_packets(sock, 1) == [Packet(-1, SERVERDATA_AUTH_RESPONSE)]
    assert server.statistics().unauthenticated_requests == 1


def test_wrong_password_on_an_open_connection_logs_it_out(server: RconServer) -> None:
    with raw(server) as sock:
        login(sock)
        sock.sendall(encode(Packet(9, SERVERDATA_AUTH, b"bad")))
        assert read_packets(sock, 1)[0].id == -1
        sock.sendall(encode(Packet(10, SERVERDATA_EXECCOMMAND, b"echo hi")))
        assert read_packets(sock, 1) == [Packet(-1, SERVERDATA_AUTH_RESPONSE)]


def test_empty_packet_end_marker_is_mirrored_after_the_answer(server: RconServer) -> None:
    with raw(server) as sock:
        login(sock)
        sock.sendall(
            encode(Packet(20, SERVERDATA_EXECCOMMAND, b"long"))
            + encode(Packet(21, SERVERDATA_RESPONSE_VALUE))
        )
        packets = read_packets(sock, 6)
    assert [p.id for p in packets] == [20, 20, 20, 20, 20, 21]
    assert [len(p.body) for p in packets] == [4096, 4096, 4096, 4096, 3616, 0]
    assert packets[-1] == Packet(21, SERVERDATA_RESPONSE_VALUE)


def test_unknown_packet_types_get_an_error_answer(server: RconServer) -> None:
    with raw(server) as sock:
        login(sock)
        sock.sendall(
            encode(Packet(30, 7, b"?")) + encode(Packet(31, SERVERDATA_EXECCOMMAND, b"echo k"))
        )
        assert read_packets(sock, 2) == [
            Packet(30, SERVERDATA_RESPONSE_VALUE, b"error: unknown RCON packet type 7"),
            Packet(31, SERVERDATA_RESPONSE_VALUE, b"k"),
        ]


def test_commands_that_are_not_utf8_get_an_error_answer(server: RconServer) -> None:
    with raw(server) as sock:
        login(sock)
        sock.sendall(encode(Packet(40, SERVERDATA_EXECCOMMAND, b"echo \xff")))
        assert read_packets(sock, 1)[0].body == b"error: the command is not valid UTF-8"


# -- hostile input closes that connection only -----------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(struct.pack("<i", 100 * 1024 * 1024) + b"\x00" * 64, id="claims-100MB"),
        pytest.param(b"\xff" * 64, id="garbage"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
        pytest.param(struct.pack("<iii", 12, 1, 2) + b"hiXY", id="bad-terminator"),
        pytest.param(encode(Packet(1, SERVERDATA_EXECCOMMAND, b"a" * 4087)), id="oversized"),
    ],
)
def test_bad_packets_close_that_connection_only(server: RconServer, payload: bytes) -> None:
    with RconClient("127.0.0.1", server.port, PASSWORD) as bystander:
        with raw(server) as sock:
            login(sock)
            sock.sendall(payload)
            assert_closed_by_server(sock)
        assert bystander.command("echo still here") == "still here"
    wait_until(lambda: server.statistics().protocol_errors == 1)
    still_serving(server)


def test_largest_legal_command_is_accepted(server: RconServer) -> None:
    with raw(server) as sock:
        login(sock)
        sock.sendall(encode(Packet(1, SERVERDATA_EXECCOMMAND, b"echo " + b"a" * 4081)))
        assert read_packets(sock, 1)[0].body == b"a" * 4081


def test_truncated_packet_then_close(server: RconServer) -> None:
    with raw(server) as sock:
        login(sock)
        sock.sendall(encode(Packet(3, SERVERDATA_EXECCOMMAND, b"echo cut"))[:9])
    wait_until(lambda: server.statistics().protocol_errors == 1)
    still_serving(server)


def test_garbage_before_login(server: RconServer) -> None:
    with raw(server) as sock:
        sock.sendall(b"\x00" * 32)  # size 0: below the minimum
        assert_closed_by_server(sock)
    still_serving(server)


# -- load, limits, time -----------------------------------------------------------


def test_200_idle_connections_do_not_stall_an_active_client(
    make_server: Callable[..., RconServer],
) -> None:
    server = make_server(max_connections=256, max_unauthenticated_per_address=256)
    idle = [raw(server) for _ in range(200)]
    try:
        wait_until(lambda: server.statistics().connections_open == 200)
        with RconClient("127.0.0.1", server.port, PASSWORD) as client:
            for n in range(50):
                assert client.command(f"echo {n}") == str(n)
        assert server.statistics().connections_refused == 0
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: server.statistics().connections_open == 0)


def test_a_full_server_evicts_the_oldest_connection_not_logged_in(
    make_server: Callable[..., RconServer],
) -> None:
    server = make_server(max_connections=4, max_unauthenticated_per_address=64)
    first = RconClient("127.0.0.1", server.port, PASSWORD)
    first.connect()
    idle = [raw(server) for _ in range(3)]
    extra: list[socket.socket] = []
    try:
        wait_until(lambda: server.statistics().connections_open == 4)
        for _ in range(5):
            extra.append(raw(server))
            wait_until(lambda: server.statistics().connections_evicted_server_full == len(extra))
        for sock in idle + extra[:2]:  # the five oldest that had not logged in
            assert_closed_by_server(sock)
        assert first.command("echo served") == "served"  # the logged-in admin kept its place
        still_serving(server)  # and a newcomer with the password gets in
        assert server.statistics().connections_refused == 0
    finally:
        for sock in idle + extra:
            sock.close()
        first.close()
    wait_until(lambda: server.statistics().connections_open == 0)


def test_when_every_connection_is_logged_in_newcomers_are_refused_politely(
    make_server: Callable[..., RconServer],
) -> None:
    server = make_server(max_connections=2)
    clients = [RconClient("127.0.0.1", server.port, PASSWORD) for _ in range(2)]
    for client in clients:
        client.connect()
    try:
        for _ in range(5):
            with raw(server) as sock:
                packets = read_packets(sock, 1)
                assert packets[0].id == -1
                assert b"server full: 2 RCON connections" in packets[0].body
                assert_closed_by_server(sock)
        refused = RconClient("127.0.0.1", server.port, PASSWORD)
        with pytest.raises(AdminError, match="closed the connection: server full"):
            refused.connect()
        assert clients[0].command("echo served") == "served"
        assert server.statistics().connections_refused == 6
    finally:
        for client in clients:
            client.close()
    wait_until(lambda: server.statistics().connections_open == 0)
    still_serving(server)


def test_idle_connections_are_closed(make_server: Callable[..., RconServer]) -> None:
    server = make_server(idle_timeout=0.2)
    with raw(server) as sock:
        login(sock)
        assert_closed_by_server(sock)
    assert server.statistics().timeouts == 1


def test_connections_that_never_log_in_are_closed(make_server: Callable[..., RconServer]) -> None:
    server = make_server(auth_timeout=0.2)
    with raw(server) as sock:
        sock.sendall(encode(Packet(1, SERVERDATA_EXECCOMMAND, b"echo")))
        read_packets(sock, 1)
        assert_closed_by_server(sock)
    assert server.statistics().timeouts == 1


def test_a_slow_command_does_not_stall_other_connections(
    server: RconServer, handler: Handler
) -> None:
    with (
        ThreadPoolExecutor(1) as pool,
        RconClient("127.0.0.1", server.port, PASSWORD) as slow_client,
    ):
        slow = pool.submit(slow_client.command, "slow")
        assert handler.slow_started.wait(5)
        with RconClient("127.0.0.1", server.port, PASSWORD) as fast:
            assert fast.command("echo quick") == "quick"
        assert not slow.done()
        handler.release.set()
        assert slow.result(5) == "slow done"


def test_repeated_failures_from_one_address_are_slowed_down(
    make_server: Callable[..., RconServer],
) -> None:
    server = make_server(auth_failure_delay=0.05, auth_failure_max_delay=0.2)
    with raw(server) as sock:
        answered = []
        for attempt in range(4):
            sock.sendall(encode(Packet(attempt, SERVERDATA_AUTH, b"guess")))
            assert read_packets(sock, 1)[0].id == -1
            answered.append(time.monotonic())
        gaps = [later - earlier for earlier, later in itertools.pairwise(answered)]
        # after the 1st, 2nd, 3rd failure, checks are at least 0.05, 0.1, 0.2 s apart
        # (lower bounds only, with a little slack for when the answers were read)
        assert gaps[0] >= 0.045 and gaps[1] >= 0.09 and gaps[2] >= 0.18, gaps
        # the right password still gets in (after its wait) and clears the record
        sock.sendall(encode(Packet(9, SERVERDATA_AUTH, PASSWORD.encode())))
        assert read_packets(sock, 1) == [Packet(9, SERVERDATA_AUTH_RESPONSE)]
    assert server.statistics().auth_failures == 4


# -- lifecycle and configuration --------------------------------------------------


@pytest.mark.parametrize("password", [None, ""])
def test_a_password_is_required(password: str | None) -> None:
    with pytest.raises(ConfigError, match="RCON password is required"):
        RconServer(str, password=password)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 70000}, "port must be 0..65535"),
        ({"max_connections": 0}, "max_connections must be at least 1"),
        ({"max_unauthenticated_per_address": 0}, "max_unauthenticated_per_address must be at"),
        ({"auth_failure_burst": 0}, "auth failure burst must be an integer >= 1"),
        ({"handler_threads": 0}, "handler_threads must be at least 1"),
        ({"idle_timeout": 0}, "idle_timeout must be positive"),
        ({"auth_timeout": -1}, "auth_timeout must be positive"),
        ({"max_packet_size": 9}, "max_packet_size must be an int of at least 10"),
        ({"auth_failure_delay": -1.0}, "auth failure delay"),
        ({"auth_ipv6_prefix": 16}, "auth_ipv6_prefix must be 32..128"),
        ({"auth_ipv6_prefix": 129}, "auth_ipv6_prefix must be 32..128"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RconServer(str, password="x", **kwargs)  # type: ignore[arg-type]


def test_handler_must_be_callable() -> None:
    with pytest.raises(ConfigError, match="handler must be callable"):
        RconServer("help", password="x")  # type: ignore[arg-type]


def test_a_busy_port_is_a_clear_error(server: RconServer) -> None:
    other = RconServer(str, password="x", port=server.port)
    with pytest.raises(AdminError, match=rf"cannot listen for RCON on 127\.0\.0\.1:{server.port}"):
        other.start()
    with pytest.raises(ClosedError):
        other.start()


def test_stop_closes_open_connections_and_is_idempotent(handler: Handler) -> None:
    server = RconServer(handler, password=PASSWORD, port=0)
    server.stop()  # before start: nothing to do
    server = RconServer(handler, password=PASSWORD, port=0)
    server.start()
    with pytest.raises(AdminError, match="already running"):
        server.start()
    client = RconClient("127.0.0.1", server.port, PASSWORD)
    client.connect()
    with raw(server) as sock:
        server.stop()
        assert_closed_by_server(sock)
    with pytest.raises(AdminError, match=rf"127\.0\.0\.1:{server.port}"):
        client.command("echo gone")
    client.close()
    server.stop()
    with pytest.raises(ClosedError, match="was stopped"):
        server.start()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_stop_does_not_wait_for_a_stuck_command(server: RconServer, handler: Handler) -> None:
    with RconClient("127.0.0.1", server.port, PASSWORD) as client:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(client.command, "slow")
            assert handler.slow_started.wait(5)
            server.stop()
            with pytest.raises(AdminError, match=rf"127\.0\.0\.1:{server.port}"):
                pending.result(5)
        handler.release.set()


def test_statistics_is_a_frozen_snapshot(server: RconServer) -> None:
    stats = server.statistics()
    assert isinstance(stats, RconServerStatistics)
    with pytest.raises(AttributeError):
        stats.commands_served = 5  # type: ignore[misc]
    still_serving(server)
    assert stats.commands_served == 0
    assert server.statistics().commands_served == 1
