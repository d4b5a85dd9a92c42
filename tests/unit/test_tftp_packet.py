"""TFTP wire codec: every packet type both ways, the hostile shapes from the issue, Hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxed.errors import MalformedPacket, RemoteProtocolError
from pxed.tftp import packet as tp
from pxed.tftp.packet import ErrorCode, Opcode


def test_rrq_roundtrip_with_options() -> None:
    raw = b"\x00\x01pxelinux.0\x00octet\x00blksize\x001468\x00tsize\x000\x00"
    pkt = tp.decode(raw)
    assert pkt == tp.ReadRequest("pxelinux.0", "octet", (("blksize", "1468"), ("tsize", "0")))
    assert tp.encode(pkt) == raw
    assert isinstance(pkt, tp.ReadRequest)
    assert pkt.option("blksize") == "1468"
    assert pkt.option("windowsize") is None


def test_rrq_names_and_mode_are_case_insensitive() -> None:
    pkt = tp.decode(b"\x00\x01f\x00OcTeT\x00BLKSIZE\x00512\x00")
    assert pkt == tp.ReadRequest("f", "octet", (("blksize", "512"),))


def test_rrq_netascii_and_binary_filename() -> None:
    pkt = tp.decode(b"\x00\x01dir/\xff\xfe.cfg\x00netascii\x00")
    assert isinstance(pkt, tp.ReadRequest)
    assert pkt.mode == "netascii"
    assert tp.encode(pkt) == b"\x00\x01dir/\xff\xfe.cfg\x00netascii\x00"


def test_wrq_decodes() -> None:
    assert tp.decode(b"\x00\x02up\x00octet\x00") == tp.WriteRequest("up", "octet")


def test_data_ack_error_oack_roundtrip() -> None:
    for pkt in (
        tp.Data(65535, b"x" * 512),
        tp.Data(0, b""),
        tp.Ack(0),
        tp.Ack(65535),
        tp.Error(ErrorCode.FILE_NOT_FOUND, "file not found"),
        tp.OptionAck((("blksize", "1468"), ("tsize", "123"))),
    ):
        assert tp.decode(tp.encode(pkt)) == pkt


def test_data_header_rolls_over() -> None:
    assert tp.encode_data_header(65536) == b"\x00\x03\x00\x00"
    assert tp.encode_data_header(65537) == b"\x00\x03\x00\x01"


def test_error_without_nul_is_read() -> None:
    assert tp.decode(b"\x00\x05\x00\x08abort") == tp.Error(8, "abort")
    assert tp.decode(b"\x00\x05\x00\x00") == tp.Error(0, "")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", ErrorCode.ILLEGAL_OPERATION),
        (b"\x00", ErrorCode.ILLEGAL_OPERATION),
        (b"\x00\x04", ErrorCode.ILLEGAL_OPERATION),  # ACK without block number
        (b"\x00\x04\x00", ErrorCode.ILLEGAL_OPERATION),
        (b"\x00\x04\x00\x01\x00", ErrorCode.ILLEGAL_OPERATION),
        (b"\x00\x03\x00", ErrorCode.ILLEGAL_OPERATION),
        (b"\x00\x09\x00\x01", ErrorCode.ILLEGAL_OPERATION),
        (b"\x00\x01file", ErrorCode.ILLEGAL_OPERATION),  # no NUL at all
        (b"\x00\x01file\x00octet", ErrorCode.ILLEGAL_OPERATION),  # mode not terminated
        (b"\x00\x01file\x00", ErrorCode.ILLEGAL_OPERATION),  # no mode
        (b"\x00\x01\x00octet\x00", ErrorCode.FILE_NOT_FOUND),  # empty name
        (b"\x00\x01f\x00mail\x00", ErrorCode.ILLEGAL_OPERATION),
        (b"\x00\x01f\x00\xffoctet\x00", ErrorCode.ILLEGAL_OPERATION),
        (b"\x00\x01f\x00octet\x00blksize\x00", ErrorCode.OPTION_NEGOTIATION),  # no value
        (
            b"\x00\x01f\x00octet\x00blksize\x00512\x00BlkSize\x00512\x00",
            ErrorCode.OPTION_NEGOTIATION,
        ),  # repeated
        (b"\x00\x01f\x00octet\x00\x00512\x00", ErrorCode.OPTION_NEGOTIATION),
        (b"\x00\x01f\x00octet\x00bl\xffk\x00512\x00", ErrorCode.OPTION_NEGOTIATION),
        (b"\x00\x01" + b"a" * 600 + b"\x00octet\x00", ErrorCode.ILLEGAL_OPERATION),
        (b"\x00\x06", ErrorCode.ILLEGAL_OPERATION),
        (b"\x00\x06blksize\x00", ErrorCode.OPTION_NEGOTIATION),
    ],
)
def test_malformed_carries_error_code(raw: bytes, code: ErrorCode) -> None:
    with pytest.raises(MalformedPacket) as info:
        tp.decode(raw)
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.error_code == code


def test_broken_error_packet_is_never_answered() -> None:
    with pytest.raises(MalformedPacket) as info:
        tp.decode(b"\x00\x05\x00")  # ERROR of 3 bytes
    assert info.value.error_code is None


def test_opcodes_and_codes_match_the_rfcs() -> None:
    assert [op.value for op in Opcode] == [1, 2, 3, 4, 5, 6]
    assert [code.value for code in ErrorCode] == list(range(9))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8", 8),
        ("65464", 65464),
        ("0", None),
        ("7", None),
        ("65465", None),
        ("abc", None),
        ("", None),
        (" 512", None),
        ("+512", None),
        ("1_024", None),
        ("\u0665\u0661\u0662", None),
    ],
)
def test_parse_uint_is_strict(value: str, expected: int | None) -> None:
    assert tp.parse_uint(value, tp.BLKSIZE_MIN, tp.BLKSIZE_MAX) == expected


@given(st.binary(max_size=700))
def test_decode_raises_only_malformed(raw: bytes) -> None:
    try:
        pkt = tp.decode(raw)
    except MalformedPacket:
        return
    # Whatever decodes encodes again to something that decodes to the same packet.
    assert tp.decode(tp.encode(pkt)) == pkt


_name = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20
)


@given(
    st.binary(min_size=1, max_size=100).filter(lambda b: b"\0" not in b),
    st.sampled_from(["octet", "netascii"]),
    st.dictionaries(
        _name.map(str.lower),
        st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=10),
        max_size=5,
    ),
)
def test_request_roundtrip(name: bytes, mode: str, options: dict[str, str]) -> None:
    pkt = tp.ReadRequest(name.decode("utf-8", "surrogateescape"), mode, tuple(options.items()))
    raw = tp.encode(pkt)
    if len(raw) > tp.MAX_REQUEST:
        return
    assert tp.decode(raw) == pkt


@given(st.integers(0, 0xFFFF), st.binary(max_size=1500))
def test_data_roundtrip(block: int, payload: bytes) -> None:
    assert tp.decode(tp.encode(tp.Data(block, payload))) == tp.Data(block, payload)
