"""BOOTP/DHCP message codec: round trips, every rejection rule, overload in and out, budgets."""

from __future__ import annotations

import dataclasses
import struct
from ipaddress import IPv4Address

import pytest

from pxed.dhcp.options import MessageType, decode_options, encode_options
from pxed.dhcp.packet import BootOp, DhcpPacket, build, parse
from pxed.errors import LocalProtocolError, MalformedPacket

MAC = bytes.fromhex("525400c61201")
COOKIE = b"\x63\x82\x53\x63"
ZERO = IPv4Address("0.0.0.0")


def raw(
    options: bytes = b"\x35\x01\x01\xff",
    *,
    op: int = 1,
    htype: int = 1,
    hlen: int = 6,
    hops: int = 0,
    xid: int = 0x01020304,
    secs: int = 0,
    flags: int = 0,
    addrs: tuple[str, str, str, str] = ("0.0.0.0",) * 4,
    chaddr: bytes = MAC,
    sname: bytes = b"",
    file: bytes = b"",
    cookie: bytes = COOKIE,
) -> bytes:
    """A message laid out by hand (RFC 2131 §2), independent of the code under test."""
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        op, htype, hlen, hops, xid, secs, flags,
        *(IPv4Address(a).packed for a in addrs),
        chaddr, sname, file,
    )  # fmt: skip
    return header + cookie + options


def tlv(code: int, value: bytes) -> bytes:
    return bytes((code, len(value))) + value


# --- parsing a hand-made message --------------------------------------------------------------


def test_parse_fields() -> None:
    options = (
        tlv(53, b"\x03")
        + tlv(61, b"\x01" + MAC)
        + tlv(50, bytes([198, 18, 0, 10]))
        + tlv(54, bytes([198, 18, 0, 1]))
        + tlv(51, (3600).to_bytes(4, "big"))
        + tlv(55, bytes([1, 3, 6, 67]))
        + tlv(57, (1500).to_bytes(2, "big"))
        + tlv(60, b"PXEClient:Arch:00007:UNDI:003016")
        + tlv(93, b"\x00\x07\x00\x09")
        + tlv(12, b"node-1\x00")
        + tlv(82, b"\x01\x04eth0")
        + b"\xff"
    )
    data = raw(
        options,
        hops=1,
        xid=0xDEADBEEF,
        secs=3,
        flags=0x8000,
        addrs=("198.18.0.10", "0.0.0.0", "198.18.0.1", "198.19.0.1"),
        sname=b"boot\x00junk",
        file=b"pxelinux.0",
    )
    p = parse(data)
    assert (p.op, p.htype, p.hlen, p.hops, p.xid, p.secs, p.flags) == (
        1, 1, 6, 1, 0xDEADBEEF, 3, 0x8000,
    )  # fmt: skip
    assert p.ciaddr == IPv4Address("198.18.0.10")
    assert p.yiaddr == ZERO
    assert p.siaddr == IPv4Address("198.18.0.1")
    assert p.giaddr == IPv4Address("198.19.0.1")
    assert p.chaddr == MAC
    assert p.sname == b"boot\x00junk"  # only trailing NULs are padding
    assert p.file == b"pxelinux.0"
    assert p.message_type is MessageType.REQUEST
    assert p.mac == "52:54:00:c6:12:01"
    assert p.broadcast_flag is True
    assert p.client_id == b"\x01" + MAC
    assert p.requested_ip == IPv4Address("198.18.0.10")
    assert p.server_id == IPv4Address("198.18.0.1")
    assert p.lease_time == 3600
    assert p.parameter_request_list == (1, 3, 6, 67)
    assert p.max_message_size == 1500
    assert p.client_arch == (7, 9)
    assert p.vendor_class == b"PXEClient:Arch:00007:UNDI:003016"
    assert p.user_class is None
    assert p.is_ipxe is False
    assert p.hostname == "node-1"
    assert p.relay_agent_info == b"\x01\x04eth0"
    assert list(p.options) == [53, 61, 50, 54, 51, 55, 57, 60, 93, 12, 82]


