"""The RCON codec on its own: no sockets, no threads."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rcon.source.proto import LittleEndianSignedInt32
from rcon.source.proto import Packet as ReferencePacket
from rcon.source.proto import Type as ReferenceType

from moonbus.admin.rcon_codec import (
    DEFAULT_MAX_PACKET_SIZE,
    RESPONSE_BODY_LIMIT,
    SERVERDATA_AUTH,
    SERVERDATA_AUTH_RESPONSE,
    SERVERDATA_EXECCOMMAND,
    SERVERDATA_RESPONSE_VALUE,
    Packet,
    PacketDecoder,
    encode,
    split_response,
)
from moonbus.errors import AdminError, ConfigError, RconProtocolError

int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
packets = st.builds(
    Packet, id=int32, type=int32, body=st.binary(max_size=DEFAULT_MAX_PACKET_SIZE - 10)
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """Split ``data`` at the given offsets (taken modulo its length, sorted)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def test_constants_match_the_source_protocol() -> None:
    assert (SERVERDATA_AUTH, SERVERDATA_AUTH_RESPONSE) == (3, 2)
    assert (SERVERDATA_EXECCOMMAND, SERVERDATA_RESPONSE_VALUE) == (2, 0)
    assert DEFAULT_MAX_PACKET_SIZE == 4096
    assert RESPONSE_BODY_LIMIT == 4096


def test_encode_known_bytes() -> None:
    wire = encode(Packet(1, SERVERDATA_AUTH, b"pw"))
    assert wire == b"\x0c\x00\x00\x00\x01\x00\x00\x00\x03\x00\x00\x00pw\x00\x00"


@given(st.integers(min_value=0, max_value=2**31 - 1), st.binary(max_size=200))
def test_encode_matches_the_rcon_package(packet_id: int, body: bytes) -> None:
    ours = encode(Packet(packet_id, SERVERDATA_EXECCOMMAND, body))
    reference = ReferencePacket(
        LittleEndianSignedInt32(packet_id), ReferenceType.SERVERDATA_EXECCOMMAND, body
    )
    theirs = bytes(reference)
    assert ours == theirs


@given(st.lists(packets, max_size=8), st.lists(st.integers(min_value=0), max_size=20))
def test_round_trip_across_any_chunk_boundaries(sent: list[Packet], cuts: list[int]) -> None:
    stream = b"".join(encode(p) for p in sent)
    decoder = PacketDecoder()
    received: list[Packet] = []
    for chunk in chunked(stream, cuts):
        received.extend(decoder.feed(chunk))
    assert received == sent
    assert decoder.pending == 0
    decoder.check_complete()


@given(packets, st.integers(min_value=1))
def test_a_truncated_stream_is_reported_at_the_end(packet: Packet, cut: int) -> None:
    wire = encode(packet)
    keep = cut % len(wire)  # 0 .. len-1: always short of a whole packet
    decoder = PacketDecoder()
    assert decoder.feed(wire[:keep]) == []
    assert decoder.pending == keep
    if keep:
        with pytest.raises(RconProtocolError, match="middle of a packet"):
            decoder.check_complete()
    else:
        decoder.check_complete()


def _malformed_streams() -> st.SearchStrategy[bytes]:
    too_small = st.builds(
        lambda size, tail: struct.pack("<i", size) + tail,
        st.integers(min_value=-(2**31), max_value=9),
        st.binary(max_size=30),
    )
    too_big = st.builds(
        lambda size, tail: struct.pack("<i", size) + tail,
        st.integers(min_value=DEFAULT_MAX_PACKET_SIZE + 1, max_value=2**31 - 1),
        st.binary(max_size=30),
    )
    bad_terminator = st.builds(
        lambda head, body, term: struct.pack("<iii", len(body) + 10, *head) + body + term,
        st.tuples(int32, int32),
        st.binary(max_size=50),
        st.binary(min_size=2, max_size=2).filter(lambda t: t != b"\x00\x00"),
    )
    return st.tuples(
        st.lists(packets, max_size=3), st.one_of(too_small, too_big, bad_terminator)
    ).map(lambda pair: b"".join(encode(p) for p in pair[0]) + pair[1])


@given(_malformed_streams(), st.lists(st.integers(min_value=0), max_size=10))
def test_malformed_input_is_always_rejected(stream: bytes, cuts: list[int]) -> None:
    decoder = PacketDecoder()
    with pytest.raises(RconProtocolError):
        for chunk in chunked(stream, cuts):
            decoder.feed(chunk)
    assert decoder.failed
    with pytest.raises(RconProtocolError, match="already failed"):
        decoder.feed(encode(Packet(1, 0, b"")))
    with pytest.raises(RconProtocolError, match="already failed"):
        decoder.check_complete()


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=10))
def test_arbitrary_bytes_never_crash(stream: bytes, cuts: list[int]) -> None:
    decoder = PacketDecoder(max_packet_size=64)
    decoded: list[Packet] = []
    try:
        for chunk in chunked(stream, cuts):
            decoded.extend(decoder.feed(chunk))
    except RconProtocolError:
        assert decoder.failed
        return
    consumed = b"".join(encode(p) for p in decoded)
    assert stream.startswith(consumed)
    assert decoder.pending == len(stream) - len(consumed)


