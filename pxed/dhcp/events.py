"""The DHCP cores' decision events: a reply decided for a client, with what chose it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from pxed.boot import BootChoice
from pxed.dhcp.packet import DhcpPacket
from pxed.events import Event

ZERO = IPv4Address(0)


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
