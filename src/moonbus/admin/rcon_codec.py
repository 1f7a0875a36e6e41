"""Source RCON wire format: packets to bytes and bytes back to packets.

Why a pure module: the framing rules (sizes, terminators, limits, how long
answers are split) are where a network protocol goes wrong, so they live here
without sockets, threads or clocks and are tested on their own, property by
property. ``rcon_server`` and ``rcon_client`` are thin I/O shells around it.

The format (https://developer.valvesoftware.com/wiki/Source_RCON_Protocol)::

    int32 size   (little-endian; bytes that follow: id + type + body + 2)
    int32 id
    int32 type
    body         (bytes; Source treats it as a NUL-terminated string)
    b"\\x00"      body terminator
    b"\\x00"      empty-string terminator

``size`` is therefore at least 10. Source refuses packets whose ``size`` is
above 4096; :class:`PacketDecoder` applies the same limit by default, so a
header claiming 100 MB is rejected as soon as its first four bytes arrive.

Threads: the functions are pure and may be called from any thread. A
:class:`PacketDecoder` holds the buffered bytes of one stream; it belongs to
whoever reads that stream and must not be fed from two threads at once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from moonbus.errors import ConfigError, RconProtocolError

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "MIN_PACKET_SIZE",
    "RESPONSE_BODY_LIMIT",
    "SERVERDATA_AUTH",
    "SERVERDATA_AUTH_RESPONSE",
    "SERVERDATA_EXECCOMMAND",
    "SERVERDATA_RESPONSE_VALUE",
    "Packet",
    "PacketDecoder",
    "encode",
    "split_response",
]

SERVERDATA_AUTH: Final = 3
SERVERDATA_AUTH_RESPONSE: Final = 2
SERVERDATA_EXECCOMMAND: Final = 2
SERVERDATA_RESPONSE_VALUE: Final = 0

MIN_PACKET_SIZE: Final = 10
"""Smallest legal ``size`` field: id (4) + type (4) + two NUL terminators."""

DEFAULT_MAX_PACKET_SIZE: Final = 4096
"""Largest ``size`` field Source accepts from a client (a body of up to 4086 bytes)."""

RESPONSE_BODY_LIMIT: Final = 4096
"""Largest body of one response packet; longer answers are split (as Source does)."""

_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_HEADER: Final = struct.Struct("<iii")
_SIZE: Final = struct.Struct("<i")
_TERMINATOR: Final = b"\x00\x00"
_MIN_SPLIT_BODY: Final = 4  # the longest UTF-8 character must fit in one packet


@dataclass(frozen=True, slots=True)
class Packet:
    """One RCON packet. ``id`` and ``type`` are signed 32-bit integers.

    Note that ``SERVERDATA_EXECCOMMAND`` and ``SERVERDATA_AUTH_RESPONSE`` share
    the value 2: the direction of travel tells them apart.
    """

    id: int
    type: int
    body: bytes = b""

    def __post_init__(self) -> None:
        for name, value in (("id", self.id), ("type", self.type)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise RconProtocolError(f"packet {name} must be an int, not {type(value).__name__}")
            if not _INT32_MIN <= value <= _INT32_MAX:
                raise RconProtocolError(f"packet {name} {value} is outside the signed int32 range")
        if not isinstance(self.body, bytes):
            raise RconProtocolError(f"packet body must be bytes, not {type(self.body).__name__}")


def encode(packet: Packet) -> bytes:
    """Return the wire bytes of ``packet`` (size, id, type, body, NUL, NUL)."""
    body = packet.body
    return _HEADER.pack(len(body) + MIN_PACKET_SIZE, packet.id, packet.type) + body + _TERMINATOR


class PacketDecoder:
    """Incremental decoder: feed it bytes as they arrive, get whole packets back.

    Malformed input raises :class:`RconProtocolError`: a ``size`` below 10 or
    above ``max_packet_size``, or a packet not ending in two NUL bytes. After
    an error the stream is out of step for good, so the decoder stays failed
    and every later :meth:`feed` raises too. Packets completed earlier in the
    same chunk as the fault are discarded with it: the connection is broken.
    """

    __slots__ = ("_buffer", "_error", "_max_packet_size")

    def __init__(self, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        if not isinstance(max_packet_size, int) or max_packet_size < MIN_PACKET_SIZE:
            raise ConfigError(
                f"max_packet_size must be an int of at least {MIN_PACKET_SIZE}, "
                f"got {max_packet_size!r}"
            )
        self._max_packet_size = max_packet_size
        self._buffer = bytearray()
        self._error: str | None = None

    @property
    def max_packet_size(self) -> int:
        """Largest ``size`` field accepted."""
        return self._max_packet_size

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet make a whole packet."""
        return len(self._buffer)

    @property
    def failed(self) -> bool:
        """True once malformed input was seen."""
        return self._error is not None

    def feed(self, data: bytes) -> list[Packet]:
        """Buffer ``data`` and return every packet it completes, in order."""
        if self._error is not None:
            raise RconProtocolError(f"decoder already failed: {self._error}")
        buffer = self._buffer
        buffer += data
        packets: list[Packet] = []
        pos = 0
        end = len(buffer)
        try:
            while end - pos >= 4:
                (size,) = _SIZE.unpack_from(buffer, pos)
                if size < MIN_PACKET_SIZE:
                    raise RconProtocolError(
                        f"packet size {size} is below the minimum of {MIN_PACKET_SIZE}"
                    )
                if size > self._max_packet_size:
                    raise RconProtocolError(
                        f"packet size {size} exceeds the limit of {self._max_packet_size} bytes"
                    )
                if end - pos - 4 < size:
                    break
                _, packet_id, packet_type = _HEADER.unpack_from(buffer, pos)
                stop = pos + 4 + size
                if buffer[stop - 2 : stop] != _TERMINATOR:
                    raise RconProtocolError(
                        f"packet id {packet_id} does not end with two NUL bytes"
                    )
                packets.append(Packet(packet_id, packet_type, bytes(buffer[pos + 12 : stop - 2])))
                pos = stop
        except RconProtocolError as exc:
            self._error = str(exc)
            self._buffer = bytearray()
            raise
        del buffer[:pos]
        return packets

    def check_complete(self) -> None:
        """Call at end of stream: raise if it stopped in the middle of a packet."""
        if self._error is not None:
            raise RconProtocolError(f"decoder already failed: {self._error}")
        if self._buffer:
            raise RconProtocolError(
                f"stream ended in the middle of a packet ({len(self._buffer)} bytes left over)"
            )


def split_response(
    request_id: int, text: str, *, max_body: int = RESPONSE_BODY_LIMIT
) -> list[Packet]:
    """Split an answer into ``SERVERDATA_RESPONSE_VALUE`` packets with ``request_id``.

    Each body holds at most ``max_body`` bytes of UTF-8 and every body but the
    last is as long as it can be without cutting a character in two, so each
    packet decodes on its own. An empty answer is one packet with an empty
    body. Characters that UTF-8 cannot carry (lone surrogates) become ``?``.
    """
    if not isinstance(max_body, int) or max_body < _MIN_SPLIT_BODY:
        raise ConfigError(
            f"max_body must be an int of at least {_MIN_SPLIT_BODY}, got {max_body!r}"
        )
    data = text.encode("utf-8", errors="replace")
    packets: list[Packet] = []
    start = 0
    total = len(data)
    while True:
        stop = start + max_body
        if stop >= total:
            packets.append(Packet(request_id, SERVERDATA_RESPONSE_VALUE, data[start:]))
            return packets
        while data[stop] & 0xC0 == 0x80:  # a continuation byte: back up to the lead byte
            stop -= 1
        packets.append(Packet(request_id, SERVERDATA_RESPONSE_VALUE, data[start:stop]))
        start = stop
