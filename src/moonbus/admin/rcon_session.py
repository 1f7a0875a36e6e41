"""The per-connection half of the RCON server: read packets, log in, answer.

Why apart from ``rcon_server``: the server owns the listener, the caps and
the counters; a ``Session`` is one connection's protocol loop (see the
``rcon_server`` module docstring for the behaviour). It reads its server's
settings, throttle, admission table and counters; both live on the server's
event-loop thread, so nothing here takes a lock.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import TYPE_CHECKING

from moonbus.admin.rcon_codec import (
    SERVERDATA_AUTH,
    SERVERDATA_AUTH_RESPONSE,
    SERVERDATA_EXECCOMMAND,
    SERVERDATA_RESPONSE_VALUE,
    Packet,
    PacketDecoder,
    encode,
    split_response,
)
from moonbus.admin.rcon_throttle import throttle_key
from moonbus.errors import MoonbusError, RconProtocolError

if TYPE_CHECKING:
    from moonbus.admin.rcon_server import RconServer

__all__ = ["READ_CHUNK", "Session", "close_connection"]

_log = logging.getLogger("moonbus.admin.rcon_server")

READ_CHUNK = 65536
_CLOSE_GRACE = 1.0
_AUTH_PACKET_GAP = 0.005  # seconds between Source's preamble and the AUTH_RESPONSE


class _PeerNotReading(Exception):
    """The peer left our answer unread for ``idle_timeout`` seconds."""


class _AuthTimedOut(Exception):
    """The connection's auth timeout ended while it waited to log in."""


class Session:
    """One client connection. Lives on the server's loop thread.

    Hashed by identity (a key of the server's ``Admission``).
    """

    def __init__(
        self,
        server: RconServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        task: asyncio.Task[None],
    ) -> None:
        self._server = server
        self._reader = reader
        self._writer = writer
        self.task = task
        self._decoder = PacketDecoder(server._max_packet_size)
        self._authenticated = False
        peer = writer.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        # What the login throttle and the admission cap count by: the address,
        # or its IPv6 network (RconServer's auth_ipv6_prefix); logs name the address.
        self.bucket = throttle_key(self.address, server._ipv6_prefix)
        self._auth_deadline = asyncio.get_running_loop().time() + server._auth_timeout

    async def run(self) -> None:
        server = self._server
        loop = asyncio.get_running_loop()
        clean = False
        try:
            while True:
                deadline = loop.time() + server._idle_timeout
                if not self._authenticated:
                    deadline = min(deadline, self._auth_deadline)
                try:
                    async with asyncio.timeout_at(deadline):
                        data = await self._reader.read(READ_CHUNK)
                except TimeoutError:
                    server._count("timeouts")
                    return
                if not data:
                    self._decoder.check_complete()
                    clean = True
                    return
                answer = bytearray()
                for packet in self._decoder.feed(data):
                    if packet.type == SERVERDATA_AUTH:
                        await self._send(answer)
                        answer = bytearray(await self._login(packet))
                    else:
                        answer += await self._answer(packet)
                await self._send(answer)
        except asyncio.CancelledError:
            clean = True  # the server is stopping: a plain close, not a reset
            raise
        except (_PeerNotReading, _AuthTimedOut):
            server._count("timeouts")
        except RconProtocolError as exc:
            server._count("protocol_errors")
            _log.info("RCON connection from %s closed: %s", self.address, exc)
        except OSError as exc:
            _log.debug("RCON connection from %s failed: %s", self.address, exc)
        finally:
            await close_connection(self._writer, clean=clean)

    async def _send(self, data: bytes | bytearray) -> None:
        if not data:
            return
        self._writer.write(data)
        try:
            async with asyncio.timeout(self._server._idle_timeout):
                await self._writer.drain()
        except TimeoutError:
            raise _PeerNotReading from None

    async def _answer(self, packet: Packet) -> bytes:
        if not self._authenticated:
            self._server._count("unauthenticated_requests")
            return encode(Packet(-1, SERVERDATA_AUTH_RESPONSE))
        if packet.type == SERVERDATA_EXECCOMMAND:
            text = await self._execute(packet.body)
            return b"".join(encode(p) for p in split_response(packet.id, text))
        if packet.type == SERVERDATA_RESPONSE_VALUE:
            return encode(packet)  # the end-of-answer marker, mirrored
        message = f"error: unknown RCON packet type {packet.type}"
        return encode(Packet(packet.id, SERVERDATA_RESPONSE_VALUE, message.encode()))

    async def _wait_within_auth_timeout(self, seconds: float) -> None:
        """Sleep ``seconds``, but never past the auth deadline (then close)."""
        left = self._auth_deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise _AuthTimedOut
        await asyncio.sleep(min(seconds, left))

    async def _login(self, packet: Packet) -> bytes:
        server = self._server
        throttled = False
        while (wait := server._throttle.wait_before_check(self.bucket)) > 0:
            if not throttled:
                throttled = True
                server._count("auth_throttled")
            await self._wait_within_auth_timeout(wait)
        accepted = hmac.compare_digest(packet.body, server._password)
        if server._source_auth_preamble:
            # Two writes a moment apart, as from a Source server, so that a client
            # reading each packet through a fresh buffered reader has a chance.
            await self._send(encode(Packet(packet.id, SERVERDATA_RESPONSE_VALUE)))
            await asyncio.sleep(_AUTH_PACKET_GAP)
        if accepted:
            self._authenticated = True
            server._admission.logged_in(self)
            server._throttle.record_success(self.bucket)
            server._count("auth_successes")
            return encode(Packet(packet.id, SERVERDATA_AUTH_RESPONSE))
        if self._authenticated:  # logged out: it gets a fresh auth timeout
            self._authenticated = False
            self._auth_deadline = asyncio.get_running_loop().time() + server._auth_timeout
            server._admission.logged_out(self)
        penalty = server._throttle.record_failure(self.bucket)
        server._count("auth_failures")
        _log.warning("RCON login from %s refused: wrong password", self.address)
        # The failing attempt serves its penalty before it learns the answer (bounded
        # by the auth timeout: past it, the read loop closes the connection).
        left = self._auth_deadline - asyncio.get_running_loop().time()
        if penalty > 0 and left > 0:
            await asyncio.sleep(min(penalty, left))
        return encode(Packet(-1, SERVERDATA_AUTH_RESPONSE))

    async def _execute(self, body: bytes) -> str:
        server = self._server
        server._count("commands_served")
        try:
            command = body.decode("utf-8")
        except UnicodeDecodeError:
            server._count("command_errors")
            return "error: the command is not valid UTF-8"
        assert server._pool is not None
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(server._pool, server._handler, command)
        except Exception as exc:
            server._count("command_errors")
            if isinstance(exc, MoonbusError):
                return f"error: {exc}"
            _log.exception("RCON command %r raised", command)
            return f"error: {type(exc).__name__}: {exc}"
        if not isinstance(result, str):
            server._count("command_errors")
            return f"error: the command handler returned {type(result).__name__}, not str"
        return result


async def close_connection(writer: asyncio.StreamWriter, *, clean: bool) -> None:
    """Close a connection: flush and close when it ended cleanly, else abort."""
    if clean:
        writer.close()
    else:
        writer.transport.abort()
    try:
        async with asyncio.timeout(_CLOSE_GRACE):
            await writer.wait_closed()
    except (TimeoutError, OSError):
        writer.transport.abort()
