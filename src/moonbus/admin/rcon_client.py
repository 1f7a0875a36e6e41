"""A small blocking Source RCON client, used by ``moonbus admin --host ...``.

Why blocking: the CLI sends one command and prints the answer; a plain
socket is the simplest thing that works, and it speaks to any Source-style
server (moonbus's own, Source games, Minecraft).

Multi-packet answers are reassembled with the empty-packet trick: right
after each command the client sends an empty ``RESPONSE_VALUE`` with the next
id. A server answers packets in order, so every response packet carrying the
command's id is part of the answer and the packet carrying the marker's id
ends it (moonbus mirrors the marker; Minecraft answers "Unknown request";
both work). Stray packets with older ids (Source's trailing
``\\x00\\x01\\x00\\x00`` packet) are skipped.

Threads: one client is one connection; its methods are serialised by a lock,
so it may be shared, but commands then run one after another.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from types import TracebackType

from moonbus.admin.rcon_codec import (
    SERVERDATA_AUTH,
    SERVERDATA_AUTH_RESPONSE,
    SERVERDATA_EXECCOMMAND,
    SERVERDATA_RESPONSE_VALUE,
    Packet,
    PacketDecoder,
    encode,
)
from moonbus.errors import AdminAuthError, AdminError, ClosedError, ConfigError, RconProtocolError

__all__ = ["DEFAULT_MAX_COMMAND_BYTES", "RconClient"]

DEFAULT_MAX_COMMAND_BYTES = 4086
"""Longest command body a Source server accepts (its 4096-byte packet limit)."""

_CLIENT_MAX_PACKET_SIZE = 1 << 20  # what we accept from servers; still refuses absurd sizes
_READ_CHUNK = 65536
_MAX_ID = 2**31 - 1


class RconClient:
    """Connect, log in, run commands, get whole answers back.

    ``timeout`` bounds every network wait (connecting, each read and write),
    not the total length of an answer that keeps arriving.
    """

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        timeout: float = 5.0,
        *,
        max_command_bytes: int = DEFAULT_MAX_COMMAND_BYTES,
    ) -> None:
        if not isinstance(port, int) or not 0 < port <= 65535:
            raise ConfigError(f"RCON port must be 1..65535, got {port!r}")
        if not isinstance(password, str):
            raise ConfigError(f"RCON password must be a str, got {type(password).__name__}")
        if not timeout > 0:
            raise ConfigError(f"RCON timeout must be positive, got {timeout}")
        self._host = host
        self._port = port
        self._password = password
        self._timeout = float(timeout)
        self._max_command_bytes = max_command_bytes
        self._sock: socket.socket | None = None
        self._decoder = PacketDecoder(_CLIENT_MAX_PACKET_SIZE)
        self._received: deque[Packet] = deque()
        self._next_id = 1
        self._closed = False
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        """``host:port`` of the server, as used in error messages."""
        return f"{self._host}:{self._port}"

    def connect(self) -> None:
        """Open the connection and log in; AdminAuthError when the password is wrong."""
        with self._lock:
            if self._closed:
                raise ClosedError(f"RCON client for {self.address} was closed")
            if self._sock is not None:
                return
            try:
                self._sock = socket.create_connection(
                    (self._host, self._port), timeout=self._timeout
                )
            except TimeoutError as exc:
                raise AdminError(
                    f"cannot reach RCON server at {self.address}: "
                    f"no answer within {self._timeout:g} s"
                ) from exc
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise AdminError(f"cannot reach RCON server at {self.address}: {reason}") from exc
            try:
                self._login()
            except BaseException:
                self._drop_connection()
                raise

    def command(self, text: str) -> str:
        """Run ``text`` on the server and return its whole answer."""
        body = text.encode("utf-8")
        if len(body) > self._max_command_bytes:
            raise AdminError(
                f"RCON command is {len(body)} bytes; servers accept at most "
                f"{self._max_command_bytes}"
            )
        with self._lock:
            if self._closed:
                raise ClosedError(f"RCON client for {self.address} was closed")
            if self._sock is None:
                raise AdminError(f"not connected to {self.address}; call connect() first")
            try:
                return self._exchange(body)
            except AdminAuthError:
                raise
            except BaseException:
                self._drop_connection()  # the stream is out of step now
                raise

    def close(self) -> None:
        """Close the connection; later calls raise ClosedError. Idempotent."""
        with self._lock:
            self._closed = True
            self._drop_connection()

    def __enter__(self) -> RconClient:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals (called with the lock held) ---------------------------

    def _login(self) -> None:
        request_id = self._take_id()
        self._send(encode(Packet(request_id, SERVERDATA_AUTH, self._password.encode("utf-8"))))
        notices: list[str] = []
        while True:
            packet = self._receive(notices)
            if packet.type == SERVERDATA_AUTH_RESPONSE:
                if packet.id == -1:
                    raise AdminAuthError(f"RCON server at {self.address} refused the password")
                if packet.id != request_id:
                    raise RconProtocolError(
                        f"RCON server at {self.address} answered login {request_id} "
                        f"with id {packet.id}"
                    )
                return
            if packet.type == SERVERDATA_RESPONSE_VALUE and packet.id != request_id and packet.body:
                notices.append(packet.body.decode("utf-8", errors="replace"))

    def _exchange(self, body: bytes) -> str:
        command_id = self._take_id()
        marker_id = self._take_id()
        self._send(
            encode(Packet(command_id, SERVERDATA_EXECCOMMAND, body))
            + encode(Packet(marker_id, SERVERDATA_RESPONSE_VALUE))
        )
        parts: list[bytes] = []
        while True:
            packet = self._receive([])
            if packet.id == marker_id:
                return b"".join(parts).decode("utf-8", errors="replace")
            if packet.id == -1 and packet.type == SERVERDATA_AUTH_RESPONSE:
                raise AdminAuthError(f"RCON server at {self.address} says: not logged in")
            if packet.id == command_id and packet.type == SERVERDATA_RESPONSE_VALUE:
                parts.append(packet.body)
            # anything else is left over from an earlier exchange: skip it

    def _take_id(self) -> int:
        request_id = self._next_id
        self._next_id = 1 if request_id >= _MAX_ID else request_id + 1
        return request_id

    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except TimeoutError as exc:
            raise AdminError(
                f"RCON server at {self.address} did not accept data within {self._timeout:g} s"
            ) from exc
        except OSError as exc:
            raise AdminError(f"lost the RCON connection to {self.address}: {exc}") from exc

    def _receive(self, notices: list[str]) -> Packet:
        assert self._sock is not None
        while not self._received:
            try:
                data = self._sock.recv(_READ_CHUNK)
            except TimeoutError as exc:
                raise AdminError(
                    f"RCON server at {self.address} did not answer within {self._timeout:g} s"
                ) from exc
            except OSError as exc:
                raise AdminError(f"lost the RCON connection to {self.address}: {exc}") from exc
            if not data:
                said = f": {'; '.join(notices)}" if notices else ""
                raise AdminError(f"RCON server at {self.address} closed the connection{said}")
            try:
                self._received.extend(self._decoder.feed(data))
            except RconProtocolError as exc:
                raise RconProtocolError(
                    f"RCON server at {self.address} sent a malformed packet: {exc}"
                ) from exc
        return self._received.popleft()

    def _drop_connection(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._received.clear()
        self._decoder = PacketDecoder(_CLIENT_MAX_PACKET_SIZE)
