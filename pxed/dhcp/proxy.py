"""ProxyDHCP: PXE boot answers beside a DHCP server that keeps handing out the addresses.

The router's server gives the address; this core answers only PXE firmware (option 60
"PXEClient"/"HTTPClient"), with an offer that carries no address (yiaddr 0) but the boot
server and file, and PXE vendor options telling the ROM to skip boot-server discovery. On
port 4011 it answers the firmware's REQUEST with an ACK carrying the boot file again: several
firmwares (UEFI's EDK2 among them) only take the file from that exchange. It never allocates
and never stores anything (PXE 2.1 §2.2-2.4, RFC 4578; dnsmasq's `dhcp-range=...,proxy`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from ipaddress import IPv4Address

from pxed.boot import BootPolicy
from pxed.config import Config, HostConfig
from pxed.dhcp.events import DhcpDecision, DropReason
from pxed.dhcp.options import MessageType, OptionCode, PxeSubOption, pxe_suboptions
from pxed.dhcp.packet import DhcpPacket, build, parse
from pxed.dhcp.pxe import add_boot_options, choose_boot, is_pxe_client
from pxed.dhcp.server import (
    BROADCAST,
    CLIENT_PORT,
    MIN_MESSAGE,
    SERVER_PORT,
    ZERO,
    Destination,
    Outcome,
    Reply,
    Source,
)
from pxed.errors import MalformedPacket
from pxed.events import Notice
from pxed.netinfo import InterfaceInfo

PROXY_PORT = 4011  # PXE 2.1: boot server / proxyDHCP requests once the client has an address

def asks_boot_server(p: DhcpPacket) -> bool:
    """A REQUEST on port 67 that is PXE boot-server discovery (option 43 names a boot item,
    sub-option 71, PXE 2.1 §2.2.5): the only one a ProxyDHCP answers there.

    Every other REQUEST on 67 belongs to the DHCP server: in the DORA, option 54 names the
    server whose offer the client took, and when that server shares our address an
    address-less ACK from us wins the race; EDK2 then DECLINEs and ends its DHCP session
    (Dhcp4Io.c DhcpHandleRequest: PXE-E07). iPXE and EDK2 ask the proxy itself only on
    port 4011, and with discovery control 8 in our offer they ask nothing more at all.
    dnsmasq's proxy answers the same two (rfc2131.c, dhcp_reply).
    """
    vendor = p.options.get(OptionCode.VENDOR_SPECIFIC)
    return vendor is not None and PxeSubOption.BOOT_ITEM in pxe_suboptions(vendor)


class ProxyServer:
    """The ProxyDHCP core: same boot policy as the full server, no leases."""

    def __init__(
        self,
        config: Config,
        interfaces: Mapping[str, InterfaceInfo],
        policy: BootPolicy,
        *,
        min_level: int = logging.INFO,
    ) -> None:
        self.config = config
        self.min_level = min_level
        """Events below this level are not made at all (nothing would consume them)."""
        self.interfaces = dict(interfaces)
        self.policy = policy
        self.hosts: dict[str, HostConfig] = {h.mac: h for h in config.hosts}
        self.stats: dict[str, int] = {}
        self.received: dict[MessageType | None, int] = {}
        """Messages that parsed, by message type (None: no valid option 53): every DHCP
        message on the segment, the router's clients' too."""
        self.drops: dict[DropReason, int] = {}
        """Datagrams left unanswered, by why (every drop, at any log level)."""
        self._learned: dict[str, IPv4Address] = {}
        """Per interface, an address the router handed out there (its offer to the probe, a
        client's REQUEST): where the router's clients are."""

    def take_counters(self, old: ProxyServer) -> None:
        """Go on counting where ``old`` (the core a reload replaces) stopped."""
        self.stats = old.stats
        self.received = old.received
        self.drops = old.drops

    def set_interfaces(self, interfaces: Mapping[str, InterfaceInfo]) -> None:
        """The interfaces as they are now (addresses come and go while pxed runs)."""
        self.interfaces = dict(interfaces)

    def learn(self, interface: str, address: IPv4Address) -> None:
        """The router gives addresses like ``address`` on ``interface``."""
        if address != ZERO:
            self._learned[interface] = address

    def server_address(
        self, interface: str, client: IPv4Address | None = None
    ) -> IPv4Address | None:
        """Our address for a PXE client on ``interface``: server identifier and next-server.

        The client has no address yet (or just got one from the router), so this is our
        address in the subnet it is or will be in: the client's own address when it has
        one, else a configured subnet, else where the router was seen to put its clients;
        the interface's primary address only when nothing says otherwise. An address in
        another subnet than the client's cannot be reached by firmware that has no router.
        """
        info = self.interfaces.get(interface)
        if info is None or info.primary is None:
            return None
        if client is not None and client != ZERO:
            own = info.address_in_same_net(client)
            if own is not None:
                return own
        own = self._in_configured_subnet(info)
        if own is not None:
            return own
        learned = self._learned.get(interface)
        if learned is not None:
            own = info.address_in_same_net(learned)
            if own is not None:
                return own
        return info.primary.ip

    def unsure(self, interface: str) -> bool:
        """Whether only the router can say which of the interface's several addresses its
        clients are in: no configured subnet holds one, and nothing was learned yet."""
        info = self.interfaces.get(interface)
        return (
            info is not None
            and len(info.addresses) > 1
            and self._in_configured_subnet(info) is None
            and interface not in self._learned
        )

    def _in_configured_subnet(self, info: InterfaceInfo) -> IPv4Address | None:
        """Our address in a configured subnet (a derived one is only the primary's)."""
        for sub in self.config.subnets:
            if not sub.derived:
                own = info.address_in(sub.network)
                if own is not None:
                    return own
        return None

    def receive(self, data: bytes, source: Source, now: float) -> Outcome:
        out = Outcome()
        info = self.interfaces.get(source.interface)
        if info is None or info.primary is None:
            self._dropped(DropReason.WRONG_INTERFACE)
            return out
        try:
            p = parse(data)
        except MalformedPacket as exc:
            self._count("malformed")
            self._dropped(DropReason.MALFORMED)
            self._note(out, logging.DEBUG, "dhcp.drop", reason=str(exc), src=str(source.address),
                       cause=DropReason.MALFORMED.value, mode="proxy")  # fmt: skip
            return out
        mtype = p.message_type
        received = self.received
        received[mtype] = received.get(mtype, 0) + 1
        if p.op != 1:
            self._drop(out, p, DropReason.NOT_CLIENT_MESSAGE, "a BOOTREPLY (op 2) sent to a server")
            return out
        if not is_pxe_client(p):
            # Never a second DHCP server for ordinary clients: they are the router's.
            self._count("not-pxe")
            self._dropped(DropReason.NOT_PXE)
            return out
        if (
            source.local_port != PROXY_PORT
            and mtype is MessageType.REQUEST
            and p.requested_ip is not None
            and info.address_in_same_net(p.requested_ip) is not None
        ):
            self.learn(source.interface, p.requested_ip)  # a client taking the router's offer
        client = p.ciaddr if p.ciaddr != ZERO else source.address
        if client == ZERO and p.requested_ip is not None:
            client = p.requested_ip
        server_ip = self.server_address(source.interface, client)
        assert server_ip is not None
        if source.local_port == PROXY_PORT:
            if mtype in (MessageType.REQUEST, MessageType.INFORM):
                self._answer(p, source, server_ip, MessageType.ACK, out)
            else:
                self._unanswered(out, p, mtype, "on port 4011")
            return out
        if mtype is MessageType.DISCOVER:
            self._answer(p, source, server_ip, MessageType.OFFER, out)
        elif mtype in (MessageType.REQUEST, MessageType.INFORM) and asks_boot_server(p):
            self._answer(p, source, server_ip, MessageType.ACK, out)
        elif mtype is MessageType.REQUEST:
            # The firmware taking the router's offer, or renewing: the DHCP server's to answer.
            self._count("address-request")
            why = "a REQUEST for an address is the DHCP server's to answer"
            self._drop(out, p, DropReason.OTHER_SERVER, why)
        elif mtype in (MessageType.DECLINE, MessageType.RELEASE, MessageType.INFORM):
            why = f"a {mtype.name} without a boot item is the DHCP server's"
            self._drop(out, p, DropReason.OTHER_SERVER, why)
        else:
            self._unanswered(out, p, mtype, "on port 67")
        return out

    def _unanswered(
        self, out: Outcome, p: DhcpPacket, mtype: MessageType | None, where: str
    ) -> None:
        """A message type this core does not answer on the port it came to."""
        if mtype is None:
            self._drop(out, p, DropReason.BOOTP, "BOOTP request without DHCP message type")
        elif mtype in (MessageType.DISCOVER, MessageType.DECLINE, MessageType.RELEASE):
            self._drop(out, p, DropReason.UNEXPECTED, f"{mtype.name} is not answered {where}")
        else:
            why = f"{mtype.name} is not a client message"
            self._drop(out, p, DropReason.NOT_CLIENT_MESSAGE, why)

    def _answer(
        self,
        p: DhcpPacket,
        src: Source,
        server_ip: IPv4Address,
        mtype: MessageType,
        out: Outcome,
    ) -> None:
        host = self.hosts.get(p.mac)
        boot = choose_boot(self.policy, p, host, out.events, self.min_level, pxe_only=True,
                           http=self.config.http.listen)
        if boot is None:
            self._dropped(DropReason.NO_BOOT_FILE)
            self._note(out, logging.INFO, "proxy.no_boot_file", mac=p.mac, xid=f"0x{p.xid:08x}",
                       arch=p.client_arch)  # fmt: skip
            return
        next_server = self.config.boot.next_server or server_ip
        opts: dict[int, bytes] = {
            OptionCode.MESSAGE_TYPE: bytes([mtype]),
            OptionCode.SERVER_ID: server_ip.packed,
        }
        file_field = add_boot_options(opts, p, boot, next_server, self.config.http.listen)
        if p.client_id is not None:
            opts[OptionCode.CLIENT_ID] = p.client_id
        reply = DhcpPacket(
            op=2,
            htype=p.htype,
            hlen=p.hlen,
            xid=p.xid,
            flags=p.flags,
            ciaddr=p.ciaddr if mtype is MessageType.ACK else ZERO,
            yiaddr=ZERO,
            siaddr=next_server,
            giaddr=p.giaddr,
            chaddr=p.chaddr,
            file=file_field,
            options=opts,
        )
        data = build(reply, max(p.max_message_size or MIN_MESSAGE, MIN_MESSAGE))
        out.replies.append(Reply(data, self._destination(p, src, mtype), mtype, server_ip))
        event = "proxy.offer" if mtype is MessageType.OFFER else "proxy.ack"
        self._count(event)
        if self.min_level <= logging.INFO:
            extra = {"port": src.local_port}
            out.events.append(DhcpDecision(event, logging.INFO, p, p.ciaddr, boot, extra))

    def _drop(self, out: Outcome, p: DhcpPacket, cause: DropReason, why: str) -> None:
        """A request left unanswered: counted by ``cause``; ``why`` in words for the log."""
        self._dropped(cause)
        if self.min_level <= logging.DEBUG:
            mtype = p.message_type
            self._note(out, logging.DEBUG, "dhcp.drop", mac=p.mac, xid=f"0x{p.xid:08x}",
                       mode="proxy", reason=why, cause=cause.value,
                       msg_type=mtype.name if mtype is not None else None)  # fmt: skip

    def _dropped(self, cause: DropReason) -> None:
        drops = self.drops
        drops[cause] = drops.get(cause, 0) + 1

    def _note(self, out: Outcome, level: int, kind: str, **fields: object) -> None:
        if level >= self.min_level:
            out.events.append(Notice(kind, level, fields))

    @staticmethod
    def _destination(p: DhcpPacket, src: Source, mtype: MessageType) -> Destination:
        if src.local_port == PROXY_PORT:
            # The client has its address now and listens where it sent from.
            addr = p.ciaddr if p.ciaddr != ZERO else src.address
            return Destination(addr, src.port, src.interface)
        if p.giaddr != ZERO:
            return Destination(p.giaddr, SERVER_PORT, src.interface)
        # No address of its own yet, and it is not ours to give: broadcast on the segment.
        return Destination(BROADCAST, CLIENT_PORT, src.interface)

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1
