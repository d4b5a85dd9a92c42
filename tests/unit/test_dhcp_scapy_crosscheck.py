"""Cross-check against an independent implementation: scapy.layers.dhcp.

What we build, scapy reads back field by field (its option decoders are typed, so this also
checks our encodings of addresses, integers and RFC 3442 routes); what scapy builds, we read
back field by field.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxed.dhcp.options import MessageType, encode_pxe_vendor_options, encode_value
from pxed.dhcp.packet import BootOp, DhcpPacket, build, parse

scapy_dhcp = pytest.importorskip("scapy.layers.dhcp")
BOOTP: Any = scapy_dhcp.BOOTP
DHCP: Any = scapy_dhcp.DHCP
DHCPOptionsField: Any = scapy_dhcp.DHCPOptionsField

MAC = bytes.fromhex("525400c61201")


def scapy_options(options: list[Any]) -> dict[str, tuple[Any, ...]]:
    """scapy's option list as name -> values; 'end'/'pad' markers dropped."""
    out: dict[str, tuple[Any, ...]] = {}
    for item in options:
        if isinstance(item, tuple):
            assert item[0] not in out, f"{item[0]} repeated"
            out[item[0]] = item[1:]
        else:
            assert item in ("end", "pad"), item
    return out


def assert_bootp_equal(pkt: Any, p: DhcpPacket) -> None:
    assert pkt.op == p.op
    assert pkt.htype == p.htype
    assert pkt.hlen == p.hlen
    assert pkt.hops == p.hops
    assert pkt.xid == p.xid
    assert pkt.secs == p.secs
    assert int(pkt.flags) == p.flags
    assert pkt.ciaddr == str(p.ciaddr)
    assert pkt.yiaddr == str(p.yiaddr)
    assert pkt.siaddr == str(p.siaddr)
    assert pkt.giaddr == str(p.giaddr)
    assert bytes(pkt.chaddr)[: p.hlen] == p.chaddr
    # A dissected chaddr has its 16 octets; one scapy built has what it was given.
    assert bytes(pkt.chaddr).ljust(16, b"\x00")[p.hlen :] == bytes(16 - p.hlen)


# --- ours -> scapy ----------------------------------------------------------------------------

ROUTES = [("198.18.5.0/24", "198.18.0.1"), ("0.0.0.0/0", "198.18.0.254"),
          ("10.229.0.128/25", "10.0.0.1")]  # fmt: skip

# (code, value bytes, scapy option name, what scapy decodes it to)
TYPED_OPTIONS: list[tuple[int, bytes, str, tuple[Any, ...]]] = [
    (53, b"\x02", "message-type", (2,)),
    (54, encode_value(54, "198.18.0.1"), "server_id", ("198.18.0.1",)),
    (51, encode_value(51, 86400), "lease_time", (86400,)),
    (58, encode_value(58, 43200), "renewal_time", (43200,)),
    (59, encode_value(59, 75600), "rebinding_time", (75600,)),
    (1, encode_value(1, "255.255.254.0"), "subnet_mask", ("255.255.254.0",)),
    (3, encode_value(3, ["198.18.0.1", "198.18.0.2"]), "router", ("198.18.0.1", "198.18.0.2")),
    (6, encode_value(6, ["198.18.0.53"]), "name_server", ("198.18.0.53",)),
    (28, encode_value(28, "198.18.1.255"), "broadcast_address", ("198.18.1.255",)),
    (42, encode_value(42, ["198.18.0.123"]), "NTP_server", ("198.18.0.123",)),
    (26, encode_value(26, 9000), "interface-mtu", (9000,)),
    (15, encode_value(15, "lab.example"), "domain", (b"lab.example",)),
    (12, encode_value(12, "node-1"), "hostname", (b"node-1",)),
    (66, encode_value(66, "198.18.0.1"), "tftp_server_name", (b"198.18.0.1",)),
    (67, encode_value(67, "ipxe.efi"), "boot-file-name", (b"ipxe.efi",)),
    (60, b"PXEClient", "vendor_class_id", (b"PXEClient",)),
    (43, encode_pxe_vendor_options(), "vendor_specific", (b"\x06\x01\x08\xff",)),
    (61, b"\x01" + MAC, "client_id", (b"\x01" + MAC,)),
    (82, b"\x01\x04eth0\x02\x02ab", "relay_agent_information", (b"\x01\x04eth0\x02\x02ab",)),
    (121, encode_value(121, ROUTES), "classless_static_routes",
     ([f"{n}:{r}" for n, r in ROUTES],)),
]  # fmt: skip


