"""Option table, value encoding, TLV coding (RFC 2132, RFC 3396), routes (RFC 3442),
relay agent sub-options (RFC 3046) and PXE option 43."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from pxed.dhcp.options import (
    OPTION_TABLE,
    MessageType,
    OptionCode,
    OptionKind,
    decode_options,
    decode_routes,
    encode_options,
    encode_pxe_vendor_options,
    encode_routes,
    encode_value,
    option_code_by_name,
    option_instances,
    parse_relay_agent_info,
)
from pxed.errors import LocalProtocolError, MalformedPacket

# --- table ------------------------------------------------------------------------------------

# Codes of RFC 2132 with a clear type (62/63 are NetWare, RFC 2242, not 2132).
RFC2132_CODES = [*range(1, 62), *range(64, 77)]


def test_enum_values_from_the_brief() -> None:
    expected = {
        "PAD": 0, "SUBNET_MASK": 1, "ROUTER": 3, "DNS_SERVERS": 6, "HOSTNAME": 12,
        "DOMAIN_NAME": 15, "INTERFACE_MTU": 26, "BROADCAST_ADDRESS": 28, "NTP_SERVERS": 42,
        "VENDOR_SPECIFIC": 43, "REQUESTED_IP": 50, "LEASE_TIME": 51, "OVERLOAD": 52,
        "MESSAGE_TYPE": 53, "SERVER_ID": 54, "PARAMETER_REQUEST_LIST": 55, "MESSAGE": 56,
        "MAX_MESSAGE_SIZE": 57, "RENEWAL_TIME": 58, "REBINDING_TIME": 59,
        "VENDOR_CLASS_ID": 60, "CLIENT_ID": 61, "TFTP_SERVER_NAME": 66, "BOOTFILE_NAME": 67,
        "USER_CLASS": 77, "RELAY_AGENT_INFO": 82, "CLIENT_ARCH": 93, "CLIENT_NDI": 94,
        "CLIENT_UUID": 97, "CLASSLESS_STATIC_ROUTES": 121, "IPXE_ENCAP": 175, "END": 255,
    }  # fmt: skip
    for name, value in expected.items():
        assert OptionCode[name] == value
    assert [m.value for m in list(MessageType)[:8]] == list(range(1, 9))
    assert (int(MessageType.DISCOVER), int(MessageType.INFORM)) == (1, 8)


def test_table_covers_rfc2132_and_the_named_codes() -> None:
    for code in RFC2132_CODES:
        assert code in OPTION_TABLE, code
    for member in OptionCode:
        if member not in (OptionCode.PAD, OptionCode.END):
            assert member.value in OPTION_TABLE, member


def test_table_names_unique_and_resolve_back() -> None:
    names = [spec.name for spec in OPTION_TABLE.values()]
    assert len(names) == len(set(names))
    for code, spec in OPTION_TABLE.items():
        assert option_code_by_name(spec.name) == code


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("ntp-servers", 42),
        ("interface-mtu", 26),
        ("Interface_MTU", 26),
        ("routers", 3),
        ("domain-name-servers", 6),
        ("classless-static-routes", 121),
        ("option-150", 150),
        ("150", 150),
        ("option-254", 254),
    ],
)
def test_option_code_by_name(name: str, code: int) -> None:
    assert option_code_by_name(name) == code


@pytest.mark.parametrize("name", ["no-such-option", "option-0", "option-255", "0", "1000", ""])
def test_option_code_by_name_unknown(name: str) -> None:
    assert option_code_by_name(name) is None


# --- encode_value -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "value", "wire"),
    [
        (1, "255.255.255.0", b"\xff\xff\xff\x00"),
        (1, IPv4Address("255.255.0.0"), b"\xff\xff\x00\x00"),
        (3, ["198.18.0.1", "198.18.0.2"], bytes([198, 18, 0, 1, 198, 18, 0, 2])),
        (6, "198.18.0.53", bytes([198, 18, 0, 53])),  # one address for a list option
        (2, -3600, (-3600).to_bytes(4, "big", signed=True)),
        (23, 64, b"\x40"),
        (26, 1500, b"\x05\xdc"),
        (51, 86400, (86400).to_bytes(4, "big")),
        (19, True, b"\x01"),
        (19, False, b"\x00"),
        (15, "lab.example", b"lab.example"),
        (43, "01:02:ab", b"\x01\x02\xab"),
        (43, "0102ab", b"\x01\x02\xab"),
        (43, "1-2-ab", b"\x01\x02\xab"),
        (43, b"\x07", b"\x07"),
        (80, "", b""),
        (55, [1, 3, 6], b"\x01\x03\x06"),
        (93, [0, 7], b"\x00\x00\x00\x07"),
        (25, 1500, b"\x05\xdc"),
        (68, [], b""),  # RFC 2132 §8.13: zero addresses allowed
        (21, ["198.18.0.0", "255.254.0.0"], bytes([198, 18, 0, 0, 255, 254, 0, 0])),
        (
            121,
            [("198.18.5.0/24", "198.18.0.1"), ("0.0.0.0/0", "198.18.0.254")],
            bytes([24, 198, 18, 5, 198, 18, 0, 1, 0, 198, 18, 0, 254]),
        ),
    ],
)
def test_encode_value(code: int, value: object, wire: bytes) -> None:
    assert encode_value(code, value) == wire


def test_encode_value_explicit_kind_for_unknown_code() -> None:
    assert encode_value(224, "198.19.0.1", OptionKind.IP) == bytes([198, 19, 0, 1])
    assert encode_value(224, 7, OptionKind.U16) == b"\x00\x07"
    assert encode_value(12, "00:01", OptionKind.BYTES) == b"\x00\x01"  # kind overrides


@pytest.mark.parametrize(
    ("code", "value", "kind", "fragment"),
    [
        (1, "255.255.255.256", None, "not an IPv4 address"),
        (1, 24, None, "expected an IPv4 address"),
        (3, [], None, "must not be empty"),
        (3, ["198.18.0.1", "nope"], None, "'nope' is not an IPv4 address"),
        (26, 70000, None, "outside 0..65535"),
        (26, "1500", None, "expected an integer"),
        (26, True, None, "expected an integer"),
        (23, -1, None, "outside 0..255"),
        (19, "yes", None, "expected true or false"),
        (15, "", None, "must not be empty"),
        (15, 5, None, "expected a string"),
        (15, "a\x00b", None, "NUL"),
        (43, "01:0g", None, "not a hex string"),
        (43, "012", None, "not a hex string"),
        (43, 12, None, "hex string"),
        (55, [1, 256], None, "outside 0..255"),
        (21, ["198.18.0.0"], None, "pairs"),
        (121, "198.18.5.0/24", None, "list of [network, router] pairs"),
        (121, [("198.18.5.1/24", "198.18.0.1")], None, "host bits set"),
        (121, [("198.18.5.0/33", "198.18.0.1")], None, "not an IPv4 network"),
        (121, [("198.18.5.0/24",)], None, "pair"),
        (121, [("198.18.5.0/24", "x")], None, "not an IPv4 address"),
        (121, [], None, "must not be empty"),
        (224, "x", None, "give its type"),
        (0, "x", OptionKind.STRING, "outside 1..254"),
        (255, "x", OptionKind.STRING, "outside 1..254"),
    ],
)
def test_encode_value_errors(
    code: int, value: object, kind: OptionKind | None, fragment: str
) -> None:
    with pytest.raises(ValueError) as info:
        encode_value(code, value, kind)
    assert fragment in str(info.value)
    assert type(info.value) is ValueError  # not an ipaddress subclass leaking through


def test_encode_value_messages_name_the_option() -> None:
    with pytest.raises(ValueError, match=r"option 26 \(interface-mtu\)"):
        encode_value(26, 70000)


# --- RFC 3442 ---------------------------------------------------------------------------------

# RFC 3442 §2's table of destination descriptors.
RFC3442_EXAMPLES = [
    ("0.0.0.0/0", bytes([0])),
    ("10.0.0.0/8", bytes([8, 10])),
    ("10.0.0.0/24", bytes([24, 10, 0, 0])),
    ("10.17.0.0/16", bytes([16, 10, 17])),
    ("10.27.129.0/24", bytes([24, 10, 27, 129])),
    ("10.229.0.128/25", bytes([25, 10, 229, 0, 128])),
    ("10.198.122.47/32", bytes([32, 10, 198, 122, 47])),
]


@pytest.mark.parametrize(("network", "descriptor"), RFC3442_EXAMPLES)
def test_routes_rfc3442_examples(network: str, descriptor: bytes) -> None:
    router = IPv4Address("10.0.0.1")
    wire = descriptor + router.packed
    routes = [(IPv4Network(network), router)]
    assert encode_routes(routes) == wire
    assert decode_routes(wire) == routes


def test_routes_all_examples_in_one_option() -> None:
    routers = [IPv4Address(f"198.18.0.{i + 1}") for i in range(len(RFC3442_EXAMPLES))]
    routes = [(IPv4Network(n), r) for (n, _), r in zip(RFC3442_EXAMPLES, routers, strict=True)]
    wire = encode_routes(routes)
    pieces = [d + r.packed for (_, d), r in zip(RFC3442_EXAMPLES, routers, strict=True)]
    assert wire == b"".join(pieces)
    assert decode_routes(wire) == routes


def test_decode_routes_masks_stray_bits() -> None:
    # 10.229.0.129/25: bit past the prefix set; meaningless per RFC 3442, masked.
    assert decode_routes(bytes([25, 10, 229, 0, 129, 1, 2, 3, 4])) == [
        (IPv4Network("10.229.0.128/25"), IPv4Address("1.2.3.4"))
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes([33, 1, 2, 3, 4, 5, 1, 2, 3, 4]),  # width > 32
        bytes([24, 10, 0]),  # destination truncated
        bytes([24, 10, 0, 0, 1, 2, 3]),  # router truncated
        bytes([0, 1, 2, 3, 4, 8]),  # second route truncated
    ],
)
def test_decode_routes_malformed(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        decode_routes(data)


# --- TLV coding -------------------------------------------------------------------------------


def test_decode_options_basic_pad_end() -> None:
    data = b"\x00\x00\x35\x01\x01\x00\x0c\x03abc\xff\x0c\x01z"  # after END is ignored
    assert decode_options(data) == {53: b"\x01", 12: b"abc"}


def test_decode_options_no_end_is_fine() -> None:
    assert decode_options(b"\x35\x01\x05") == {53: b"\x05"}
    assert decode_options(b"") == {}
    assert decode_options(b"\x00\x00") == {}


def test_decode_options_keeps_wire_order_and_zero_length() -> None:
    opts = decode_options(b"\x3d\x02\x01\x02\x50\x00\x35\x01\x03\xff")
    assert list(opts.items()) == [(61, b"\x01\x02"), (80, b""), (53, b"\x03")]


def test_decode_options_concatenates_repeats_rfc3396() -> None:
    data = b"\x2b\x02ab\x35\x01\x01\x2b\x03cde\x2b\x00\x2b\x01f\xff"
    opts = decode_options(data)
    assert opts == {43: b"abcdef", 53: b"\x01"}
    assert list(opts) == [43, 53]  # position of the first instance


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x35", "option 53 without length byte"),
        (b"\x35\x01\x01\x0c", "option 12 without length byte"),
        (b"\x0c\x05abc", "option 12 length 5 runs past end"),
        (b"\x0c\xff", "runs past end"),
    ],
)
def test_decode_options_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedPacket, match=reason):
        decode_options(data)


def test_encode_options_simple_and_end() -> None:
    assert encode_options([]) == b"\xff"
    assert encode_options([(53, b"\x02"), (80, b""), (12, b"ab")]) == (
        b"\x35\x01\x02\x50\x00\x0c\x02ab\xff"
    )


@pytest.mark.parametrize("size", [255, 256, 510, 511, 600, 1000])
def test_encode_options_splits_long_values_rfc3396(size: int) -> None:
    value = bytes(i % 251 for i in range(size))
    wire = encode_options([(43, value), (53, b"\x05")])
    instances = -(-size // 255)
    assert len(wire) == size + 2 * instances + 3 + 1
    # Every instance but the last is full.
    i = 0
    for _ in range(instances - 1):
        assert wire[i] == 43 and wire[i + 1] == 255
        i += 257
    assert wire[i] == 43 and wire[i + 1] == size - 255 * (instances - 1)
    assert decode_options(wire) == {43: value, 53: b"\x05"}


def test_option_instances() -> None:
    assert option_instances(80, b"") == [b"\x50\x00"]
    assert option_instances(12, b"ab") == [b"\x0c\x02ab"]
    parts = option_instances(43, bytes(300))
    assert [len(p) for p in parts] == [257, 47]


@pytest.mark.parametrize("code", [0, 255, 256, -1])
def test_encode_options_refuses_framing_codes(code: int) -> None:
    with pytest.raises(LocalProtocolError):
        encode_options([(code, b"x")])
    with pytest.raises(LocalProtocolError):
        option_instances(code, b"x")


# --- RFC 3046 ---------------------------------------------------------------------------------


def test_relay_agent_info_sub_options() -> None:
    data = b"\x01\x04eth0\x02\x06\x00\x11\x22\x33\x44\x55\x05\x04\xc6\x12\x00\x00"
    assert parse_relay_agent_info(data) == [
        (1, b"eth0"),
        (2, bytes.fromhex("001122334455")),
        (5, bytes([198, 18, 0, 0])),
    ]


def test_relay_agent_info_zero_length_sub_option_allowed() -> None:
    assert parse_relay_agent_info(b"\x01\x00\x02\x01x") == [(1, b""), (2, b"x")]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x01", "without length byte"),
        (b"\x01\x01x\x02", "without length byte"),
        (b"\x01\x05eth0", "runs past end"),
        (b"\x01\x04eth0\x02\x07abc", "runs past end"),
    ],
)
def test_relay_agent_info_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedPacket, match=reason):
        parse_relay_agent_info(data)


# --- PXE option 43 ----------------------------------------------------------------------------


def test_pxe_vendor_options_default() -> None:
    # Sub-option 6 = 8: boot the file named in the offer, no discovery; then END.
    assert encode_pxe_vendor_options() == b"\x06\x01\x08\xff"
    assert encode_pxe_vendor_options(discovery_control=3) == b"\x06\x01\x03\xff"


def test_pxe_vendor_options_menu_and_prompt() -> None:
    value = encode_pxe_vendor_options(
        discovery_control=7,
        boot_menu=[(0, "Local disk"), (0x8000, "Install")],
        menu_prompt=(5, "Press F8"),
    )
    menu = b"\x00\x00\x0aLocal disk" + b"\x80\x00\x07Install"
    assert value == (
        b"\x06\x01\x07" + bytes((9, len(menu))) + menu + b"\x0a\x09\x05Press F8" + b"\xff"
    )
    assert len(value) <= 255


@pytest.mark.parametrize(
    "kwargs",
    [
        {"discovery_control": 256},
        {"discovery_control": -1},
        {"boot_menu": [(70000, "x")]},
        {"boot_menu": [(1, "x" * 256)]},
        {"boot_menu": [(1, "x" * 200), (2, "y" * 200)]},
        {"menu_prompt": (256, "x")},
        {"menu_prompt": (1, "x" * 255)},
        {"boot_menu": [(1, "x" * 200)], "menu_prompt": (1, "y" * 100)},
    ],
)
def test_pxe_vendor_options_refuses_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        encode_pxe_vendor_options(**kwargs)  # type: ignore[arg-type]
