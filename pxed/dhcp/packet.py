"""BOOTP/DHCP message <-> DhcpPacket (RFC 951, RFC 2131 §2, RFC 2132 §9.3, RFC 3396).

``parse`` turns untrusted bytes into a DhcpPacket or raises ``MalformedPacket`` with a short
reason; nothing else escapes it. Option 52 (overload) is undone on the way in: options that
lived in ``file``/``sname`` are merged into ``options`` and those fields come back empty.
``build`` does the reverse and decides overload itself, within the client's size budget.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Address

from pxed.dhcp.options import (
    MessageType,
    decode_options_into,
    encode_options_into,
    option_instances,
    parse_relay_agent_info,
)
from pxed.errors import LocalProtocolError, MalformedPacket

__all__ = [
    "BOOTP_MIN_SIZE",
    "MAGIC_COOKIE",
    "MIN_MAX_MESSAGE_SIZE",
    "BootOp",
    "DhcpPacket",
    "build",
    "pack_reply",
    "parse",
]


class BootOp(enum.IntEnum):
    """The ``op`` field (RFC 951 §3, RFC 2131 §2)."""

    BOOTREQUEST = 1
    BOOTREPLY = 2


# op htype hlen hops | xid | secs flags | ciaddr yiaddr siaddr giaddr | chaddr sname file
_HEADER = struct.Struct("!BBBBIHHIIII16s64s128s")
HEADER_SIZE = _HEADER.size  # 236
MAGIC_COOKIE = b"\x63\x82\x53\x63"  # RFC 2131 §3, RFC 1497
_HEADER_AND_COOKIE = struct.Struct("!BBBBIHHIIII16s64s128s4s")
_OPTIONS_START = HEADER_SIZE + 4
_SNAME_START, _FILE_START = 44, 108
BOOTP_MIN_SIZE = 300  # RFC 951: 64-octet vendor area; BOOTP clients and relays expect it
MIN_MAX_MESSAGE_SIZE = 576  # RFC 2132 §9.10 / RFC 2131 §2: every client accepts 576
IP_UDP_OVERHEAD = 28  # counted in the maximum message size (RFC 2132 §9.10)
_SNAME_SIZE, _FILE_SIZE = 64, 128

_ZERO = IPv4Address(0)
_MESSAGE_TYPES: tuple[MessageType | None, ...] = (None, *MessageType)
_FIXED_LENGTHS = ((53, 1), (50, 4), (54, 4), (51, 4), (58, 4), (59, 4), (57, 2))
_NEVER_DROPPED = frozenset({53, 54})
_NOT_CARRIED = frozenset({0, 52, 255})  # PAD/END are framing; build decides overload itself


@dataclass(frozen=True, slots=True)
class DhcpPacket:
    """One BOOTP/DHCP message. ``options`` keeps wire order; values are raw bytes."""

    op: int
    """BootOp: 1 request, 2 reply."""
    htype: int = 1
    """Hardware type (ARP hrd), 1 = Ethernet."""
    hlen: int = 6
    hops: int = 0
    xid: int = 0
    secs: int = 0
    flags: int = 0
    """0x8000 = the client wants broadcast replies (RFC 2131 §2)."""
    ciaddr: IPv4Address = _ZERO
    yiaddr: IPv4Address = _ZERO
    siaddr: IPv4Address = _ZERO
    giaddr: IPv4Address = _ZERO
    chaddr: bytes = bytes(6)
    """Exactly ``hlen`` octets."""
    sname: bytes = b""
    """Server host name, trailing NULs stripped; empty when it carried options."""
    file: bytes = b""
    """Boot file name, trailing NULs stripped; empty when it carried options."""
    options: dict[int, bytes] = field(default_factory=dict)
    """Code -> value, repeated instances joined (RFC 3396); PAD, END and 52 never appear."""

    @property
    def message_type(self) -> MessageType | None:
        value = self.options.get(53)
        if value is None or len(value) != 1 or not 0 < value[0] < len(_MESSAGE_TYPES):
            return None
        return _MESSAGE_TYPES[value[0]]

    @property
    def mac(self) -> str:
        return self.chaddr.hex(":")

    @property
    def broadcast_flag(self) -> bool:
        return bool(self.flags & 0x8000)

    @property
    def client_id(self) -> bytes | None:
        return self.options.get(61)

    @property
    def requested_ip(self) -> IPv4Address | None:
        return _address_option(self.options.get(50))

    @property
    def server_id(self) -> IPv4Address | None:
        return _address_option(self.options.get(54))

    @property
    def lease_time(self) -> int | None:
        value = self.options.get(51)
        return int.from_bytes(value, "big") if value is not None and len(value) == 4 else None

    @property
    def parameter_request_list(self) -> tuple[int, ...]:
        return tuple(self.options.get(55, b""))

    @property
    def max_message_size(self) -> int | None:
        value = self.options.get(57)
        return int.from_bytes(value, "big") if value is not None and len(value) == 2 else None

    @property
    def client_arch(self) -> tuple[int, ...]:
        value = self.options.get(93, b"")
        return tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value) - 1, 2))

    @property
    def vendor_class(self) -> bytes | None:
        return self.options.get(60)

    @property
    def user_class(self) -> bytes | None:
        return self.options.get(77)

    @property
    def is_ipxe(self) -> bool:
        if 175 in self.options:
            return True
        value = self.options.get(77)
        if value is None:
            return False
        if value == b"iPXE":  # iPXE sends the bare string, not RFC 3004 framing
            return True
        i, n = 0, len(value)
        while i < n:  # RFC 3004 §4: length-prefixed user class instances
            end = i + 1 + value[i]
            if end <= n and value[i + 1 : end] == b"iPXE":
                return True
            i = end
        return False

    @property
    def hostname(self) -> str | None:
        value = self.options.get(12)
        # RFC 2132 §2: receivers must tolerate a trailing NUL.
        return None if value is None else value.rstrip(b"\x00").decode("utf-8", "replace")

    @property
    def relay_agent_info(self) -> bytes | None:
        return self.options.get(82)


def _address_option(value: bytes | None) -> IPv4Address | None:
    return IPv4Address(value) if value is not None and len(value) == 4 else None


_new = object.__new__
# The slot descriptors' setters, in field order (see parse()).
(
    _set_op,
    _set_htype,
    _set_hlen,
    _set_hops,
    _set_xid,
    _set_secs,
    _set_flags,
    _set_ciaddr,
    _set_yiaddr,
    _set_siaddr,
    _set_giaddr,
    _set_chaddr,
    _set_sname,
    _set_file,
    _set_options,
) = (DhcpPacket.__dict__[f.name].__set__ for f in fields(DhcpPacket))


# --- parse ------------------------------------------------------------------------------------


def parse(data: bytes) -> DhcpPacket:
    """Decode one BOOTP/DHCP message; MalformedPacket on anything not well-formed."""
    if len(data) < _OPTIONS_START:
        raise MalformedPacket("truncated header")
    if type(data) is not bytes:  # option values must be immutable bytes
        data = bytes(data)
    (op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, chaddr, sname, file) = (
        _HEADER.unpack_from(data)
    )
    if op != 1 and op != 2:
        raise MalformedPacket(f"op {op} is not 1 or 2")
    if hlen > 16:
        raise MalformedPacket(f"hlen {hlen} > 16")
    if data[HEADER_SIZE:_OPTIONS_START] != MAGIC_COOKIE:
        raise MalformedPacket("bad magic cookie")
    options: dict[int, bytes] = {}
    decode_options_into(data, _OPTIONS_START, len(data), options, "options")
    overload = options.pop(52, None)
    if overload is not None:
        # RFC 2131 §4.1 / RFC 3396 §5: options field, then file, then sname.
        if len(overload) != 1 or not 1 <= overload[0] <= 3:
            raise MalformedPacket(f"option 52 value {overload.hex()} not 1, 2 or 3")
        if overload[0] & 1:
            decode_options_into(data, _FILE_START, HEADER_SIZE, options, "file")
            file = b""
        if overload[0] & 2:
            decode_options_into(data, _SNAME_START, _FILE_START, options, "sname")
            sname = b""
        if 52 in options:
            raise MalformedPacket("option 52 inside file/sname")
    if options:
        _validate(options)
    # What DhcpPacket.__init__ does, at half the cost: a frozen dataclass __init__ goes
    # through object.__setattr__ per field, which is ~1.7 us of a ~4 us parse+build budget.
    packet: DhcpPacket = _new(DhcpPacket)
    _set_op(packet, op)
    _set_htype(packet, htype)
    _set_hlen(packet, hlen)
    _set_hops(packet, hops)
    _set_xid(packet, xid)
    _set_secs(packet, secs)
    _set_flags(packet, flags)
    _set_ciaddr(packet, _ZERO if ci == 0 else IPv4Address(ci))
    _set_yiaddr(packet, _ZERO if yi == 0 else IPv4Address(yi))
    _set_siaddr(packet, _ZERO if si == 0 else IPv4Address(si))
    _set_giaddr(packet, _ZERO if gi == 0 else IPv4Address(gi))
    _set_chaddr(packet, chaddr[:hlen])
    _set_sname(packet, sname.rstrip(b"\x00"))
    _set_file(packet, file.rstrip(b"\x00"))
    _set_options(packet, options)
    return packet


def _validate(options: dict[int, bytes]) -> None:
    """Length and value rules, after RFC 3396 joining (so a repeated 53 fails here)."""
    get = options.get
    for code, length in _FIXED_LENGTHS:
        value = get(code)
        if value is not None and len(value) != length:
            raise MalformedPacket(f"option {code} length {len(value)} != {length}")
    value = get(53)
    if value is not None and not 1 <= value[0] <= 18:
        raise MalformedPacket(f"option 53 message type {value[0]} unknown")
    value = get(57)
    if value is not None and (value[0] << 8 | value[1]) < MIN_MAX_MESSAGE_SIZE:
        raise MalformedPacket(f"option 57 max message size {value[0] << 8 | value[1]} < 576")
    value = get(61)
    if value is not None and len(value) < 2:  # RFC 2132 §9.14: type + at least one octet
        raise MalformedPacket(f"option 61 length {len(value)} < 2")
    value = get(55)
    if value is not None and not value:
        raise MalformedPacket("option 55 is empty")
    value = get(93)
    if value is not None and (not value or len(value) % 2):
        raise MalformedPacket(f"option 93 length {len(value)} is not a positive even number")
    value = get(82)
    if value is not None:
        parse_relay_agent_info(value)


# --- build ------------------------------------------------------------------------------------


def build(packet: DhcpPacket, max_size: int = MIN_MAX_MESSAGE_SIZE) -> bytes:
    """Encode ``packet`` for a client that accepts ``max_size``-octet IP datagrams.

    Options that do not fit spill into empty ``file``/``sname`` fields (option 52), then are
    dropped from the end of the packet's option order, never 53 or 54. The result is padded
    to 300 octets and never exceeds ``max_size - 28``.
    """
    hlen = packet.hlen
    if not 0 <= hlen <= 16:
        raise LocalProtocolError(f"hlen {hlen} outside 0..16")
    if len(packet.chaddr) != hlen:
        raise LocalProtocolError(f"chaddr has {len(packet.chaddr)} octets, hlen is {hlen}")
    if len(packet.sname) > _SNAME_SIZE:
        raise LocalProtocolError(f"sname has {len(packet.sname)} octets > 64")
    if len(packet.file) > _FILE_SIZE:
        raise LocalProtocolError(f"file has {len(packet.file)} octets > 128")
    if max_size < MIN_MAX_MESSAGE_SIZE:
        raise LocalProtocolError(f"max_size {max_size} < 576")
    budget = max_size - IP_UDP_OVERHEAD
    items = packet.options.items()
    if not _NOT_CARRIED.isdisjoint(packet.options):
        items = {c: v for c, v in items if c not in _NOT_CARRIED}.items()
    sname, file = packet.sname, packet.file
    out = bytearray(_OPTIONS_START)
    encode_options_into(out, items)
    if len(out) > budget:
        body, sname, file = _fit(list(items), budget, sname, file)
        out[_OPTIONS_START:] = body
    try:
        _HEADER_AND_COOKIE.pack_into(
            out,
            0,
            packet.op,
            packet.htype,
            hlen,
            packet.hops,
            packet.xid,
            packet.secs,
            packet.flags,
            int(packet.ciaddr),
            int(packet.yiaddr),
            int(packet.siaddr),
            int(packet.giaddr),
            packet.chaddr,
            sname,
            file,
            MAGIC_COOKIE,
        )
    except struct.error as exc:
        raise LocalProtocolError(f"header field out of range: {exc}") from None
    if len(out) < BOOTP_MIN_SIZE:
        out += bytes(BOOTP_MIN_SIZE - len(out))
    return bytes(out)


def pack_reply(
    request: DhcpPacket,
    *,
    flags: int,
    ciaddr: int,
    yiaddr: int,
    siaddr: int,
    options: bytes,
    max_size: int,
) -> bytes | None:
    """A BOOTREPLY to ``request`` with an already encoded options area (TLVs and END).

    What ``build`` makes of the same reply when the options fit the options field, for
    the server's common case without the DhcpPacket in between; None when they do not
    fit, and the caller goes through ``build`` (overload, dropping). ``request`` came from
    ``parse``, so its chaddr is ``hlen`` octets of at most 16.
    """
    size = _OPTIONS_START + len(options)
    if size > max_size - IP_UDP_OVERHEAD:
        return None
    header = _HEADER_AND_COOKIE.pack(
        2,
        request.htype,
        request.hlen,
        0,
        request.xid,
        0,
        flags,
        ciaddr,
        yiaddr,
        siaddr,
        int(request.giaddr),
        request.chaddr,
        b"",
        b"",
        MAGIC_COOKIE,
    )
    if size < BOOTP_MIN_SIZE:
        return header + options + bytes(BOOTP_MIN_SIZE - size)
    return header + options


def _fit(
    items: list[tuple[int, bytes]], budget: int, sname: bytes, file: bytes
) -> tuple[bytes, bytes, bytes]:
    """Options area, sname and file for options too long for the options field alone."""
    while True:
        laid_out = _overload(items, budget, use_file=not file, use_sname=not sname)
        if laid_out is not None:
            body, file_area, sname_area = laid_out
            return body, sname_area or sname, file_area or file
        # Drop the last option the server put in; it ordered the important ones first.
        for index in range(len(items) - 1, -1, -1):
            if items[index][0] not in _NEVER_DROPPED:
                del items[index]
                break
        else:
            raise LocalProtocolError("options 53 and 54 alone exceed the message size")


def _overload(
    items: list[tuple[int, bytes]], budget: int, use_file: bool, use_sname: bool
) -> tuple[bytes, bytes, bytes] | None:
    """Lay ``items`` out in options, then file, then sname (RFC 3396 §5 order), or None.

    Each area ends with END (RFC 2132 §9.3). Whole TLV instances are kept in order, so the
    concatenation a receiver does gives back every value.
    """
    instances = [inst for code, value in items for inst in option_instances(code, value)]
    room = budget - _OPTIONS_START - 1  # END
    if sum(map(len, instances)) <= room:
        return b"".join(instances) + b"\xff", b"", b""
    names = ["options", *(["file"] if use_file else []), *(["sname"] if use_sname else [])]
    if len(names) == 1:
        return None
    capacities = {"options": room - 3, "file": _FILE_SIZE - 1, "sname": _SNAME_SIZE - 1}
    filled: dict[str, list[bytes]] = {name: [] for name in names}
    area, used = 0, 0
    for inst in instances:
        while used + len(inst) > capacities[names[area]]:
            area, used = area + 1, 0
            if area == len(names):
                return None
        filled[names[area]].append(inst)
        used += len(inst)
    file_part, sname_part = filled.get("file"), filled.get("sname")
    file_area = b"".join(file_part) + b"\xff" if file_part else b""
    sname_area = b"".join(sname_part) + b"\xff" if sname_part else b""
    overload = (1 if file_area else 0) | (2 if sname_area else 0)
    return b"".join(filled["options"]) + bytes((52, 1, overload, 255)), file_area, sname_area
