"""DHCP options: the option table, TLV coding (RFC 2132 §2), long options (RFC 3396),
classless routes (RFC 3442), relay agent sub-options (RFC 3046) and PXE option 43.

Pure functions over bytes; no I/O. Decoding hostile input raises only ``MalformedPacket``;
encoding a bad configuration value raises ``ValueError`` with a line a human can act on;
asking to encode something the wire cannot carry is ``LocalProtocolError`` (our bug).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address, IPv4Network, NetmaskValueError

from pxed.errors import LocalProtocolError, MalformedPacket

__all__ = [
    "OPTION_TABLE",
    "MessageType",
    "OptionCode",
    "OptionKind",
    "OptionSpec",
    "PxeSubOption",
    "decode_options",
    "decode_options_into",
    "decode_routes",
    "encode_options",
    "encode_options_into",
    "encode_pxe_vendor_options",
    "encode_routes",
    "encode_value",
    "option_code_by_name",
    "option_instances",
    "parse_relay_agent_info",
]


class OptionCode(enum.IntEnum):
    """DHCP option codes (IANA "BOOTP Vendor Extensions and DHCP Options")."""

    PAD = 0  # RFC 2132 §3.1
    SUBNET_MASK = 1  # RFC 2132 §3.3
    TIME_OFFSET = 2  # RFC 2132 §3.4 (signed seconds from UTC)
    ROUTER = 3  # RFC 2132 §3.5
    TIME_SERVERS = 4  # RFC 2132 §3.6
    NAME_SERVERS = 5  # RFC 2132 §3.7 (IEN 116)
    DNS_SERVERS = 6  # RFC 2132 §3.8
    LOG_SERVERS = 7  # RFC 2132 §3.9
    COOKIE_SERVERS = 8  # RFC 2132 §3.10
    LPR_SERVERS = 9  # RFC 2132 §3.11
    IMPRESS_SERVERS = 10  # RFC 2132 §3.12
    RESOURCE_LOCATION_SERVERS = 11  # RFC 2132 §3.13
    HOSTNAME = 12  # RFC 2132 §3.14
    BOOT_FILE_SIZE = 13  # RFC 2132 §3.15 (512-octet blocks)
    MERIT_DUMP_FILE = 14  # RFC 2132 §3.16
    DOMAIN_NAME = 15  # RFC 2132 §3.17
    SWAP_SERVER = 16  # RFC 2132 §3.18
    ROOT_PATH = 17  # RFC 2132 §3.19
    EXTENSIONS_PATH = 18  # RFC 2132 §3.20
    IP_FORWARDING = 19  # RFC 2132 §4.1
    NON_LOCAL_SOURCE_ROUTING = 20  # RFC 2132 §4.2
    POLICY_FILTER = 21  # RFC 2132 §4.3 (address/mask pairs)
    MAX_DATAGRAM_REASSEMBLY = 22  # RFC 2132 §4.4
    DEFAULT_IP_TTL = 23  # RFC 2132 §4.5
    PATH_MTU_AGING_TIMEOUT = 24  # RFC 2132 §4.6
    PATH_MTU_PLATEAU_TABLE = 25  # RFC 2132 §4.7
    INTERFACE_MTU = 26  # RFC 2132 §5.1
    ALL_SUBNETS_LOCAL = 27  # RFC 2132 §5.2
    BROADCAST_ADDRESS = 28  # RFC 2132 §5.3
    PERFORM_MASK_DISCOVERY = 29  # RFC 2132 §5.4
    MASK_SUPPLIER = 30  # RFC 2132 §5.5
    ROUTER_DISCOVERY = 31  # RFC 2132 §5.6
    ROUTER_SOLICITATION_ADDRESS = 32  # RFC 2132 §5.7
    STATIC_ROUTES = 33  # RFC 2132 §5.8 (destination/router pairs, classful)
    TRAILER_ENCAPSULATION = 34  # RFC 2132 §6.1
    ARP_CACHE_TIMEOUT = 35  # RFC 2132 §6.2
    ETHERNET_ENCAPSULATION = 36  # RFC 2132 §6.3
    TCP_DEFAULT_TTL = 37  # RFC 2132 §7.1
    TCP_KEEPALIVE_INTERVAL = 38  # RFC 2132 §7.2
    TCP_KEEPALIVE_GARBAGE = 39  # RFC 2132 §7.3
    NIS_DOMAIN = 40  # RFC 2132 §8.1
    NIS_SERVERS = 41  # RFC 2132 §8.2
    NTP_SERVERS = 42  # RFC 2132 §8.3
    VENDOR_SPECIFIC = 43  # RFC 2132 §8.4; PXE sub-options per RFC 4578 §2 / PXE 2.1
    NETBIOS_NAME_SERVERS = 44  # RFC 2132 §8.5
    NETBIOS_DD_SERVERS = 45  # RFC 2132 §8.6
    NETBIOS_NODE_TYPE = 46  # RFC 2132 §8.7
    NETBIOS_SCOPE = 47  # RFC 2132 §8.8
    X_FONT_SERVERS = 48  # RFC 2132 §8.9
    X_DISPLAY_MANAGERS = 49  # RFC 2132 §8.10
    REQUESTED_IP = 50  # RFC 2132 §9.1
    LEASE_TIME = 51  # RFC 2132 §9.2
    OVERLOAD = 52  # RFC 2132 §9.3
    MESSAGE_TYPE = 53  # RFC 2132 §9.6
    SERVER_ID = 54  # RFC 2132 §9.7
    PARAMETER_REQUEST_LIST = 55  # RFC 2132 §9.8
    MESSAGE = 56  # RFC 2132 §9.9
    MAX_MESSAGE_SIZE = 57  # RFC 2132 §9.10
    RENEWAL_TIME = 58  # RFC 2132 §9.11 (T1)
    REBINDING_TIME = 59  # RFC 2132 §9.12 (T2)
    VENDOR_CLASS_ID = 60  # RFC 2132 §9.13
    CLIENT_ID = 61  # RFC 2132 §9.14, RFC 6842 (echoed by the server)
    NISPLUS_DOMAIN = 64  # RFC 2132 §8.11
    NISPLUS_SERVERS = 65  # RFC 2132 §8.12
    TFTP_SERVER_NAME = 66  # RFC 2132 §9.4
    BOOTFILE_NAME = 67  # RFC 2132 §9.5
    MOBILE_IP_HOME_AGENTS = 68  # RFC 2132 §8.13 (may be empty)
    SMTP_SERVERS = 69  # RFC 2132 §8.14
    POP3_SERVERS = 70  # RFC 2132 §8.15
    NNTP_SERVERS = 71  # RFC 2132 §8.16
    WWW_SERVERS = 72  # RFC 2132 §8.17
    FINGER_SERVERS = 73  # RFC 2132 §8.18
    IRC_SERVERS = 74  # RFC 2132 §8.19
    STREETTALK_SERVERS = 75  # RFC 2132 §8.20
    STDA_SERVERS = 76  # RFC 2132 §8.21
    USER_CLASS = 77  # RFC 3004 §4 (iPXE sends the raw string "iPXE")
    RAPID_COMMIT = 80  # RFC 4039 §4 (zero length)
    CLIENT_FQDN = 81  # RFC 4702 §2
    RELAY_AGENT_INFO = 82  # RFC 3046 §2.0
    CLIENT_ARCH = 93  # RFC 4578 §2.1 (list of 16-bit architecture types)
    CLIENT_NDI = 94  # RFC 4578 §2.2 (type 1, major, minor)
    CLIENT_UUID = 97  # RFC 4578 §2.3 (type 0 + 16-octet GUID)
    AUTO_CONFIGURE = 116  # RFC 2563 §2
    SUBNET_SELECTION = 118  # RFC 3011 §3
    DOMAIN_SEARCH = 119  # RFC 3397 §2 (DNS wire-format names)
    CLASSLESS_STATIC_ROUTES = 121  # RFC 3442 §2
    TFTP_SERVER_ADDRESS = 150  # RFC 5859 §3
    IPXE_ENCAP = 175  # iPXE encapsulated options (present = the client is iPXE)
    PXELINUX_MAGIC = 208  # RFC 5071 §4 (F1:00:74:7E, obsolete)
    PXELINUX_CONFIGFILE = 209  # RFC 5071 §5
    PXELINUX_PATHPREFIX = 210  # RFC 5071 §6
    PXELINUX_REBOOTTIME = 211  # RFC 5071 §7
    MS_CLASSLESS_STATIC_ROUTES = 249  # Microsoft's pre-RFC 3442 code, same encoding
    END = 255  # RFC 2132 §3.2


class MessageType(enum.IntEnum):
    """Option 53 values (RFC 2132 §9.6 and later registrations)."""

    DISCOVER = 1  # RFC 2132 §9.6
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8
    FORCERENEW = 9  # RFC 3203 §4
    LEASEQUERY = 10  # RFC 4388 §6.1
    LEASEUNASSIGNED = 11  # RFC 4388 §6.1
    LEASEUNKNOWN = 12  # RFC 4388 §6.1
    LEASEACTIVE = 13  # RFC 4388 §6.1
    BULKLEASEQUERY = 14  # RFC 6926 §6.2.1
    LEASEQUERYDONE = 15  # RFC 6926 §6.2.1
    ACTIVELEASEQUERY = 16  # RFC 7724 §5.2.1
    LEASEQUERYSTATUS = 17  # RFC 7724 §5.2.1
    TLS = 18  # RFC 7724 §5.2.1


class OptionKind(enum.Enum):
    """How an option value is typed in configuration and laid out on the wire."""

    IP = "ip"  # one IPv4 address
    IP_LIST = "ip-list"  # one or more IPv4 addresses
    U8 = "u8"
    U16 = "u16"
    U32 = "u32"
    I32 = "i32"  # signed: only option 2, time offset (RFC 2132 §3.4)
    BOOL = "bool"  # one octet, 0 or 1
    STRING = "string"  # NVT ASCII on the wire (we send UTF-8), no trailing NUL
    BYTES = "bytes"  # opaque; configured as hex "01:02:ab"
    ROUTES = "routes"  # RFC 3442 compact destination descriptors
    U8_LIST = "u8-list"
    U16_LIST = "u16-list"


@dataclass(frozen=True, slots=True)
class OptionSpec:
    name: str
    """Configuration name, lower case with hyphens ("ntp-servers")."""
    kind: OptionKind


_K = OptionKind

OPTION_TABLE: dict[int, OptionSpec] = {
    1: OptionSpec("subnet-mask", _K.IP),
    2: OptionSpec("time-offset", _K.I32),
    3: OptionSpec("router", _K.IP_LIST),
    4: OptionSpec("time-servers", _K.IP_LIST),
    5: OptionSpec("name-servers", _K.IP_LIST),
    6: OptionSpec("dns-servers", _K.IP_LIST),
    7: OptionSpec("log-servers", _K.IP_LIST),
    8: OptionSpec("cookie-servers", _K.IP_LIST),
    9: OptionSpec("lpr-servers", _K.IP_LIST),
    10: OptionSpec("impress-servers", _K.IP_LIST),
    11: OptionSpec("resource-location-servers", _K.IP_LIST),
    12: OptionSpec("hostname", _K.STRING),
    13: OptionSpec("boot-file-size", _K.U16),
    14: OptionSpec("merit-dump-file", _K.STRING),
    15: OptionSpec("domain-name", _K.STRING),
    16: OptionSpec("swap-server", _K.IP),
    17: OptionSpec("root-path", _K.STRING),
    18: OptionSpec("extensions-path", _K.STRING),
    19: OptionSpec("ip-forwarding", _K.BOOL),
    20: OptionSpec("non-local-source-routing", _K.BOOL),
    21: OptionSpec("policy-filter", _K.IP_LIST),
    22: OptionSpec("max-datagram-reassembly", _K.U16),
    23: OptionSpec("default-ip-ttl", _K.U8),
    24: OptionSpec("path-mtu-aging-timeout", _K.U32),
    25: OptionSpec("path-mtu-plateau-table", _K.U16_LIST),
    26: OptionSpec("interface-mtu", _K.U16),
    27: OptionSpec("all-subnets-local", _K.BOOL),
    28: OptionSpec("broadcast-address", _K.IP),
    29: OptionSpec("perform-mask-discovery", _K.BOOL),
    30: OptionSpec("mask-supplier", _K.BOOL),
    31: OptionSpec("router-discovery", _K.BOOL),
    32: OptionSpec("router-solicitation-address", _K.IP),
    33: OptionSpec("static-routes", _K.IP_LIST),
    34: OptionSpec("trailer-encapsulation", _K.BOOL),
    35: OptionSpec("arp-cache-timeout", _K.U32),
    36: OptionSpec("ethernet-encapsulation", _K.BOOL),
    37: OptionSpec("tcp-default-ttl", _K.U8),
    38: OptionSpec("tcp-keepalive-interval", _K.U32),
    39: OptionSpec("tcp-keepalive-garbage", _K.BOOL),
    40: OptionSpec("nis-domain", _K.STRING),
    41: OptionSpec("nis-servers", _K.IP_LIST),
    42: OptionSpec("ntp-servers", _K.IP_LIST),
    43: OptionSpec("vendor-specific", _K.BYTES),
    44: OptionSpec("netbios-name-servers", _K.IP_LIST),
    45: OptionSpec("netbios-dd-servers", _K.IP_LIST),
    46: OptionSpec("netbios-node-type", _K.U8),
    47: OptionSpec("netbios-scope", _K.STRING),
    48: OptionSpec("x-font-servers", _K.IP_LIST),
    49: OptionSpec("x-display-managers", _K.IP_LIST),
    50: OptionSpec("requested-ip", _K.IP),
    51: OptionSpec("lease-time", _K.U32),
    52: OptionSpec("overload", _K.U8),
    53: OptionSpec("message-type", _K.U8),
    54: OptionSpec("server-id", _K.IP),
    55: OptionSpec("parameter-request-list", _K.U8_LIST),
    56: OptionSpec("message", _K.STRING),
    57: OptionSpec("max-message-size", _K.U16),
    58: OptionSpec("renewal-time", _K.U32),
    59: OptionSpec("rebinding-time", _K.U32),
    60: OptionSpec("vendor-class-id", _K.STRING),
    61: OptionSpec("client-id", _K.BYTES),
    64: OptionSpec("nisplus-domain", _K.STRING),
    65: OptionSpec("nisplus-servers", _K.IP_LIST),
    66: OptionSpec("tftp-server-name", _K.STRING),
    67: OptionSpec("bootfile-name", _K.STRING),
    68: OptionSpec("mobile-ip-home-agents", _K.IP_LIST),
    69: OptionSpec("smtp-servers", _K.IP_LIST),
    70: OptionSpec("pop3-servers", _K.IP_LIST),
    71: OptionSpec("nntp-servers", _K.IP_LIST),
    72: OptionSpec("www-servers", _K.IP_LIST),
    73: OptionSpec("finger-servers", _K.IP_LIST),
    74: OptionSpec("irc-servers", _K.IP_LIST),
    75: OptionSpec("streettalk-servers", _K.IP_LIST),
    76: OptionSpec("stda-servers", _K.IP_LIST),
    77: OptionSpec("user-class", _K.BYTES),
    80: OptionSpec("rapid-commit", _K.BYTES),
    81: OptionSpec("client-fqdn", _K.BYTES),
    82: OptionSpec("relay-agent-info", _K.BYTES),
    93: OptionSpec("client-arch", _K.U16_LIST),
    94: OptionSpec("client-ndi", _K.BYTES),
    97: OptionSpec("client-uuid", _K.BYTES),
    116: OptionSpec("auto-configure", _K.U8),
    118: OptionSpec("subnet-selection", _K.IP),
    119: OptionSpec("domain-search", _K.BYTES),
    121: OptionSpec("classless-static-routes", _K.ROUTES),
    150: OptionSpec("tftp-server-address", _K.IP_LIST),
    175: OptionSpec("ipxe-encap", _K.BYTES),
    208: OptionSpec("pxelinux-magic", _K.BYTES),
    209: OptionSpec("pxelinux-configfile", _K.STRING),
    210: OptionSpec("pxelinux-pathprefix", _K.STRING),
    211: OptionSpec("pxelinux-reboottime", _K.U32),
    249: OptionSpec("ms-classless-static-routes", _K.ROUTES),
}

# Names other servers use (ISC dhcpd, dnsmasq), so users can paste what they know.
_ALIASES: dict[str, int] = {
    "netmask": 1,
    "routers": 3,
    "gateway": 3,
    "domain-name-servers": 6,
    "dns-server": 6,
    "dns": 6,
    "host-name": 12,
    "mtu": 26,
    "ntp-server": 42,
    "vendor-encapsulated-options": 43,
    "dhcp-requested-address": 50,
    "dhcp-lease-time": 51,
    "dhcp-option-overload": 52,
    "dhcp-message-type": 53,
    "dhcp-server-identifier": 54,
    "dhcp-parameter-request-list": 55,
    "dhcp-message": 56,
    "dhcp-max-message-size": 57,
    "dhcp-renewal-time": 58,
    "dhcp-rebinding-time": 59,
    "vendor-class-identifier": 60,
    "vendor-class": 60,
    "dhcp-client-identifier": 61,
    "bootfile": 67,
    "boot-file-name": 67,
    "pxe-system-type": 93,
    "classless-static-route": 121,
    "classless-route": 121,
}

_BY_NAME: dict[str, int] = {spec.name: code for code, spec in OPTION_TABLE.items()}
_BY_NAME.update(_ALIASES)

# Length rules of RFC 2132 per kind: (minimum, multiple-of). Options whose RFC allows a zero
# length (68) are special-cased in encode_value.
_LENGTH_RULES: dict[OptionKind, tuple[int, int]] = {
    _K.IP: (4, 4),
    _K.IP_LIST: (4, 4),
    _K.U8: (1, 1),
    _K.U16: (2, 2),
    _K.U32: (4, 4),
    _K.I32: (4, 4),
    _K.BOOL: (1, 1),
    _K.STRING: (1, 1),
    _K.U8_LIST: (1, 1),
    _K.U16_LIST: (2, 2),
    _K.ROUTES: (5, 1),
    _K.BYTES: (0, 1),
}
_PAIR_LISTS = frozenset({21, 33})  # address pairs: the count must be even
_EMPTY_OK = frozenset({68})


def option_code_by_name(name: str) -> int | None:
    """Option code for a configuration name, or None.

    Accepts table names and common aliases in any case, with ``-`` or ``_``
    ("ntp-servers", "Interface_MTU", "routers"), and explicit codes "option-NNN" or "NNN"
    for 1..254 (PAD and END are not options one can set).
    """
    key = name.strip().lower().replace("_", "-")
    code = _BY_NAME.get(key)
    if code is not None:
        return code
    digits = key.removeprefix("option-")
    if digits.isascii() and digits.isdigit() and len(digits) <= 3:
        n = int(digits)
        if 0 < n < 255:
            return n
    return None


# --- configuration values -> wire bytes -------------------------------------------------------


def _describe(code: int) -> str:
    spec = OPTION_TABLE.get(code)
    return f"option {code} ({spec.name})" if spec is not None else f"option {code}"


def _address(code: int, value: object) -> bytes:
    if isinstance(value, IPv4Address):
        return value.packed
    if not isinstance(value, str):
        raise ValueError(
            f"{_describe(code)}: expected an IPv4 address string, got {type(value).__name__}"
        )
    try:
        return IPv4Address(value.strip()).packed
    except AddressValueError:
        raise ValueError(f"{_describe(code)}: {value!r} is not an IPv4 address") from None


def _int(code: int, value: object, lo: int, hi: int) -> int:
    # bool is an int subclass: "mtu = true" is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{_describe(code)}: expected an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{_describe(code)}: {value} is outside {lo}..{hi}")
    return value


def _as_list(value: object) -> list[object]:
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


_HEX_GROUPS = re.compile(r"[0-9a-fA-F]{1,2}([:.\- ][0-9a-fA-F]{1,2})*")
_HEX_RUN = re.compile(r"([0-9a-fA-F]{2})*")


def _hex_bytes(code: int, value: object) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if not isinstance(value, str):
        raise ValueError(f'{_describe(code)}: expected a hex string like "01:02:ab", got {value!r}')
    text = value.strip()
    if _HEX_RUN.fullmatch(text):  # "0102ab" (or "" for an empty option)
        return bytes.fromhex(text)
    if _HEX_GROUPS.fullmatch(text):  # "01:02:ab", "1-2-ab"
        return bytes(int(group, 16) for group in re.split(r"[:.\- ]", text))
    raise ValueError(f'{_describe(code)}: {value!r} is not a hex string like "01:02:ab"')


def _route(code: int, item: object) -> tuple[IPv4Network, IPv4Address]:
    if not isinstance(item, list | tuple) or len(item) != 2:
        raise ValueError(
            f'{_describe(code)}: each route is a pair ["198.18.5.0/24", "198.18.0.1"], got {item!r}'
        )
    dest, router = item
    if isinstance(dest, IPv4Network):
        net = dest
    elif isinstance(dest, str):
        try:
            net = IPv4Network(dest.strip())
        except (AddressValueError, NetmaskValueError):
            raise ValueError(f"{_describe(code)}: {dest!r} is not an IPv4 network") from None
        except ValueError:
            raise ValueError(
                f"{_describe(code)}: {dest!r} has host bits set (did you mean"
                f" {IPv4Network(dest.strip(), strict=False)}?)"
            ) from None
    else:
        raise ValueError(f"{_describe(code)}: route destination {dest!r} is not a network string")
    return net, IPv4Address(_address(code, router))


def encode_value(code: int, value: object, kind: OptionKind | None = None) -> bytes:
    """Wire bytes of a typed configuration value for option ``code``.

    ``kind`` overrides the table (and is required for codes the table does not know).
    Values: str/IPv4Address for IP; a list of those (or one) for IP_LIST; int for U8/U16/
    U32/I32; bool for BOOL; str for STRING; hex string "01:02:ab" (or bytes) for BYTES; a
    list of ints (or one) for U8_LIST/U16_LIST; for ROUTES a list of (network, router)
    pairs. Raises ValueError with a human-readable message on a bad value.
    """
    if not 0 < code < 255:
        raise ValueError(f"option code {code} is outside 1..254")
    if kind is None:
        spec = OPTION_TABLE.get(code)
        if spec is None:
            raise ValueError(
                f"option {code} is not in pxed's table: give its type (one of"
                f" {', '.join(k.value for k in OptionKind)})"
            )
        kind = spec.kind
    data = _encode_kind(code, value, kind)
    minimum, multiple = _LENGTH_RULES[kind]
    if code in _PAIR_LISTS:
        multiple = 8
    if code in _EMPTY_OK:
        minimum = 0
    if len(data) < minimum:
        raise ValueError(f"{_describe(code)}: the value must not be empty")
    if len(data) % multiple:
        raise ValueError(f"{_describe(code)}: expects address pairs (an even number of addresses)")
    return data


def _encode_kind(code: int, value: object, kind: OptionKind) -> bytes:
    if kind is _K.IP:
        return _address(code, value)
    if kind is _K.IP_LIST:
        return b"".join(_address(code, v) for v in _as_list(value))
    if kind is _K.U8:
        return _int(code, value, 0, 0xFF).to_bytes(1, "big")
    if kind is _K.U16:
        return _int(code, value, 0, 0xFFFF).to_bytes(2, "big")
    if kind is _K.U32:
        return _int(code, value, 0, 0xFFFFFFFF).to_bytes(4, "big")
    if kind is _K.I32:
        return _int(code, value, -(2**31), 2**31 - 1).to_bytes(4, "big", signed=True)
    if kind is _K.BOOL:
        if isinstance(value, bool):
            return b"\x01" if value else b"\x00"
        if isinstance(value, int) and value in (0, 1):
            return bytes((value,))
        raise ValueError(f"{_describe(code)}: expected true or false, got {value!r}")
    if kind is _K.STRING:
        if isinstance(value, bytes):
            return value
        if not isinstance(value, str):
            raise ValueError(f"{_describe(code)}: expected a string, got {value!r}")
        if "\x00" in value:
            raise ValueError(f"{_describe(code)}: the string must not contain NUL")
        return value.encode()
    if kind is _K.BYTES:
        return _hex_bytes(code, value)
    if kind is _K.U8_LIST:
        return bytes(_int(code, v, 0, 0xFF) for v in _as_list(value))
    if kind is _K.U16_LIST:
        return b"".join(_int(code, v, 0, 0xFFFF).to_bytes(2, "big") for v in _as_list(value))
    if kind is _K.ROUTES:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{_describe(code)}: expected a list of [network, router] pairs")
        return encode_routes([_route(code, item) for item in value])
    raise ValueError(f"{_describe(code)}: unknown kind {kind!r}")  # pragma: no cover


# --- RFC 3442 classless static routes ---------------------------------------------------------


def encode_routes(routes: Sequence[tuple[IPv4Network, IPv4Address]]) -> bytes:
    """RFC 3442 §2: width, the significant octets of the destination, then the router."""
    out = bytearray()
    for net, router in routes:
        width = net.prefixlen
        out.append(width)
        out += net.network_address.packed[: (width + 7) // 8]
        out += router.packed
    return bytes(out)


def decode_routes(data: bytes) -> list[tuple[IPv4Network, IPv4Address]]:
    """Inverse of encode_routes; MalformedPacket on a bad width or truncated descriptor."""
    if not data:
        raise MalformedPacket("option 121 is empty")
    routes: list[tuple[IPv4Network, IPv4Address]] = []
    i, n = 0, len(data)
    while i < n:
        width = data[i]
        if width > 32:
            raise MalformedPacket(f"option 121 prefix width {width} > 32")
        significant = (width + 7) // 8
        end = i + 1 + significant + 4
        if end > n:
            raise MalformedPacket("option 121 route runs past the end")
        dest = data[i + 1 : i + 1 + significant].ljust(4, b"\x00")
        # Bits past the prefix are meaningless (RFC 3442 §2); mask them instead of failing.
        net = IPv4Network((int.from_bytes(dest, "big"), width), strict=False)
        routes.append((net, IPv4Address(data[end - 4 : end])))
        i = end
    return routes


# --- TLV coding (RFC 2132 §2, RFC 3396) -------------------------------------------------------


def decode_options_into(
    data: bytes, start: int, stop: int, out: dict[int, bytes], area: str
) -> None:
    """Decode TLVs of data[start:stop] into ``out``, joining repeats (RFC 3396 §7).

    ``area`` names the field in error messages ("options", "file", "sname").
    """
    # Repeats are joined once at the end: `+=` per instance is quadratic, and a 64 KiB
    # datagram of one-octet instances would cost tens of milliseconds.
    repeats: dict[int, list[bytes]] | None = None
    i = start
    while i < stop:
        code = data[i]
        if code == 0:  # PAD
            i += 1
            continue
        if code == 255:  # END
            break
        if i + 1 >= stop:
            raise MalformedPacket(f"option {code} without length byte in {area}")
        end = i + 2 + data[i + 1]
        if end > stop:
            raise MalformedPacket(f"option {code} length {data[i + 1]} runs past end of {area}")
        if code in out:
            if repeats is None:
                repeats = {}
            parts = repeats.get(code)
            if parts is None:
                repeats[code] = [out[code], data[i + 2 : end]]
            else:
                parts.append(data[i + 2 : end])
        else:
            out[code] = data[i + 2 : end]
        i = end
    if repeats is not None:
        for code, parts in repeats.items():
            out[code] = b"".join(parts)


def decode_options(data: bytes) -> dict[int, bytes]:
    """TLV parse of one options area: PAD skipped, stops at END (or at the end of data);
    instances of one code are concatenated in order (RFC 3396 §7)."""
    out: dict[int, bytes] = {}
    decode_options_into(data, 0, len(data), out, "options")
    return out


def _check_code(code: int) -> None:
    if not 0 < code < 255:
        raise LocalProtocolError(f"option code {code} cannot carry a value")


def encode_options(options: Iterable[tuple[int, bytes]]) -> bytes:
    """TLVs followed by END; values over 255 octets become consecutive instances (RFC 3396)."""
    out = bytearray()
    encode_options_into(out, options)
    return bytes(out)


def encode_options_into(out: bytearray, options: Iterable[tuple[int, bytes]]) -> None:
    """Append the TLVs of ``options`` and END to ``out`` (build() writes after the header)."""
    for code, value in options:
        if not 0 < code < 255:
            _check_code(code)
        n = len(value)
        if n <= 255:
            out.append(code)
            out.append(n)
            out += value
        else:
            for k in range(0, n, 255):
                chunk = value[k : k + 255]
                out.append(code)
                out.append(len(chunk))
                out += chunk
    out.append(255)


def option_instances(code: int, value: bytes) -> list[bytes]:
    """The encoded TLV instances of one option (RFC 3396 split at 255), without END."""
    _check_code(code)
    if not value:
        return [bytes((code, 0))]
    return [
        bytes((code, len(value[k : k + 255]))) + value[k : k + 255]
        for k in range(0, len(value), 255)
    ]


# --- RFC 3046 relay agent information ---------------------------------------------------------


def parse_relay_agent_info(data: bytes) -> list[tuple[int, bytes]]:
    """Sub-options of option 82 in order (RFC 3046 §2.0: no PAD, no END, at least one)."""
    if not data:
        raise MalformedPacket("option 82 is empty")
    subs: list[tuple[int, bytes]] = []
    i, n = 0, len(data)
    while i < n:
        if i + 1 >= n:
            raise MalformedPacket(f"option 82 sub-option {data[i]} without length byte")
        end = i + 2 + data[i + 1]
        if end > n:
            raise MalformedPacket(
                f"option 82 sub-option {data[i]} length {data[i + 1]} runs past end"
            )
        subs.append((data[i], data[i + 2 : end]))
        i = end
    return subs


# --- PXE vendor options (option 43 in the PXE option space) -----------------------------------


class PxeSubOption(enum.IntEnum):
    """Option 43 sub-options of a PXEClient exchange (PXE 2.1 §2.4.4, RFC 4578 §2)."""

    DISCOVERY_CONTROL = 6  # bit field, see encode_pxe_vendor_options
    BOOT_SERVERS = 8  # type(2) count(1) addresses, repeated
    BOOT_MENU = 9  # type(2) desc-len(1) desc, repeated
    MENU_PROMPT = 10  # timeout(1) prompt
    BOOT_ITEM = 71  # type(2) layer(2)
    END = 255


def pxe_suboptions(value: bytes) -> dict[int, bytes]:
    """Option 43 of a PXE client as sub-option code -> value; a truncated TLV ends it."""
    out: dict[int, bytes] = {}
    i = 0
    while i < len(value):
        code = value[i]
        if code == PxeSubOption.END:
            break
        if code == 0:  # pad
            i += 1
            continue
        if i + 2 > len(value) or i + 2 + value[i + 1] > len(value):
            break
        out[code] = value[i + 2 : i + 2 + value[i + 1]]
        i += 2 + value[i + 1]
    return out


def encode_pxe_vendor_options(
    discovery_control: int = 8,
    boot_menu: Sequence[tuple[int, str]] = (),
    menu_prompt: tuple[int, str] | None = None,
) -> bytes:
    """Option 43 value for a PXE client, terminated by sub-option 255.

    ``discovery_control`` bits (PXE 2.1 §2.4.4.1): 1 no broadcast discovery, 2 no multicast
    discovery, 4 only use PXE_BOOT_SERVERS, 8 download the boot file named in the offer
    directly -- no boot-server discovery and no menu. The default 8 is what a ProxyDHCP that
    names the file wants. ``boot_menu`` is (server type, description) items for sub-option 9;
    ``menu_prompt`` is (timeout seconds, prompt) for sub-option 10 (timeout 255 waits for a
    key press, 0 boots the first item at once).
    """
    if not 0 <= discovery_control <= 255:
        raise ValueError(f"PXE discovery control {discovery_control} is outside 0..255")
    out = bytearray((PxeSubOption.DISCOVERY_CONTROL, 1, discovery_control))
    if boot_menu:
        menu = bytearray()
        for item_type, description in boot_menu:
            if not 0 <= item_type <= 0xFFFF:
                raise ValueError(f"PXE boot menu item type {item_type} is outside 0..65535")
            desc = description.encode()
            if len(desc) > 255:
                raise ValueError(f"PXE boot menu description {description!r} is too long")
            menu += item_type.to_bytes(2, "big") + bytes((len(desc),)) + desc
        if len(menu) > 255:
            raise ValueError("PXE boot menu is longer than 255 octets")
        out += bytes((PxeSubOption.BOOT_MENU, len(menu))) + menu
    if menu_prompt is not None:
        timeout, prompt = menu_prompt
        if not 0 <= timeout <= 255:
            raise ValueError(f"PXE menu prompt timeout {timeout} is outside 0..255")
        text = prompt.encode()
        if len(text) > 254:
            raise ValueError("PXE menu prompt is longer than 254 octets")
        out += bytes((PxeSubOption.MENU_PROMPT, len(text) + 1, timeout)) + text
    out.append(PxeSubOption.END)
    # PXE ROMs do not join RFC 3396 instances: option 43 must fit one TLV.
    if len(out) > 255:
        raise ValueError("PXE vendor options are longer than 255 octets")
    return bytes(out)