def test_properties_when_absent() -> None:
    p = parse(raw(b"\xff"))
    assert p.message_type is None  # BOOTP
    assert p.client_id is None
    assert p.requested_ip is None
    assert p.server_id is None
    assert p.lease_time is None
    assert p.parameter_request_list == ()
    assert p.max_message_size is None
    assert p.client_arch == ()
    assert p.vendor_class is None
    assert p.user_class is None
    assert p.is_ipxe is False
    assert p.hostname is None
    assert p.relay_agent_info is None
    assert p.broadcast_flag is False


def test_properties_never_raise_on_hand_built_nonsense() -> None:
    # Not reachable through parse(), but properties stay total anyway.
    p = DhcpPacket(op=1, options={53: b"", 50: b"\x01", 51: b"", 57: b"\x01", 93: b"\x00",
                                  77: b"\x09iPX", 12: b"\xff\xfe"})  # fmt: skip
    assert p.message_type is None
    assert p.requested_ip is None
    assert p.lease_time is None
    assert p.max_message_size is None
    assert p.client_arch == ()
    assert p.is_ipxe is False
    assert p.hostname == "\ufffd\ufffd"
    assert DhcpPacket(op=1, options={53: b"\x63"}).message_type is None


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({175: b"\x13\x01\x01"}, True),
        ({175: b""}, True),
        ({77: b"iPXE"}, True),
        ({77: b"\x04iPXE"}, True),  # RFC 3004 framing
        ({77: b"\x03abc\x04iPXE"}, True),
        ({77: b"\x04abcd"}, False),
        ({77: b"iPXE2"}, False),
        ({77: b"\x05iPXE"}, False),
        ({60: b"iPXE"}, False),
        ({}, False),
    ],
)
def test_is_ipxe(options: dict[int, bytes], expected: bool) -> None:
    assert DhcpPacket(op=1, options=options).is_ipxe is expected


def test_message_types_all_known() -> None:
    for value in range(1, 19):
        p = parse(raw(tlv(53, bytes([value])) + b"\xff"))
        assert p.message_type == value
        assert isinstance(p.message_type, MessageType)


def test_accepts_bytearray_and_memoryview() -> None:
    data = raw(tlv(53, b"\x01") + tlv(12, b"h") + b"\xff")
    for variant in (bytearray(data), memoryview(data)):
        p = parse(variant)  # type: ignore[arg-type]
        assert p == parse(data)
        assert all(type(v) is bytes for v in p.options.values())


def test_hlen_bounds_and_chaddr_slice() -> None:
    assert parse(raw(hlen=0)).chaddr == b""
    assert parse(raw(hlen=0)).mac == ""
    long_hw = bytes(range(16))
    p = parse(raw(hlen=16, chaddr=long_hw))
    assert p.chaddr == long_hw
    assert parse(raw(hlen=6, chaddr=MAC + b"\xaa" * 10)).chaddr == MAC  # padding ignored


def test_no_end_option_and_short_bootp() -> None:
    assert parse(raw(b"")).options == {}
    assert parse(raw(b"\x35\x01\x02")).message_type is MessageType.OFFER


def test_options_after_end_ignored() -> None:
    assert parse(raw(b"\x35\x01\x01\xff\x35\x01\x02garbage")).message_type is MessageType.DISCOVER


def test_pad_between_options() -> None:
    p = parse(raw(b"\x00\x00\x35\x01\x01\x00\x0c\x01a\x00\xff"))
    assert p.options == {53: b"\x01", 12: b"a"}


# --- rejections -------------------------------------------------------------------------------