def test_offer_read_by_scapy() -> None:
    offer = DhcpPacket(
        op=BootOp.BOOTREPLY,
        hops=1,
        xid=0xCAFEBABE,
        secs=4,
        flags=0x8000,
        ciaddr=IPv4Address("198.18.0.11"),
        yiaddr=IPv4Address("198.18.0.10"),
        siaddr=IPv4Address("198.18.0.1"),
        giaddr=IPv4Address("198.19.0.1"),
        chaddr=MAC,
        sname=b"pxed",
        file=b"bios/pxelinux.0",
        options={code: value for code, value, _, _ in TYPED_OPTIONS},
    )
    data = build(offer, max_size=1500)
    pkt = BOOTP(data)
    assert_bootp_equal(pkt, offer)
    assert pkt.sname.rstrip(b"\x00") == b"pxed"
    assert pkt.file.rstrip(b"\x00") == b"bios/pxelinux.0"
    assert pkt.options[:4] == b"\x63\x82\x53\x63"
    got = scapy_options(pkt[DHCP].options)
    assert got == {name: values for _, _, name, values in TYPED_OPTIONS}
    assert pkt[DHCP].options[-1] == "end"


@pytest.mark.parametrize("mtype", list(MessageType)[:8])
def test_message_types_read_by_scapy(mtype: MessageType) -> None:
    p = DhcpPacket(op=2, chaddr=MAC, options={53: bytes([mtype])})
    assert scapy_options(BOOTP(build(p))[DHCP].options) == {"message-type": (int(mtype),)}


def test_overloaded_reply_read_by_scapy() -> None:
    # scapy does not undo overload, which lets us look at each area as it sees it.
    opts = {53: b"\x05", 54: bytes([198, 18, 0, 1])}
    opts |= {code: bytes([code]) * 40 for code in range(224, 235)}
    p = DhcpPacket(op=2, xid=7, chaddr=MAC, options=opts)
    data = build(p)
    assert len(data) <= 548
    pkt = BOOTP(data)
    assert_bootp_equal(pkt, p)
    field = DHCPOptionsField("options", b"")
    areas = [
        pkt[DHCP].options,
        field.m2i(None, bytes(pkt.file)),
        field.m2i(None, bytes(pkt.sname)),
    ]
    seen: list[tuple[Any, ...]] = []
    for area in areas:
        assert "end" in area  # each area terminated (RFC 2132 §9.3)
        seen += [item for item in area if isinstance(item, tuple)]
    assert ("dhcp-option-overload", 3) in seen
    # scapy names no option in 224..234: it hands them back raw with their code.
    raw = {item[0]: item[1] for item in seen if isinstance(item[0], int)}
    assert raw == {code: value for code, value in opts.items() if code >= 224}
    # And scapy sees them in the same order we put them (options, then file, then sname).
    assert [item[0] for item in seen if isinstance(item[0], int)] == sorted(raw)


# --- scapy -> ours ----------------------------------------------------------------------------

CLIENT_OPTIONS: list[Any] = [
    ("client_id", b"\x01" + MAC),
    ("param_req_list", [1, 3, 6, 12, 15, 28, 42, 43, 60, 66, 67, 93, 97, 121]),
    ("max_dhcp_size", 1464),
    ("vendor_class_id", b"PXEClient:Arch:00007:UNDI:003016"),
    ("pxe_client_architecture", b"\x00\x07"),
    ("pxe_client_network_interface", b"\x01\x03\x10"),
    ("pxe_client_machine_identifier", b"\x00" + bytes(range(16))),
    ("user_class", b"iPXE"),
    ("relay_agent_information", b"\x01\x04eth0\x02\x06" + MAC),
    ("hostname", b"node-1"),
]


def check_client_packet(p: DhcpPacket) -> None:
    assert p.client_id == b"\x01" + MAC
    assert p.parameter_request_list == (1, 3, 6, 12, 15, 28, 42, 43, 60, 66, 67, 93, 97, 121)
    assert p.max_message_size == 1464
    assert p.vendor_class == b"PXEClient:Arch:00007:UNDI:003016"
    assert p.client_arch == (7,)
    assert p.options[94] == b"\x01\x03\x10"
    assert p.options[97] == b"\x00" + bytes(range(16))
    assert p.user_class == b"iPXE"
    assert p.is_ipxe is True
    assert p.relay_agent_info == b"\x01\x04eth0\x02\x06" + MAC
    assert p.hostname == "node-1"
    assert p.mac == "52:54:00:c6:12:01"


