"""The DHCP cores' decision events: a reply decided for a client, with what chose it, and
why a datagram got no answer (``DropReason``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address
from typing import Any

from pxed.boot import BootChoice
from pxed.dhcp.packet import DhcpPacket
from pxed.events import Event

ZERO = IPv4Address(0)


class DropReason(StrEnum):
    """Why a DHCP core left a datagram unanswered: the ``cause`` field of a ``dhcp.drop``
    event and the ``reason`` label of ``pxed_dhcp_drops``. A closed set, so that a metric
    has a bounded number of series; the event's ``reason`` says the particulars in words.
    Counted by the cores themselves (``drops``), at any log level."""

    MALFORMED = "malformed"
    """Does not parse as a BOOTP/DHCP message."""
    NOT_CLIENT_MESSAGE = "not_client_message"
    """A BOOTREPLY, or a server's message type (OFFER, ACK, NAK ...), sent to the server."""
    BOOTP = "bootp"
    """A BOOTP request: no DHCP message type (option 53); pxed serves DHCP only."""
    WRONG_INTERFACE = "wrong_interface"
    """Came in on an interface that is not served (or, ProxyDHCP, has no address yet)."""
    NO_SUBNET = "no_subnet"
    """No subnet of ours for it: the relay's or the segment's, the address it names."""
    OTHER_SERVER = "other_server"
    """For another DHCP server: option 54 names another (a REQUEST taking its offer, a
    DECLINE or RELEASE to it); ProxyDHCP: what the router's server answers."""
    UNKNOWN_CLIENT = "unknown_client"
    """``known_only`` and no ``[[dhcp.host]]`` for the MAC."""
    RATE_LIMITED = "rate_limited"
    """A new client beyond ``new_clients_per_second``."""
    NO_ADDRESS = "no_address"
    """No free address to offer (the pool is exhausted, the reserved one is taken)."""
    NOT_HOLDER = "not_holder"
    """A DECLINE or RELEASE from a client that does not hold the address."""
    INVALID = "invalid"
    """Parses, but lacks what its message type needs (a REQUEST without an address)."""
    NOT_PXE = "not_pxe"
    """ProxyDHCP: not PXE firmware (its address is the router's business)."""
    NO_BOOT_FILE = "no_boot_file"
    """ProxyDHCP: no boot file for this client, so nothing to say."""
    PEER_SHARE = "peer_share"
    """Several servers share the lease database, and this client is another live server's
    to answer (RFC 3074 load balancing: its client identifier hashes to that server)."""
    STORE_DOWN = "store_down"
    """The lease database cannot be written: no lease can be acknowledged, so the client is
    left to retry (a reserved host is still answered)."""
    UNEXPECTED = "unexpected"
    """ProxyDHCP: a client message it does not answer on the port it came to (a DISCOVER,
    DECLINE or RELEASE on port 4011)."""


@dataclass(frozen=True, slots=True)
class DhcpDecision(Event):
    """An offer, ACK, INFORM answer or proxy reply: who asked, the address, the boot file and
    the rule that chose it (``boot.reason``)."""

    packet: DhcpPacket
    ip: IPv4Address
    boot: BootChoice | None
    extra: Mapping[str, Any]

    def fields(self) -> dict[str, Any]:
        return {**decision_fields(self.packet, self.ip, self.boot), **self.extra}


def decision_fields(p: DhcpPacket, ip: IPv4Address, boot: BootChoice | None) -> dict[str, Any]:
    """The fields of a DHCP decision event: who asked, what it got."""
    mtype = p.message_type
    fields: dict[str, Any] = {
        "mac": p.mac,
        "xid": xid(p),
        "msg_type": mtype.name if mtype is not None else None,
        "ip": str(ip),
        "arch": arch(p),
        "boot_file": boot.file if boot else None,
    }
    # Only what applies: fewer keys keep the per-decision log line cheap and readable.
    if boot is not None:
        fields["boot_reason"] = boot.reason
        if boot.profile is not None:
            fields["profile"] = boot.profile
    if p.is_ipxe:
        fields["ipxe"] = True
    if p.giaddr != ZERO:
        fields["giaddr"] = str(p.giaddr)
    return fields


def xid(p: DhcpPacket) -> str:
    return f"0x{p.xid:08x}"


def arch(p: DhcpPacket) -> int | None:
    archs: Sequence[int] = p.client_arch
    return archs[0] if archs else None