BAD_OPTIONS = [
    # TLV framing
    (b"\x35\x01\x01\x0c", "without length byte"),
    (b"\x35\x01\x01\x0c\x09abc", "runs past end"),
    # 53: length 1, value 1..18; a repeated 53 is length 2 after joining
    (tlv(53, b""), "option 53 length 0"),
    (tlv(53, b"\x01\x03"), "option 53 length 2"),
    (tlv(53, b"\x01") + tlv(53, b"\x03"), "option 53 length 2"),
    (tlv(53, b"\x00"), "option 53 message type 0"),
    (tlv(53, b"\x13"), "option 53 message type 19"),
    (tlv(53, b"\xff"), "option 53 message type 255"),
    # 61: type + at least one octet
    (tlv(61, b""), "option 61 length 0 < 2"),
    (tlv(61, b"\x01"), "option 61 length 1 < 2"),
    # 57: two octets, >= 576
    (tlv(57, b"\x05"), "option 57 length 1"),
    (tlv(57, b"\x05\xdc\x00"), "option 57 length 3"),
    (tlv(57, b"\x02\x3f"), "575 < 576"),
    (tlv(57, b"\x00\x00"), "0 < 576"),
    (tlv(57, b"\x05\xdc") + tlv(57, b"\x05\xdc"), "option 57 length 4"),
    # fixed four-octet options
    (tlv(50, b"\x01\x02\x03"), "option 50 length 3"),
    (tlv(50, b"\x01\x02\x03\x04\x05"), "option 50 length 5"),
    (tlv(50, b"\x01\x02\x03\x04") + tlv(50, b"\x01\x02\x03\x04"), "option 50 length 8"),
    (tlv(54, b"\x01\x02\x03"), "option 54 length 3"),
    (tlv(54, b"\x01\x02\x03\x04") + tlv(54, b"\x01\x02\x03\x04"), "option 54 length 8"),
    (tlv(51, b""), "option 51 length 0"),
    (tlv(58, b"\x00\x00\x0e"), "option 58 length 3"),
    (tlv(59, b"\x00\x00\x0e\x10\x00"), "option 59 length 5"),
    # 52 overload
    (tlv(52, b"\x00"), "option 52"),
    (tlv(52, b"\x04"), "option 52"),
    (tlv(52, b""), "option 52"),
    (tlv(52, b"\x01\x01"), "option 52"),
    (tlv(52, b"\x01") + tlv(52, b"\x01"), "option 52"),
    # 93: non-empty list of u16
    (tlv(93, b""), "option 93 length 0"),
    (tlv(93, b"\x00\x07\x00"), "option 93 length 3"),
    # 55 non-empty
    (tlv(55, b""), "option 55 is empty"),
    # 82 sub-options
    (tlv(82, b""), "option 82 is empty"),
    (tlv(82, b"\x01"), "option 82 sub-option 1 without length"),
    (tlv(82, b"\x01\x05eth0"), "option 82 sub-option 1 length 5 runs past end"),
]


@pytest.mark.parametrize(("options", "reason"), BAD_OPTIONS)
def test_rejects_bad_options(options: bytes, reason: str) -> None:
    with pytest.raises(MalformedPacket, match=reason):
        parse(raw(tlv(12, b"host") + options))  # no END: framing errors reach the end


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated header"),
        (raw()[:239], "truncated header"),
        (raw()[:236], "truncated header"),
        (raw(hlen=17), "hlen 17 > 16"),
        (raw(hlen=255), "hlen 255 > 16"),
        (raw(cookie=b"\x63\x82\x53\x64"), "bad magic cookie"),
        (raw(cookie=b"\x00\x00\x00\x00"), "bad magic cookie"),
        (raw(op=0), "op 0"),
        (raw(op=3), "op 3"),
    ],
)
def test_rejects_bad_headers(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedPacket, match=reason):
        parse(data)


def test_accepts_boundary_values() -> None:
    assert parse(raw(tlv(57, (576).to_bytes(2, "big")))).max_message_size == 576
    assert parse(raw(tlv(61, b"\x00x"))).client_id == b"\x00x"
    assert parse(raw(tlv(93, b"\x00\x00"))).client_arch == (0,)
    assert parse(raw(b"", op=2)).op == BootOp.BOOTREPLY
    assert parse(raw()[:240]).options == {}  # exactly header + cookie


# --- overload (RFC 2131 §4.1, RFC 2132 §9.3, RFC 3396) ----------------------------------------


