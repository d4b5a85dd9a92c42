"""TFTP wire format: opcodes, error codes and the codecs of every packet.

Bytes in, frozen dataclasses out, and back. Anything that does not decode raises
:class:`~pxed.errors.MalformedPacket` whose ``error_code`` is the TFTP error to answer with
(``None`` when the packet must be dropped without an answer, e.g. a broken ERROR packet:
RFC 1350 §7 never answers an ERROR).

References: RFC 1350 (protocol), RFC 2347 (option extension, OACK), RFC 2348 (blksize),
RFC 2349 (timeout, tsize), RFC 7440 (windowsize).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from pxed.errors import MalformedPacket


class Opcode(IntEnum):
    """Packet types (first two octets, network order)."""

    RRQ = 1
    """Read request (RFC 1350 §5)."""
    WRQ = 2
    """Write request (RFC 1350 §5)."""
    DATA = 3
    """Data block (RFC 1350 §5)."""
    ACK = 4
    """Acknowledgment (RFC 1350 §5)."""
    ERROR = 5
    """Error (RFC 1350 §5)."""
    OACK = 6
    """Option acknowledgment (RFC 2347)."""


class ErrorCode(IntEnum):
    """Error codes of ERROR packets (RFC 1350 appendix, RFC 2347 for 8)."""

    NOT_DEFINED = 0
    """Not defined, see error message (busy, shutting down, internal)."""
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    """Disk full or allocation exceeded."""
    ILLEGAL_OPERATION = 4
    """Illegal TFTP operation (malformed or unexpected packet)."""
    UNKNOWN_TID = 5
    """Unknown transfer ID (a packet from a port that is not the transfer's peer)."""
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_NEGOTIATION = 8
    """The transfer is terminated because of option negotiation (RFC 2347)."""


# Limits from the RFCs.
BLKSIZE_MIN: Final = 8
"""RFC 2348: smallest valid blksize."""
BLKSIZE_MAX: Final = 65464
"""RFC 2348: largest valid blksize (65535 - 20 IP - 8 UDP - 4 TFTP... rounded as the RFC says)."""
DEFAULT_BLKSIZE: Final = 512
"""RFC 1350: block size when no blksize option was negotiated."""
TIMEOUT_MIN: Final = 1
TIMEOUT_MAX: Final = 255
"""RFC 2349: the timeout option is 1..255 seconds."""
WINDOWSIZE_MIN: Final = 1
WINDOWSIZE_MAX: Final = 65535
"""RFC 7440: the windowsize option is 1..65535 blocks."""
MAX_REQUEST: Final = 512
"""RFC 2347: a request packet (with its options) must not exceed 512 octets."""

MODES: Final = ("netascii", "octet")
"""Transfer modes served (RFC 1350 §5; ``mail`` is obsolete and refused)."""

_HEADER = struct.Struct("!HH")
_OPCODE = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """RRQ (RFC 1350) with its options (RFC 2347)."""

    filename: str
    """Decoded as UTF-8 with ``surrogateescape``: any byte string round-trips."""
    mode: str
    """Lower-cased: ``octet`` or ``netascii``."""
    options: tuple[tuple[str, str], ...] = ()
    """(lower-cased name, value) in the order sent; names are unique."""

    def option(self, name: str) -> str | None:
        for key, value in self.options:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """WRQ (RFC 1350); pxed refuses every one (read-only server)."""

    filename: str
    mode: str
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Data:
    block: int
    """16-bit block number as on the wire (rolls over past 65535)."""
    payload: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    block: int
    """16-bit block number as on the wire."""


@dataclass(frozen=True, slots=True)
class Error:
    code: int
    """An :class:`ErrorCode` value, or any other 16-bit number a peer sent."""
    message: str


@dataclass(frozen=True, slots=True)
class OptionAck:
    """OACK (RFC 2347): the options the server accepted, with the values it will use."""

    options: tuple[tuple[str, str], ...]


Packet = ReadRequest | WriteRequest | Data | Ack | Error | OptionAck


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _decode_request(datagram: bytes, opcode: Opcode) -> ReadRequest | WriteRequest:
    if len(datagram) > MAX_REQUEST:
        raise MalformedPacket(
            f"request of {len(datagram)} octets (RFC 2347: at most {MAX_REQUEST})",
            ErrorCode.ILLEGAL_OPERATION,
        )
    body = datagram[2:]
    if not body.endswith(b"\0"):
        raise MalformedPacket("request not terminated by NUL", ErrorCode.ILLEGAL_OPERATION)
    fields = body[:-1].split(b"\0")
    if len(fields) < 2:
        raise MalformedPacket("request without a mode", ErrorCode.ILLEGAL_OPERATION)
    filename, mode_raw, *rest = fields
    if not filename:
        raise MalformedPacket("empty filename", ErrorCode.FILE_NOT_FOUND)
    try:
        mode = mode_raw.decode("ascii").lower()
    except UnicodeDecodeError:
        raise MalformedPacket("mode is not ASCII", ErrorCode.ILLEGAL_OPERATION) from None
    if mode not in MODES:
        raise MalformedPacket(f"unsupported mode {mode!r}", ErrorCode.ILLEGAL_OPERATION)
    if len(rest) % 2:
        raise MalformedPacket("option without a value", ErrorCode.OPTION_NEGOTIATION)
    options: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i in range(0, len(rest), 2):
        try:
            name = rest[i].decode("ascii").lower()
            value = rest[i + 1].decode("ascii")
        except UnicodeDecodeError:
            raise MalformedPacket("option is not ASCII", ErrorCode.OPTION_NEGOTIATION) from None
        if not name:
            raise MalformedPacket("option with an empty name", ErrorCode.OPTION_NEGOTIATION)
        if name in seen:
            raise MalformedPacket(f"option {name!r} repeated", ErrorCode.OPTION_NEGOTIATION)
        seen.add(name)
        options.append((name, value))
    cls = ReadRequest if opcode == Opcode.RRQ else WriteRequest
    return cls(_text(filename), mode, tuple(options))


def decode(datagram: bytes) -> Packet:
    """One datagram -> one packet, or :class:`MalformedPacket`."""
    if len(datagram) < 2:
        raise MalformedPacket(f"{len(datagram)} octet datagram", ErrorCode.ILLEGAL_OPERATION)
    (code,) = _OPCODE.unpack_from(datagram)
    try:
        opcode = Opcode(code)
    except ValueError:
        raise MalformedPacket(f"unknown opcode {code}", ErrorCode.ILLEGAL_OPERATION) from None
    if opcode in (Opcode.RRQ, Opcode.WRQ):
        return _decode_request(bytes(datagram), opcode)
    if opcode == Opcode.ERROR:
        if len(datagram) < 4:
            # Never answer an ERROR (RFC 1350 §7), not even a broken one.
            raise MalformedPacket(f"ERROR packet of {len(datagram)} octets", None)
        (_, err) = _HEADER.unpack_from(datagram)
        # Peers often omit the NUL; take the message up to the first NUL or the end.
        message = bytes(datagram[4:]).split(b"\0", 1)[0]
        return Error(err, message.decode("utf-8", "replace"))
    if len(datagram) < 4 and opcode != Opcode.OACK:
        raise MalformedPacket(
            f"{opcode.name} packet of {len(datagram)} octets", ErrorCode.ILLEGAL_OPERATION
        )
    if opcode == Opcode.ACK:
        if len(datagram) != 4:
            raise MalformedPacket(
                f"ACK packet of {len(datagram)} octets", ErrorCode.ILLEGAL_OPERATION
            )
        return Ack(_HEADER.unpack_from(datagram)[1])
    if opcode == Opcode.DATA:
        return Data(_HEADER.unpack_from(datagram)[1], bytes(datagram[4:]))
    # OACK
    body = bytes(datagram[2:])
    if not body:
        raise MalformedPacket("OACK without options", ErrorCode.ILLEGAL_OPERATION)
    if not body.endswith(b"\0"):
        raise MalformedPacket("OACK not terminated by NUL", ErrorCode.ILLEGAL_OPERATION)
    fields = body[:-1].split(b"\0")
    if len(fields) % 2:
        raise MalformedPacket("OACK option without a value", ErrorCode.OPTION_NEGOTIATION)
    try:
        pairs = tuple(
            (fields[i].decode("ascii").lower(), fields[i + 1].decode("ascii"))
            for i in range(0, len(fields), 2)
        )
    except UnicodeDecodeError:
        raise MalformedPacket("OACK is not ASCII", ErrorCode.OPTION_NEGOTIATION) from None
    return OptionAck(pairs)


def encode(packet: Packet) -> bytes:
    """One packet -> its datagram."""
    if isinstance(packet, ReadRequest | WriteRequest):
        op = Opcode.RRQ if isinstance(packet, ReadRequest) else Opcode.WRQ
        parts = [_raw(packet.filename), packet.mode.encode("ascii")]
        for name, value in packet.options:
            parts += [name.encode("ascii"), value.encode("ascii")]
        return _OPCODE.pack(op) + b"\0".join(parts) + b"\0"
    if isinstance(packet, Data):
        return encode_data_header(packet.block) + packet.payload
    if isinstance(packet, Ack):
        return encode_ack(packet.block)
    if isinstance(packet, Error):
        return encode_error(packet.code, packet.message)
    return encode_oack(packet.options)


def encode_data_header(block: int) -> bytes:
    """The 4-octet DATA header; the payload is sent beside it (sendmsg), never joined."""
    return _HEADER.pack(Opcode.DATA, block & 0xFFFF)


def encode_ack(block: int) -> bytes:
    return _HEADER.pack(Opcode.ACK, block & 0xFFFF)


def encode_error(code: int, message: str) -> bytes:
    return _HEADER.pack(Opcode.ERROR, code & 0xFFFF) + message.encode("utf-8", "replace") + b"\0"


def encode_oack(options: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> bytes:
    out = bytearray(_OPCODE.pack(Opcode.OACK))
    for name, value in options:
        out += name.encode("ascii") + b"\0" + value.encode("ascii") + b"\0"
    return bytes(out)


def parse_uint(value: str, low: int, high: int) -> int | None:
    """A decimal option value in [low, high], or None (strict: ASCII digits only)."""
    if not value or len(value) > 20 or not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    if number < low or number > high:
        return None
    return number