def test_a_header_claiming_100_megabytes_is_refused_after_four_bytes() -> None:
    decoder = PacketDecoder()
    with pytest.raises(RconProtocolError, match="104857600 exceeds the limit of 4096"):
        decoder.feed(struct.pack("<i", 100 * 1024 * 1024))


def test_size_limit_is_inclusive_and_configurable() -> None:
    largest = Packet(7, SERVERDATA_EXECCOMMAND, b"a" * (DEFAULT_MAX_PACKET_SIZE - 10))
    assert PacketDecoder().feed(encode(largest)) == [largest]
    one_more = encode(Packet(7, SERVERDATA_EXECCOMMAND, b"a" * (DEFAULT_MAX_PACKET_SIZE - 9)))
    with pytest.raises(RconProtocolError, match="4097 exceeds"):
        PacketDecoder().feed(one_more)
    assert PacketDecoder(max_packet_size=5000).feed(one_more)[0].body == b"a" * 4087


def test_missing_terminator_names_the_packet() -> None:
    wire = bytearray(encode(Packet(42, SERVERDATA_EXECCOMMAND, b"status")))
    wire[-1] = 0x41
    with pytest.raises(RconProtocolError, match="packet id 42 does not end with two NUL"):
        PacketDecoder().feed(bytes(wire))


def test_bodies_may_contain_nul_bytes() -> None:
    packet = Packet(3, SERVERDATA_RESPONSE_VALUE, b"\x00\x01\x00\x00")
    assert PacketDecoder().feed(encode(packet)) == [packet]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id": 2**31, "type": 0}, "id 2147483648 is outside"),
        ({"id": 1, "type": -(2**31) - 1}, "type -2147483649 is outside"),
        ({"id": "1", "type": 0}, "id must be an int, not str"),
        ({"id": True, "type": 0}, "id must be an int, not bool"),
        ({"id": 1, "type": 0, "body": "text"}, "body must be bytes, not str"),
    ],
)
def test_packet_refuses_what_cannot_go_on_the_wire(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(RconProtocolError, match=message):
        Packet(**kwargs)  # type: ignore[arg-type]


def test_protocol_errors_are_admin_errors() -> None:
    assert issubclass(RconProtocolError, AdminError)


@pytest.mark.parametrize("limit", [9, 0, -5])
def test_decoder_limit_must_allow_a_packet(limit: int) -> None:
    with pytest.raises(ConfigError, match="max_packet_size must be an int of at least 10"):
        PacketDecoder(max_packet_size=limit)


# -- split_response -----------------------------------------------------------


@given(st.text(), st.integers(min_value=4, max_value=64), int32)
def test_split_then_join_gives_the_text_back(text: str, max_body: int, request_id: int) -> None:
    parts = split_response(request_id, text, max_body=max_body)
    assert parts, "even an empty answer is one packet"
    assert all(p.id == request_id and p.type == SERVERDATA_RESPONSE_VALUE for p in parts)
    assert all(len(p.body) <= max_body for p in parts)
    assert "".join(p.body.decode("utf-8") for p in parts) == text  # each part decodes alone
    # every part but the last is as full as it can be without cutting a character
    assert all(len(p.body) > max_body - 4 for p in parts[:-1])


def test_split_default_limit_is_4096_bytes() -> None:
    assert [len(p.body) for p in split_response(1, "x" * 4096)] == [4096]
    assert [len(p.body) for p in split_response(1, "x" * 4097)] == [4096, 1]
    assert [len(p.body) for p in split_response(1, "x" * 20000)] == [4096] * 4 + [3616]
    assert split_response(5, "") == [Packet(5, SERVERDATA_RESPONSE_VALUE, b"")]


def test_split_never_cuts_a_character() -> None:
    text = "€" * 2000  # 3 bytes each: byte 4096 falls inside the 1366th character
    parts = split_response(1, text)
    assert [len(p.body) for p in parts] == [4095, 1905]
    assert "".join(p.body.decode("utf-8") for p in parts) == text


def test_split_replaces_lone_surrogates() -> None:
    assert split_response(1, "a\udc80b")[0].body == b"a?b"


def test_split_limit_must_hold_any_character() -> None:
    with pytest.raises(ConfigError, match="max_body must be an int of at least 4"):
        split_response(1, "x", max_body=3)