def test_overload_file() -> None:
    data = raw(
        tlv(53, b"\x05") + tlv(52, b"\x01") + b"\xff",
        file=tlv(67, b"ipxe.efi") + tlv(66, b"198.18.0.1") + b"\xff",
        sname=b"not-options",
    )
    p = parse(data)
    assert p.options == {53: b"\x05", 67: b"ipxe.efi", 66: b"198.18.0.1"}
    assert p.file == b""
    assert p.sname == b"not-options"
    assert 52 not in p.options


def test_overload_sname() -> None:
    data = raw(
        tlv(52, b"\x02") + tlv(53, b"\x05") + b"\xff",
        sname=tlv(15, b"lab.example") + b"\xff",
        file=b"pxelinux.0",
    )
    p = parse(data)
    assert p.options == {53: b"\x05", 15: b"lab.example"}
    assert p.sname == b""
    assert p.file == b"pxelinux.0"


def test_overload_both_joins_in_rfc3396_order() -> None:
    # One option split over options, file and sname: joined options -> file -> sname.
    data = raw(
        tlv(43, b"AAA") + tlv(52, b"\x03") + tlv(53, b"\x02") + b"\xff",
        file=b"\x00" + tlv(43, b"BBB") + tlv(12, b"h") + b"\xff",
        sname=tlv(43, b"CCC") + b"\xff",
    )
    p = parse(data)
    assert p.options[43] == b"AAABBBCCC"
    assert list(p.options) == [43, 53, 12]
    assert p.file == b"" and p.sname == b""


def test_overload_without_end_in_areas_is_accepted() -> None:
    data = raw(tlv(52, b"\x01") + b"\xff", file=tlv(12, b"x") + b"\x00" * 125)
    assert parse(data).options == {12: b"x"}
    full = tlv(12, b"y" * 126)  # fills the whole 128-octet file field
    assert parse(raw(tlv(52, b"\x01"), file=full)).options == {12: b"y" * 126}


@pytest.mark.parametrize(
    ("overload", "file", "sname", "reason"),
    [
        (1, b"\x0c\xf0abc", b"", "runs past end of file"),
        (1, b"\x00" * 127 + b"\x0c", b"", "without length byte in file"),
        (2, b"", b"\x0c\x40" + b"x" * 30, "runs past end of sname"),
        (3, tlv(12, b"x") + b"\xff", tlv(12, bytes(61)) + b"\x35", "without length byte in sname"),
        (1, tlv(52, b"\x02") + b"\xff", b"", "option 52"),
        (1, tlv(53, b"\x01") + b"\xff", b"", "option 53 length 2"),  # repeat via file
        (2, b"", tlv(57, b"\x02\x00") + b"\xff", "512 < 576"),
    ],
)
def test_overload_garbage_rejected(overload: int, file: bytes, sname: bytes, reason: str) -> None:
    data = raw(tlv(53, b"\x01") + tlv(52, bytes([overload])) + b"\xff", file=file, sname=sname)
    with pytest.raises(MalformedPacket, match=reason):
        parse(data)


def test_file_garbage_ignored_without_overload() -> None:
    p = parse(raw(file=b"\x0c\x20abc", sname=b"\x35"))
    assert p.file == b"\x0c\x20abc"
    assert p.sname == b"\x35"


# --- build ------------------------------------------------------------------------------------


def test_build_matches_hand_layout_and_pads_to_300() -> None:
    p = DhcpPacket(op=1, xid=0x01020304, chaddr=MAC, options={53: b"\x01"})
    data = build(p)
    expected = raw(b"\x35\x01\x01\xff")
    assert len(data) == 300
    assert data == expected + bytes(300 - len(expected))


def test_build_no_padding_needed() -> None:
    p = DhcpPacket(op=2, chaddr=MAC, options={53: b"\x02", 43: bytes(100)})
    data = build(p)
    assert len(data) == 240 + 3 + 102 + 1


