"""RconClient against misbehaving or foreign servers (scripted with raw sockets)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

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
from moonbus.admin.rcon_server import RconServer
from moonbus.errors import AdminAuthError, AdminError, ClosedError, ConfigError, RconProtocolError

Script = Callable[[socket.socket], None]


class FakeServer:
    """Accepts one connection and runs ``script`` on it in a thread."""

    def __init__(self, script: Script) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._script = script
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            self._script(conn)

    def close(self) -> None:
        self._thread.join(5)
        self.listener.close()


@pytest.fixture
def fake() -> Iterator[Callable[[Script], FakeServer]]:
    servers: list[FakeServer] = []

    def make(script: Script) -> FakeServer:
        server = FakeServer(script)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def receive(conn: socket.socket, decoder: PacketDecoder, count: int) -> list[Packet]:
    packets: list[Packet] = []
    while len(packets) < count:
        data = conn.recv(65536)
        if not data:
            raise AssertionError("client went away")
        packets.extend(decoder.feed(data))
    return packets


def minecraft_login(conn: socket.socket, decoder: PacketDecoder) -> None:
    """Log in the way Minecraft does: AUTH_RESPONSE only, no empty packet first."""
    (auth,) = receive(conn, decoder, 1)
    assert auth.type == SERVERDATA_AUTH
    conn.sendall(encode(Packet(auth.id, SERVERDATA_AUTH_RESPONSE)))


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_server_names_host_and_port() -> None:
    port = free_port()
    client = RconClient("127.0.0.1", port, "pw", timeout=1)
    with pytest.raises(AdminError, match=rf"cannot reach RCON server at 127\.0\.0\.1:{port}"):
        client.connect()


def test_a_silent_server_times_out(fake: Callable[[Script], FakeServer]) -> None:
    done = threading.Event()
    server = fake(lambda conn: done.wait(5))
    client = RconClient("127.0.0.1", server.port, "pw", timeout=0.2)
    try:
        with pytest.raises(AdminError, match=r"did not answer within 0\.2 s"):
            client.connect()
    finally:
        done.set()


def test_a_malformed_answer_is_a_protocol_error(fake: Callable[[Script], FakeServer]) -> None:
    def script(conn: socket.socket) -> None:
        receive(conn, PacketDecoder(), 1)
        conn.sendall(b"\xff\xff\xff\xff" + b"\x00" * 12)

    server = fake(script)
    client = RconClient("127.0.0.1", server.port, "pw")
    with pytest.raises(RconProtocolError, match=rf"127\.0\.0\.1:{server.port} sent a malformed"):
        client.connect()


def test_works_with_source_trailer_packets_and_minecraft_logins(
    fake: Callable[[Script], FakeServer],
) -> None:
    """Source answers the end marker with the mirror *and* a trailing packet."""

    def script(conn: socket.socket) -> None:
        decoder = PacketDecoder()
        minecraft_login(conn, decoder)
        for reply in ("first", "second"):
            command, marker = receive(conn, decoder, 2)
            assert command.type == SERVERDATA_EXECCOMMAND
            conn.sendall(
                encode(Packet(command.id, SERVERDATA_RESPONSE_VALUE, reply[:3].encode()))
                + encode(Packet(command.id, SERVERDATA_RESPONSE_VALUE, reply[3:].encode()))
                + encode(Packet(marker.id, SERVERDATA_RESPONSE_VALUE))
            )
            conn.sendall(encode(Packet(marker.id, SERVERDATA_RESPONSE_VALUE, b"\x00\x01\x00\x00")))

    server = fake(script)
    with RconClient("127.0.0.1", server.port, "pw") as client:
        assert client.command("a") == "first"
        assert client.command("b") == "second"  # the stale trailer was skipped


def test_server_full_notice_is_shown(fake: Callable[[Script], FakeServer]) -> None:
    def script(conn: socket.socket) -> None:
        receive(conn, PacketDecoder(), 1)  # read the login so closing sends FIN, not RST
        conn.sendall(encode(Packet(-1, SERVERDATA_RESPONSE_VALUE, b"server full: try later")))

    server = fake(script)
    client = RconClient("127.0.0.1", server.port, "pw")
    with pytest.raises(AdminError, match="closed the connection: server full: try later"):
        client.connect()


def test_not_logged_in_is_an_auth_error(fake: Callable[[Script], FakeServer]) -> None:
    def script(conn: socket.socket) -> None:
        decoder = PacketDecoder()
        minecraft_login(conn, decoder)
        receive(conn, decoder, 2)
        conn.sendall(encode(Packet(-1, SERVERDATA_AUTH_RESPONSE)))

    server = fake(script)
    with (
        RconClient("127.0.0.1", server.port, "pw") as client,
        pytest.raises(AdminAuthError, match="not logged in"),
    ):
        client.command("status")


def test_login_answer_with_a_foreign_id_is_a_protocol_error(
    fake: Callable[[Script], FakeServer],
) -> None:
    def script(conn: socket.socket) -> None:
        (auth,) = receive(conn, PacketDecoder(), 1)
        conn.sendall(encode(Packet(auth.id + 100, SERVERDATA_AUTH_RESPONSE)))

    server = fake(script)
    with pytest.raises(RconProtocolError, match="answered login 1 with id 101"):
        RconClient("127.0.0.1", server.port, "pw").connect()


def test_usage_errors() -> None:
    server = RconServer(lambda command: command, password="pw", port=0)
    with server:
        client = RconClient("127.0.0.1", server.port, "pw")
        with pytest.raises(AdminError, match="call connect\\(\\) first"):
            client.command("x")
        client.connect()
        client.connect()  # already connected: nothing to do
        with pytest.raises(AdminError, match="command is 4087 bytes; servers accept at most 4086"):
            client.command("a" * 4087)
        assert client.command("a" * 4086) == "a" * 4086
        assert client.address == f"127.0.0.1:{server.port}"
        client.close()
        client.close()
        with pytest.raises(ClosedError):
            client.command("x")
        with pytest.raises(ClosedError):
            client.connect()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("h", 0, "pw"), "port must be 1..65535"),
        (("h", 70000, "pw"), "port must be 1..65535"),
        (("h", 1, None), "password must be a str"),
        (("h", 1, "pw", 0), "timeout must be positive"),
    ],
)
def test_bad_settings(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RconClient(*args)  # type: ignore[arg-type]
