"""UDP socket helpers shared by the DHCP and TFTP glue: opening and binding, and IP_PKTINFO.

Both protocols serve every address of an interface from sockets bound to the wildcard
address with SO_BINDTODEVICE, so both need the same two pieces of ancillary data: which of
our addresses a datagram was sent to (on receive), and which address a reply leaves from
(on send). IPv4 only for now; the IPv6 listeners will add IPV6_PKTINFO beside these.
"""

from __future__ import annotations

import contextlib
import socket
import struct

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
PKTINFO_SPACE = socket.CMSG_SPACE(12)
"""Ancillary buffer for one ``struct in_pktinfo`` (what recvmsg needs to be given)."""

Ancillary = list[tuple[int, int, bytes]]


def open_udp_socket(
    host: str,
    port: int,
    interface: str | None = None,
    *,
    reuse: bool = True,
    broadcast: bool = False,
    pktinfo: bool = False,
    rcvbuf: int | None = None,
) -> socket.socket:
    """A non-blocking UDP socket on ``host:port``, seeing and sending only on ``interface``.

    SO_BINDTODEVICE is what lets several sockets share a port (one per interface, and a
    local DHCP client beside pxed's): each hears its own interface, and replies leave
    through it. ``reuse`` (SO_REUSEADDR) is needed for that sharing and for a transfer's
    pair of sockets on one TID; ``pktinfo`` asks for the IP_PKTINFO of every datagram.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if interface:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode() + b"\0")
        if rcvbuf is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if pktinfo:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def send_from(address: bytes) -> Ancillary:
    """Ancillary data that makes a datagram leave from our ``address`` (4 octets):
    ``struct in_pktinfo {ifindex 0, spec_dst = address, addr unused}``."""
    return [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=I4s4s", 0, address, b"\0\0\0\0"))]


def _pktinfo(ancillary: Ancillary) -> bytes | None:
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            return data
    return None


def local_address(ancillary: Ancillary) -> bytes:
    """Our address the datagram arrived on (``ipi_spec_dst``: for a broadcast, the
    interface's address the kernel would answer from), packed; b"" if not given."""
    info = _pktinfo(ancillary)
    return info[4:8] if info is not None else b""


def destination_address(ancillary: Ancillary) -> bytes:
    """The datagram's destination address as sent (``ipi_addr``: our address for a
    unicast, 255.255.255.255 for a broadcast), packed; b"" if not given."""
    info = _pktinfo(ancillary)
    return info[8:12] if info is not None else b""