def test_round_trip_typical_offer() -> None:
    offer = DhcpPacket(
        op=BootOp.BOOTREPLY,
        xid=0xCAFEBABE,
        flags=0x8000,
        yiaddr=IPv4Address("198.18.0.10"),
        siaddr=IPv4Address("198.18.0.1"),
        giaddr=IPv4Address("198.19.0.1"),
        chaddr=MAC,
        sname=b"pxed",
        file=b"bios/pxelinux.0",
        options={
            53: b"\x02",
            54: bytes([198, 18, 0, 1]),
            51: (3600).to_bytes(4, "big"),
            1: bytes([255, 255, 255, 0]),
            3: bytes([198, 18, 0, 1]),
            6: bytes([198, 18, 0, 1, 198, 18, 0, 2]),
            60: b"PXEClient",
            43: b"\x06\x01\x08\xff",
            61: b"\x01" + MAC,
            82: b"\x01\x04eth0",
        },
    )
    assert parse(build(offer)) == offer


def test_round_trip_bootp_and_odd_hardware() -> None:
    p = DhcpPacket(op=1, htype=32, hlen=16, hops=3, chaddr=bytes(range(16)), file=b"x" * 128,
                   sname=b"s" * 64)  # fmt: skip
    assert parse(build(p)) == p
    p = DhcpPacket(op=1, hlen=0, chaddr=b"")
    assert parse(build(p)) == p


def test_build_ignores_overload_pad_end_in_options() -> None:
    p = DhcpPacket(op=2, chaddr=MAC, options={53: b"\x02", 52: b"\x03", 0: b"", 255: b""})
    assert parse(build(p)).options == {53: b"\x02"}


def test_build_long_option_split_rfc3396_round_trip() -> None:
    p = DhcpPacket(op=2, chaddr=MAC, options={53: b"\x05", 43: bytes(range(256)) * 2})
    data = build(p, max_size=1500)
    assert parse(data) == p
    opts = data[240:]
    assert opts[3:5] == b"\x2b\xff" and opts[5 + 255 : 5 + 257] == b"\x2b\xff"


def _big_options(count: int, size: int = 40) -> dict[int, bytes]:
    opts = {53: b"\x05", 54: bytes([198, 18, 0, 1])}
    for code in range(128, 128 + count):
        opts[code] = bytes([code]) * size
    return opts


def test_build_spills_into_file() -> None:
    opts = _big_options(8)  # 9 + 8*42 = 345 > 548-240-1
    p = DhcpPacket(op=2, chaddr=MAC, sname=b"keep-me", options=opts)
    data = build(p)
    assert len(data) <= 548
    top = decode_options(data[240:])
    assert top[52] == b"\x01"
    assert data[44:51] == b"keep-me"
    parsed = parse(data)
    assert parsed.options == opts
    assert list(parsed.options) == list(opts)
    assert parsed.sname == b"keep-me"
    assert parsed.file == b""


def test_build_spills_into_file_and_sname() -> None:
    opts = _big_options(11)  # 7 fit the options field, 3 the file, 1 goes to sname
    p = DhcpPacket(op=2, chaddr=MAC, options=opts)
    data = build(p)
    assert len(data) <= 548
    assert decode_options(data[240:])[52] == b"\x03"
    # Each area ends with END (RFC 2132 §9.3).
    assert b"\xff" in data[108:236] and b"\xff" in data[44:108]
    assert parse(data) == p


def test_build_spills_into_sname_only_when_file_is_used() -> None:
    opts = _big_options(14, size=20)
    p = DhcpPacket(op=2, chaddr=MAC, file=b"ipxe.efi", options=opts)
    data = build(p)
    assert len(data) <= 548
    assert decode_options(data[240:])[52] == b"\x02"
    assert parse(data) == p