def test_scapy_discover_read_by_us() -> None:
    options = [("message-type", "discover"), *CLIENT_OPTIONS, "end"]
    pkt = BOOTP(op=1, xid=0x1234, secs=2, flags=0x8000, hops=1, giaddr="198.19.0.1",
                chaddr=MAC) / DHCP(options=options)  # fmt: skip
    p = parse(bytes(pkt))
    assert_bootp_equal(pkt, p)
    assert (p.sname, p.file) == (b"", b"")
    assert p.message_type is MessageType.DISCOVER
    assert p.broadcast_flag is True
    assert p.requested_ip is None and p.server_id is None
    check_client_packet(p)
    assert list(p.options) == [53, 61, 55, 57, 60, 93, 94, 97, 77, 82, 12]


def test_scapy_request_read_by_us() -> None:
    pkt = BOOTP(op=1, xid=0xFEEDF00D, ciaddr="0.0.0.0", chaddr=MAC) / DHCP(
        options=[
            ("message-type", "request"),
            ("requested_addr", "198.18.0.10"),
            ("server_id", "198.18.0.1"),
            ("lease_time", 7200),
            *CLIENT_OPTIONS,
            "end",
            "pad",
            "pad",
        ]
    )
    p = parse(bytes(pkt))
    assert_bootp_equal(pkt, p)
    assert p.message_type is MessageType.REQUEST
    assert p.requested_ip == IPv4Address("198.18.0.10")
    assert p.server_id == IPv4Address("198.18.0.1")
    assert p.lease_time == 7200
    assert p.broadcast_flag is False
    check_client_packet(p)


def test_scapy_renew_with_ciaddr_and_sname_file() -> None:
    bootp = BOOTP(op=1, xid=9, ciaddr="198.18.0.10", chaddr=MAC, sname=b"srv", file=b"pxelinux.0")
    pkt = bootp / DHCP(options=[("message-type", "request"), "end"])
    p = parse(bytes(pkt))
    assert_bootp_equal(pkt, p)
    assert p.ciaddr == IPv4Address("198.18.0.10")
    assert (p.sname, p.file) == (b"srv", b"pxelinux.0")


def test_scapy_duplicated_message_type_rejected() -> None:
    from pxed.errors import MalformedPacket

    pkt = BOOTP(chaddr=MAC) / DHCP(options=[("message-type", 1), ("message-type", 3), "end"])
    with pytest.raises(MalformedPacket, match="option 53 length 2"):
        parse(bytes(pkt))


# --- random packets: ours -> scapy -> ours ----------------------------------------------------

# Codes scapy leaves raw (no typed field), so its view can be compared byte for byte.
RAW_CODES = [12, 15, 43, 60, 61, 66, 77, 94, 97, 224, 230, 250]

packets = st.builds(
    DhcpPacket,
    op=st.sampled_from([1, 2]),
    hops=st.integers(0, 255),
    xid=st.integers(0, 2**32 - 1),
    secs=st.integers(0, 0xFFFF),
    flags=st.sampled_from([0, 0x8000]),
    ciaddr=st.integers(0, 2**32 - 1).map(IPv4Address),
    yiaddr=st.integers(0, 2**32 - 1).map(IPv4Address),
    chaddr=st.binary(min_size=6, max_size=6),
    options=st.dictionaries(
        st.sampled_from(RAW_CODES),
        st.binary(min_size=2, max_size=40),
        max_size=6,
    ).map(lambda d: {53: b"\x01", **d}),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets)
def test_random_packets_agree_with_scapy(p: DhcpPacket) -> None:
    data = build(p)
    pkt = BOOTP(data)
    assert_bootp_equal(pkt, p)
    seen = [item for item in pkt[DHCP].options if isinstance(item, tuple)]
    assert seen[0] == ("message-type", 1)
    assert [item[1] for item in seen[1:]] == [v for c, v in p.options.items() if c != 53]
    assert parse(bytes(pkt)) == p