def test_build_drops_from_the_end_never_53_54() -> None:
    big = {code: bytes([code]) * 40 for code in range(128, 140)}
    opts = {1: bytes(4), **big, 53: b"\x05", 54: bytes([198, 18, 0, 1])}  # 53/54 last
    p = DhcpPacket(op=2, chaddr=MAC, file=b"f", sname=b"s", options=opts)  # no overload room
    data = build(p)
    assert len(data) <= 548
    got = parse(data)
    # 307 octets of options room: 53+54 (9) + 1 (6) + six 42-octet options (252) = 267;
    # a seventh would make 309.
    assert list(got.options) == [1, 128, 129, 130, 131, 132, 133, 53, 54]
    assert all(got.options[c] == opts[c] for c in got.options)
    assert (got.file, got.sname) == (b"f", b"s")


@pytest.mark.parametrize("max_size", [576, 600, 1000, 1500, 9000])
def test_build_never_exceeds_budget(max_size: int) -> None:
    opts = _big_options(120, size=60)
    for file, sname in ((b"", b""), (b"f", b""), (b"f", b"s")):
        p = DhcpPacket(op=2, chaddr=MAC, file=file, sname=sname, options=opts)
        data = build(p, max_size=max_size)
        assert len(data) <= max_size - 28
        got = parse(data)
        assert all(opts[c] == v for c, v in got.options.items())


def test_build_uses_more_room_when_allowed() -> None:
    opts = _big_options(20)
    p = DhcpPacket(op=2, chaddr=MAC, file=b"f", options=opts)
    assert parse(build(p, max_size=1500)) == p
    assert len(parse(build(p)).options) < len(opts)


def test_build_option_too_big_for_any_area_is_dropped() -> None:
    # 43 needs 404 octets: its second 147-octet instance fits no area, so after dropping 12
    # (last) it goes too; whole instances never straddle areas.
    p = DhcpPacket(op=2, chaddr=MAC, options={53: b"\x05", 43: bytes(400), 12: b"host"})
    data = build(p)
    assert len(data) <= 548
    assert parse(data).options == {53: b"\x05"}
    assert parse(build(p, max_size=1500)) == p


@pytest.mark.parametrize(
    ("packet", "max_size", "reason"),
    [
        (DhcpPacket(op=1, hlen=17, chaddr=bytes(17)), 576, "hlen 17"),
        (DhcpPacket(op=1, hlen=6, chaddr=bytes(5)), 576, "chaddr has 5 octets"),
        (DhcpPacket(op=1, sname=b"s" * 65), 576, "sname"),
        (DhcpPacket(op=1, file=b"f" * 129), 576, "file"),
        (DhcpPacket(op=1), 575, "max_size 575"),
        (DhcpPacket(op=256), 576, "out of range"),
        (DhcpPacket(op=1, xid=2**32), 576, "out of range"),
        (DhcpPacket(op=1, flags=-1), 576, "out of range"),
        (DhcpPacket(op=1, options={53: b"\x01", 54: bytes(600)}), 576, "53 and 54"),
        (DhcpPacket(op=1, options={300: b""}), 576, "option code 300"),
    ],
)
def test_build_refuses_impossible_packets(packet: DhcpPacket, max_size: int, reason: str) -> None:
    with pytest.raises(LocalProtocolError, match=reason):
        build(packet, max_size)


def test_packet_is_frozen_and_defaults() -> None:
    p = DhcpPacket(op=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.xid = 5  # type: ignore[misc]
    assert (p.htype, p.hlen, p.chaddr, p.ciaddr, p.options) == (1, 6, bytes(6), ZERO, {})
    assert DhcpPacket(op=1).options is not DhcpPacket(op=1).options
    assert not hasattr(p, "__dict__")


def test_parsed_packet_equals_constructed() -> None:
    # parse() fills slots directly for speed; the result must be an ordinary instance.
    opts = {53: b"\x01", 12: b"h"}
    p = parse(raw(encode_options(opts.items())))
    q = DhcpPacket(op=1, xid=0x01020304, chaddr=MAC, options=opts)
    assert p == q
    assert hash(dataclasses.astuple(p)[:14]) == hash(dataclasses.astuple(q)[:14])
    assert repr(p) == repr(q)
    assert dataclasses.replace(p, xid=7).xid == 7
