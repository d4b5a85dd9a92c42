"""RFC 2131 server logic with PXE boot selection; no sockets, no clock, no files.

`DhcpServer.receive(data, source, now)` takes one datagram and returns what to send and which
lease changes must be durable first. The glue commits the lease writes of a whole burst in one
transaction and only then sends the replies, so an ACK never outruns its lease on disk.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address
from typing import Any

from pxed.boot import BootChoice, BootPolicy
from pxed.cluster import Balance
from pxed.config import Config, HostConfig, SubnetConfig
from pxed.dhcp import options as o
from pxed.dhcp.events import DhcpDecision, DropReason
from pxed.dhcp.events import arch as _arch
from pxed.dhcp.events import xid as _xid
from pxed.dhcp.options import MessageType, OptionCode
from pxed.dhcp.packet import DhcpPacket, build, pack_reply, parse
from pxed.dhcp.pxe import add_boot_options, choose_boot
from pxed.errors import MalformedPacket
from pxed.events import Event, Notice
from pxed.leases import Lease, LeaseTable
from pxed.netinfo import InterfaceInfo

ZERO = IPv4Address(0)
BROADCAST = IPv4Address("255.255.255.255")
CLIENT_PORT = 68
SERVER_PORT = 67
MIN_MESSAGE = 576
ENCODED_CACHE_SIZE = 256
FLOOD_QUIET = 10.0  # seconds without a refused new client before a flood counts as over


class RequestState(Enum):
    """Which client state a DHCPREQUEST comes from (RFC 2131 §4.3.2)."""

    SELECTING = "selecting"
    INIT_REBOOT = "init-reboot"
    RENEWING = "renewing"
    REBINDING = "rebinding"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a datagram came from."""

    interface: str
    address: IPv4Address
    port: int
    local_port: int = SERVER_PORT
    """The port it arrived on: 67, or 4011 for ProxyDHCP requests."""
    local: IPv4Address | None = None
    """Our address it was sent to (IP_PKTINFO), when it was sent to one: a relay's or a
    renewing client's unicast. None for a broadcast."""


@dataclass(frozen=True, slots=True)
class Destination:
    address: IPv4Address
    port: int
    interface: str
    mac: str | None = None
    """Set when the client has no address yet: deliver at this MAC without ARP (RFC 2131 §4.1)."""


@dataclass(frozen=True, slots=True)
class Reply:
    data: bytes
    destination: Destination
    message_type: MessageType
    source: IPv4Address | None = None
    """The address it must leave from (the server identifier it carries); None: any."""


@dataclass(slots=True)
class Outcome:
    """What one received datagram leads to."""

    replies: list[Reply] = field(default_factory=list)
    writes: list[Lease] = field(default_factory=list)
    """Lease changes that must be committed before any reply is sent."""
    background: list[Lease] = field(default_factory=list)
    """Lease changes to store without holding a reply back: a reserved host's binding (its
    address is its own by configuration, so its ACK needs no database, which may be down)."""
    events: list[Event] = field(default_factory=list)
    """What was decided, for the log and the other consumers (after the replies are out)."""


@dataclass(slots=True)
class _Subnet:
    config: SubnetConfig
    table: LeaseTable
    unnumbered: bool
    """pxed had no address in the subnet when it was set up (a relayed subnet, or one
    configured with ``network`` on an interface numbered otherwise)."""
    base: dict[int, bytes] = field(default_factory=dict)
    """Encoded options every reply on this subnet carries (encoded once, not per packet)."""
    optional: dict[int, bytes] = field(default_factory=dict)
    """Encoded options sent only to clients that ask for them (option 55)."""
    encoded: dict[tuple[MessageType, IPv4Address, int | None, tuple[int, ...]], bytes] = field(
        default_factory=dict
    )
    """Options areas of plain replies, TLV-encoded (see DhcpServer._pack_plain)."""
    exhausted_warned: bool = False

    def __post_init__(self) -> None:
        sub = self.config
        self.base[OptionCode.SUBNET_MASK] = sub.network.netmask.packed
        if sub.router:
            self.base[OptionCode.ROUTER] = b"".join(a.packed for a in sub.router)
        if sub.dns:
            self.base[OptionCode.DNS_SERVERS] = b"".join(a.packed for a in sub.dns)
        if sub.domain:
            self.base[OptionCode.DOMAIN_NAME] = sub.domain.encode()
        self.base[OptionCode.BROADCAST_ADDRESS] = sub.broadcast_address.packed
        self.optional.update(sub.options)
        if sub.ntp:
            self.optional[OptionCode.NTP_SERVERS] = b"".join(a.packed for a in sub.ntp)
        if sub.mtu:
            self.optional[OptionCode.INTERFACE_MTU] = struct.pack("!H", sub.mtu)
        if sub.routes:
            self.optional[OptionCode.CLASSLESS_STATIC_ROUTES] = o.encode_routes(sub.routes)


@dataclass(slots=True)
class _Bucket:
    """A token bucket: new clients admitted per second on one interface (a second's burst)."""

    tokens: float
    at: float
    warned: bool = False
    """The flood was logged; said again only after FLOOD_QUIET seconds without refusals."""
    refused: int = 0
    last_refused: float = 0.0

    def take(self, rate: int, now: float) -> bool:
        self.tokens = min(float(rate), self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def reservation_key(mac: str) -> bytes:
    """The lease key of a reserved host: hardware type 1 + its MAC, the identity a PXE ROM
    presents (see DhcpServer._key)."""
    return b"\x01" + bytes.fromhex(mac.replace(":", ""))


def client_key(packet: DhcpPacket) -> bytes:
    """Client identity: option 61 when present, else hardware type + chaddr (RFC 2131 §4.2)."""
    cid = packet.client_id
    if cid:
        return cid
    return bytes([packet.htype]) + packet.chaddr


class DhcpServer:
    """The authoritative DHCP server core for all configured subnets."""

    def __init__(
        self,
        config: Config,
        interfaces: Mapping[str, InterfaceInfo],
        tables: Mapping[str, LeaseTable],
        policy: BootPolicy,
        *,
        min_level: int = logging.INFO,
    ) -> None:
        self.config = config
        self.min_level = min_level
        """Events below this level are not made at all (nothing would consume them)."""
        self._pending: list[Event] = []
        self.interfaces: dict[str, InterfaceInfo] = {}
        self._own: frozenset[IPv4Address] = frozenset()
        self.policy = policy
        self.tables = dict(tables)
        self.hosts: dict[str, HostConfig] = {h.mac: h for h in config.hosts}
        self._reserved_keys = {reservation_key(h.mac) for h in config.hosts if h.ip is not None}
        self.subnets: list[_Subnet] = []
        self.set_interfaces(interfaces)
        for sub in config.subnets:
            self.add_subnet(sub, tables[str(sub.network)])
        self.stats: dict[str, int] = {}
        self.received: dict[MessageType | None, int] = {}
        """Messages that parsed, by message type (None: no valid option 53), whatever the
        core made of them."""
        self.drops: dict[DropReason, int] = {}
        """Datagrams left unanswered, by why (every drop, at any log level)."""
        self._buckets: dict[str, _Bucket] = {}
        self._decisions = min_level <= logging.INFO
        self.balance: Balance | None = None
        """Set when several servers share the lease database (pxed.cluster): answer only
        the clients whose turn is this server's."""
        self.store_down = False
        """The lease store cannot be written now: acknowledge nothing that needs it."""

    def take_counters(self, old: DhcpServer) -> None:
        """Go on counting where ``old`` (the core a reload replaces) stopped, and with its
        view of the lease store and of the other servers."""
        self.stats = old.stats
        self.received = old.received
        self.drops = old.drops
        self.balance = old.balance
        self.store_down = old.store_down

    def set_interfaces(self, interfaces: Mapping[str, InterfaceInfo]) -> None:
        """The interfaces as they are now (addresses come and go while pxed runs)."""
        self.interfaces = dict(interfaces)
        self._own = frozenset(a.ip for info in interfaces.values() for a in info.addresses)

    def add_subnet(self, sub: SubnetConfig, table: LeaseTable) -> None:
        """Serve one more subnet (configured, or derived from an address that appeared)."""
        self.tables[str(sub.network)] = table
        numbered = any(info.address_in(sub.network) for info in self.interfaces.values())
        self.subnets.append(_Subnet(sub, table, unnumbered=not numbered))

    def _key(self, p: DhcpPacket) -> bytes:
        """The lease key; a reserved host is known by its MAC, whatever client-id it sends.

        A reservation is about the hardware address in chaddr: another machine sending the
        reserved host's client identifier (01 + its MAC) must not be taken for it, so its
        key is set apart, and it gets a NAK or an address of its own, as with dnsmasq.
        """
        host = self.hosts.get(p.mac)
        if host is not None and host.ip is not None:
            return b"\x01" + p.chaddr
        key = client_key(p)
        if key in self._reserved_keys:
            return b"\x00spoof:" + key + p.chaddr
        return key

    # ------------------------------------------------------------------ entry point

    def receive(self, data: bytes, source: Source, now: float) -> Outcome:
        """Handle one datagram. Never raises for anything a peer can send."""
        outcome = self._receive(data, source, now)
        if self._pending:
            outcome.events, self._pending = self._pending, []
        return outcome

    def _receive(self, data: bytes, source: Source, now: float) -> Outcome:
        outcome = Outcome()
        if source.interface not in self.interfaces:
            self._count("ignored-interface")
            self._dropped(DropReason.WRONG_INTERFACE)
            return outcome
        try:
            packet = parse(data)
        except MalformedPacket as exc:
            self._count("malformed")
            self._dropped(DropReason.MALFORMED)
            if self.min_level <= logging.DEBUG:
                self._note(
                    logging.DEBUG,
                    "dhcp.drop",
                    reason=str(exc),
                    cause=DropReason.MALFORMED.value,
                    src=str(source.address),
                    iface=source.interface,
                )
            return outcome
        mtype = packet.message_type
        received = self.received
        received[mtype] = received.get(mtype, 0) + 1
        if packet.op != 1:
            self._drop(packet, DropReason.NOT_CLIENT_MESSAGE, "a BOOTREPLY (op 2) sent to a server")
            return outcome
        if mtype is None:
            self._drop(packet, DropReason.BOOTP, "BOOTP request without DHCP message type")
            return outcome
        handler = self._handlers.get(mtype)
        if handler is None:
            self._drop(
                packet, DropReason.NOT_CLIENT_MESSAGE, f"{mtype.name} is not a client message"
            )
            return outcome
        handler(self, packet, source, now, outcome)
        return outcome

    # ------------------------------------------------------------------ messages

    def _discover(self, p: DhcpPacket, src: Source, now: float, out: Outcome) -> None:
        candidates = self._candidates(p, src)
        if not candidates:
            self._drop(p, DropReason.NO_SUBNET, "no subnet for this request", iface=src.interface,
                       giaddr=str(p.giaddr))  # fmt: skip
            return
        host = self.hosts.get(p.mac)
        if not self._our_turn(p, host):
            return
        key = self._key(p)
        if not self._admitted(p, src, key, host, candidates, now):
            return
        ip: IPv4Address | None = None
        subnet = candidates[0]
        reserved = host.ip if host is not None else None
        if reserved is not None and any(reserved in c.config.network for c in candidates):
            subnet = next(c for c in candidates if reserved in c.config.network)
            ip = reserved if subnet.table.available_for(reserved, key, now) else None
            if ip is not None:
                subnet.table.offer(key, p.mac, ip, now, self.config.offer_hold)
        else:
            # Several subnets on one segment (a shared network): the one the client's current
            # lease or asked-for address is in, else the first with a free address.
            order = sorted(candidates, key=lambda c: not self._belongs(p, key, c))
            for subnet in order:
                ip = subnet.table.offer(key, p.mac, p.requested_ip, now, self.config.offer_hold)
                if ip is not None:
                    break
        if ip is None:
            if not subnet.exhausted_warned:
                self._note(
                    logging.WARNING,
                    "dhcp.pool_exhausted",
                    subnet=str(subnet.config.network),
                    mac=p.mac,
                    xid=_xid(p),
                )
                subnet.exhausted_warned = True
            else:
                self._note(
                    logging.DEBUG, "dhcp.no_offer", subnet=str(subnet.config.network), mac=p.mac
                )
            self._count("exhausted")
            self._dropped(DropReason.NO_ADDRESS)
            return
        subnet.exhausted_warned = False
        lease_time = self._lease_time(p, subnet.config)
        boot = choose_boot(self.policy, p, host, self._pending, self.min_level,
                           http=self.config.http.listen)
        reply = self._reply(p, src, subnet, MessageType.OFFER, ip, lease_time, host, boot)
        out.replies.append(reply)
        self._event("dhcp.offer", p, ip, boot)

    def _request(self, p: DhcpPacket, src: Source, now: float, out: Outcome) -> None:
        state = self._request_state(p, src)
        subnet: _Subnet | None
        if state is RequestState.SELECTING:
            if p.server_id not in self._own:
                # The client chose another server's offer; our hold simply times out.
                self._dropped(DropReason.OTHER_SERVER)
                self._note(
                    logging.DEBUG,
                    "dhcp.not_for_us",
                    mac=p.mac,
                    xid=_xid(p),
                    server_id=str(p.server_id),
                )
                return
            ip = p.requested_ip
            subnet = self._pick(self._candidates(p, src), ip)
        elif not self._addressed(p, src) and not self._our_turn(p, self.hosts.get(p.mac)):
            return  # broadcast (INIT-REBOOT, REBINDING): the server whose turn it is answers
        elif state is RequestState.INIT_REBOOT:
            ip = p.requested_ip
            candidates = self._candidates(p, src)
            subnet = self._pick(candidates, ip) or (candidates[0] if candidates else None)
        else:
            ip = p.ciaddr
            subnet = self._subnet_for_address(p.ciaddr)
        if ip is None or ip == ZERO:
            self._drop(p, DropReason.INVALID, "REQUEST without an address")
            return
        if subnet is None or ip not in subnet.config.network:
            if state is RequestState.INIT_REBOOT and subnet is not None:
                # The client moved to this network with an address from another (§4.3.2).
                self._nak(p, src, subnet, f"{ip} is not on {subnet.config.network}", out)
            else:
                self._drop(p, DropReason.NO_SUBNET, f"{ip} is not in any subnet of ours")
            return
        key = self._key(p)
        host = self.hosts.get(p.mac)
        if self._unknown(p, host):
            return
        reserved = None
        if host is not None and host.ip is not None and host.ip in subnet.config.network:
            reserved = host.ip
        if reserved is not None and ip != reserved:
            self._nak(p, src, subnet, f"{p.mac} is reserved {reserved}", out)
            return
        if not subnet.table.available_for(ip, key, now):
            self._nak(p, src, subnet, f"{ip} is not available to this client", out)
            return
        if self.store_down and reserved is None:
            self._drop(p, DropReason.STORE_DOWN, "the lease database cannot be written now")
            return
        lease_time = self._lease_time(p, subnet.config)
        hostname = host.hostname if host is not None and host.hostname else p.hostname
        # Chosen before the binding so that the lease records the file this ACK names.
        boot = choose_boot(self.policy, p, host, self._pending, self.min_level,
                           http=self.config.http.listen)
        boot_file = boot.file if boot is not None else None
        lease, released = subnet.table.bind(
            key, p.mac, ip, hostname, now, lease_time, arch=_arch(p), boot_file=boot_file
        )
        # A reserved host's ACK does not wait for the store: the address is its own by
        # configuration, and it boots while the database is away.
        writes = out.background if reserved is not None else out.writes
        if released is not None:
            # Written before the new binding: staging order is the order of events on disk.
            writes.append(released)
        writes.append(lease)
        reply = self._reply(p, src, subnet, MessageType.ACK, ip, lease_time, host, boot)
        out.replies.append(reply)
        if hostname:
            self._event("dhcp.ack", p, ip, boot, state=state.value, lease_time=lease_time,
                        hostname=hostname)  # fmt: skip
        else:
            self._event("dhcp.ack", p, ip, boot, state=state.value, lease_time=lease_time)

    def _decline(self, p: DhcpPacket, src: Source, now: float, out: Outcome) -> None:
        ip = p.requested_ip
        subnet = self._subnet_for_address(ip) if ip is not None else None
        if p.server_id not in self._own or subnet is None or ip is None:
            cause = (DropReason.OTHER_SERVER if p.server_id not in self._own
                     else DropReason.INVALID if ip is None else DropReason.NO_SUBNET)  # fmt: skip
            self._drop(p, cause, "DECLINE not for us", server_id=str(p.server_id))
            return
        # Only the client the address was given to may say it is in use: anyone else's
        # DECLINE would take a reserved host's address or end another client's lease.
        if not self._holds(subnet, ip, p, now):
            self._drop(p, DropReason.NOT_HOLDER, "DECLINE from a client that does not hold the "
                       "address", ip=str(ip))  # fmt: skip
            return
        lease = subnet.table.decline(ip, now, self.config.decline_quarantine, p.mac)
        if lease is not None:
            out.writes.append(lease)
        self._note(
            logging.WARNING,
            "dhcp.decline",
            mac=p.mac,
            xid=_xid(p),
            ip=str(ip),
            msg_type="DECLINE",
            quarantine=self.config.decline_quarantine,
        )

    def _release(self, p: DhcpPacket, src: Source, now: float, out: Outcome) -> None:
        subnet = self._subnet_for_address(p.ciaddr)
        if subnet is None or p.server_id not in self._own:
            cause = (
                DropReason.OTHER_SERVER if p.server_id not in self._own else DropReason.NO_SUBNET
            )
            self._drop(p, cause, "RELEASE not for us", server_id=str(p.server_id))
            return
        if not self._holds(subnet, p.ciaddr, p, now):
            self._drop(
                p, DropReason.NOT_HOLDER, "RELEASE from a client that does not hold the address"
            )
            return
        lease = subnet.table.release(self._key(p), p.ciaddr, now)
        if lease is not None:
            out.writes.append(lease)
        self._note(
            logging.INFO,
            "dhcp.release",
            mac=p.mac,
            xid=_xid(p),
            ip=str(p.ciaddr),
            msg_type="RELEASE",
            released=lease is not None,
        )

    def _inform(self, p: DhcpPacket, src: Source, now: float, out: Outcome) -> None:
        subnet = self._subnet_for_address(p.ciaddr) if p.ciaddr != ZERO else None
        if subnet is None:
            candidates = self._candidates(p, src)
            subnet = candidates[0] if candidates else None
        if subnet is None:
            self._drop(p, DropReason.NO_SUBNET, "INFORM from an address not in our subnets")
            return
        host = self.hosts.get(p.mac)
        if not self._addressed(p, src) and not self._our_turn(p, host):
            return
        boot = choose_boot(self.policy, p, host, self._pending, self.min_level,
                           http=self.config.http.listen)
        reply = self._reply(p, src, subnet, MessageType.ACK, ZERO, None, host, boot)
        out.replies.append(reply)
        self._event("dhcp.inform", p, p.ciaddr, boot)

    _handlers: Mapping[MessageType, Any] = {
        MessageType.DISCOVER: _discover,
        MessageType.REQUEST: _request,
        MessageType.DECLINE: _decline,
        MessageType.RELEASE: _release,
        MessageType.INFORM: _inform,
    }

    # ------------------------------------------------------------------ helpers

    def _our_turn(self, p: DhcpPacket, host: HostConfig | None) -> bool:
        """Whether this server answers the client's DISCOVER or broadcast REQUEST: always
        when alone, else by RFC 3074 (pxed.cluster). While the store is down, a DISCOVER is
        not answered (an offer nobody could acknowledge), except a reserved host's."""
        reserved = host is not None and host.ip is not None
        if self.store_down:
            if reserved:
                # Who is alive is unknown without the database: every server answers a
                # reserved host (the same address from each), so that it boots.
                return True
            if p.message_type is MessageType.DISCOVER:
                self._drop(p, DropReason.STORE_DOWN, "the lease database cannot be written now")
                return False
        balance = self.balance
        if balance is None or balance.serves(p):
            return True
        self._dropped(DropReason.PEER_SHARE)
        if self.min_level <= logging.DEBUG:
            self._note(logging.DEBUG, "dhcp.peer_share", mac=p.mac, xid=_xid(p),
                       server=balance.owner(p))  # fmt: skip
        return False

    @staticmethod
    def _addressed(p: DhcpPacket, src: Source) -> bool:
        """Sent to this server's own address by the client itself (a RENEWING unicast),
        not broadcast nor forwarded by a relay (which sends to every server)."""
        return p.giaddr == ZERO and src.local is not None and src.local != BROADCAST

    def _request_state(self, p: DhcpPacket, src: Source) -> RequestState:
        if p.server_id is not None:
            return RequestState.SELECTING
        if p.requested_ip is not None and p.ciaddr == ZERO:
            return RequestState.INIT_REBOOT
        # RENEWING is unicast to us, REBINDING broadcast; with no way to see the destination
        # address here, a relayed or broadcast-flagged request counts as rebinding (logging only).
        return RequestState.REBINDING if p.broadcast_flag else RequestState.RENEWING

    def _candidates(self, p: DhcpPacket, src: Source) -> list[_Subnet]:
        """The subnets a request may be served from (RFC 2131 §4.3.1): the relay's (giaddr),
        else those of the interface it came in on that pxed has an address in now (an
        address removed takes its subnet off the segment), in configuration order."""
        if p.giaddr != ZERO:
            sub = self._subnet_for_address(p.giaddr)
            return [sub] if sub is not None else []
        info = self.interfaces.get(src.interface)
        if info is None:
            return []
        return [
            sub
            for sub in self.subnets
            if info.address_in(sub.config.network) is not None
            or (sub.unnumbered and sub.config.interface == src.interface)
        ]

    def _holds(self, subnet: _Subnet, ip: IPv4Address, p: DhcpPacket, now: float) -> bool:
        """Whether the sender holds ``ip``: the same client identity and the same hardware
        address as the offer or lease (a forger can copy a client-id, and a client that
        got the address never changes its chaddr before declining or releasing it)."""
        lease = subnet.table.holding(ip, now)
        return lease is not None and lease.client_key == self._key(p) and lease.mac == p.mac

    @staticmethod
    def _pick(candidates: Sequence[_Subnet], ip: IPv4Address | None) -> _Subnet | None:
        """The candidate subnet that holds ``ip``."""
        if ip is None:
            return None
        return next((c for c in candidates if ip in c.config.network), None)

    def _belongs(self, p: DhcpPacket, key: bytes, sub: _Subnet) -> bool:
        """Whether the client has a lease or an offer in ``sub``, or asks for an address in it."""
        if p.requested_ip is not None and p.requested_ip in sub.config.network:
            return True
        return sub.table.by_client(key) is not None

    def _unknown(self, p: DhcpPacket, host: HostConfig | None) -> bool:
        """known_only, and no ``[[dhcp.host]]`` for this MAC: dropped (counted, logged)."""
        if host is not None or not self.config.known_only:
            return False
        self._count("unknown-client")
        self._drop(p, DropReason.UNKNOWN_CLIENT, "known_only: no [[dhcp.host]] entry for this MAC")
        return True

    def _admitted(
        self,
        p: DhcpPacket,
        src: Source,
        key: bytes,
        host: HostConfig | None,
        candidates: Sequence[_Subnet],
        now: float,
    ) -> bool:
        """known_only and the bound on new clients a second, checked at DISCOVER."""
        if self._unknown(p, host):
            return False
        rate = self.config.new_clients_per_second
        if rate <= 0 or host is not None:
            return True
        if any(c.table.by_client(key) is not None for c in candidates):
            return True  # not new: it has (or had) a lease or an offer here
        bucket = self._buckets.get(src.interface)
        if bucket is None:
            bucket = self._buckets[src.interface] = _Bucket(float(rate), now)
        if bucket.take(rate, now):
            if bucket.warned and now - bucket.last_refused >= FLOOD_QUIET:
                bucket.warned = False
                self._note(
                    logging.INFO,
                    "dhcp.new_clients_resumed",
                    iface=src.interface,
                    refused=bucket.refused,
                )
                bucket.refused = 0
            return True
        bucket.refused += 1
        bucket.last_refused = now
        self._count("rate-limited")
        self._dropped(DropReason.RATE_LIMITED)
        if not bucket.warned:
            bucket.warned = True
            self._note(
                logging.WARNING,
                "dhcp.new_clients_limited",
                iface=src.interface,
                limit=rate,
                mac=p.mac,
                detail="more new clients a second than new_clients_per_second; not answering",
            )
        return False

    def _subnet_for_address(self, ip: IPv4Address) -> _Subnet | None:
        for sub in self.subnets:
            if ip in sub.config.network:
                return sub
        return None

    def _lease_time(self, p: DhcpPacket, sub: SubnetConfig) -> int:
        asked = p.lease_time
        if asked is not None and 60 <= asked < sub.lease_time:
            return asked
        return sub.lease_time

    def _server_ip(self, subnet: _Subnet, src: Source) -> IPv4Address:
        """Our address for this subnet's clients: the server identifier and next-server.

        On the segment, pxed's address in the subnet on the interface the request came in
        on (not the interface's primary address, which may be on another network). Through
        a relay, the address the relay sent to (it reaches us). It must be one the TFTP
        server answers on, which serves every address of the interface.
        """
        network = subnet.config.network
        info = self.interfaces.get(src.interface)
        if info is not None:
            own = info.address_in(network)
            if own is not None:
                return own
        if src.local is not None and src.local in self._own:
            return src.local
        for other in self.interfaces.values():
            own = other.address_in(network)
            if own is not None:
                return own
        if info is not None and info.primary is not None:
            return info.primary.ip
        return next(iter(self._own), ZERO)

    def _reply(
        self,
        p: DhcpPacket,
        src: Source,
        subnet: _Subnet,
        mtype: MessageType,
        yiaddr: IPv4Address,
        lease_time: int | None,
        host: HostConfig | None,
        boot: BootChoice | None,
    ) -> Reply:
        """The OFFER or ACK carrying ``boot`` (choose_boot's answer for this client)."""
        server_ip = self._server_ip(subnet, src)
        destination = self._destination(p, src, yiaddr, mtype)
        if boot is None and (host is None or not host.hostname):
            data = self._pack_plain(p, src, subnet, mtype, server_ip, yiaddr, lease_time)
            if data is not None:
                return Reply(data, destination, mtype, server_ip)
        next_server = self.config.boot.next_server or server_ip

        # Order matters: build() drops options from the end when the client's maximum message
        # size is too small, so what a client cannot work without comes first.
        opts = self._head_options(subnet, mtype, server_ip, lease_time)
        if host is not None and host.hostname:
            opts[OptionCode.HOSTNAME] = host.hostname.encode()
        self._add_requested(opts, subnet, p.parameter_request_list)
        file_field = b""
        if boot is not None:
            file_field = add_boot_options(opts, p, boot, next_server, self.config.http.listen)
        if p.client_id is not None:
            opts[OptionCode.CLIENT_ID] = p.client_id  # RFC 6842
        relay = p.relay_agent_info
        if relay is not None and p.giaddr != ZERO:
            opts[OptionCode.RELAY_AGENT_INFO] = relay  # RFC 3046 §2.2: echoed, last

        reply = DhcpPacket(
            op=2,
            htype=p.htype,
            hlen=p.hlen,
            hops=0,
            xid=p.xid,
            secs=0,
            flags=p.flags,
            ciaddr=p.ciaddr if mtype is not MessageType.OFFER else ZERO,
            yiaddr=yiaddr,
            siaddr=next_server if boot is not None else ZERO,
            giaddr=p.giaddr,
            chaddr=p.chaddr,
            file=file_field,
            options=opts,
        )
        data = build(reply, self._max_size(p, src))
        return Reply(data, destination, mtype, server_ip)

    def _head_options(
        self, subnet: _Subnet, mtype: MessageType, server_ip: IPv4Address, lease_time: int | None
    ) -> dict[int, bytes]:
        """The options every reply of this kind on this subnet starts with, in order."""
        opts: dict[int, bytes] = {
            OptionCode.MESSAGE_TYPE: bytes([mtype]),
            OptionCode.SERVER_ID: server_ip.packed,
        }
        if lease_time is not None:
            opts[OptionCode.LEASE_TIME] = struct.pack("!I", lease_time)
            opts[OptionCode.RENEWAL_TIME] = struct.pack("!I", lease_time // 2)
            opts[OptionCode.REBINDING_TIME] = struct.pack("!I", lease_time * 7 // 8)
        opts.update(subnet.base)
        return opts

    def _add_requested(self, opts: dict[int, bytes], subnet: _Subnet, wants: Sequence[int]) -> None:
        """Options only a client that asks for them gets, in the order it asked."""
        optional = subnet.optional
        if optional:
            for code in wants:
                if code in optional and code not in opts:
                    opts[code] = optional[code]

    def _pack_plain(
        self,
        p: DhcpPacket,
        src: Source,
        subnet: _Subnet,
        mtype: MessageType,
        server_ip: IPv4Address,
        yiaddr: IPv4Address,
        lease_time: int | None,
    ) -> bytes | None:
        """The reply to a client that gets no boot file and no host options, or None.

        The same bytes as the general path (a test holds them equal), from options encoded
        once per (kind, server address, lease time, requested list): most of a reply's cost
        was building and encoding the same dozen options for every client. None when the
        reply does not fit the client's size and needs build()'s overload and dropping.
        """
        wants = p.parameter_request_list if subnet.optional else ()
        key = (mtype, server_ip, lease_time, wants)
        area = subnet.encoded.get(key)
        if area is None:
            opts = self._head_options(subnet, mtype, server_ip, lease_time)
            self._add_requested(opts, subnet, wants)
            encoded = bytearray()
            o.encode_options_into(encoded, opts.items())
            area = bytes(encoded[:-1])  # without END: per-client options follow
            if len(subnet.encoded) >= ENCODED_CACHE_SIZE:
                subnet.encoded.clear()  # clients asking in ever new ways; start over
            subnet.encoded[key] = area
        tail: list[tuple[int, bytes]] = []
        client_id = p.client_id
        if client_id is not None:
            tail.append((OptionCode.CLIENT_ID, client_id))  # RFC 6842
        relay = p.relay_agent_info
        if relay is not None and p.giaddr != ZERO:
            tail.append((OptionCode.RELAY_AGENT_INFO, relay))  # RFC 3046 §2.2: echoed, last
        options = bytearray(area)
        o.encode_options_into(options, tail)
        return pack_reply(
            p,
            flags=p.flags,
            ciaddr=0 if mtype is MessageType.OFFER else int(p.ciaddr),
            yiaddr=int(yiaddr),
            siaddr=0,
            options=bytes(options),
            max_size=self._max_size(p, src),
        )

    def _max_size(self, p: DhcpPacket, src: Source) -> int:
        size = p.max_message_size or MIN_MESSAGE
        info = self.interfaces.get(src.interface)
        if info is not None and info.mtu:
            size = min(size, info.mtu)
        return max(size, MIN_MESSAGE)

    def _destination(
        self, p: DhcpPacket, src: Source, yiaddr: IPv4Address, mtype: MessageType
    ) -> Destination:
        """RFC 2131 §4.1 reply routing."""
        if p.giaddr != ZERO:
            return Destination(p.giaddr, SERVER_PORT, src.interface)
        if mtype is MessageType.NAK:
            return Destination(BROADCAST, CLIENT_PORT, src.interface)
        if p.ciaddr != ZERO:
            return Destination(p.ciaddr, CLIENT_PORT, src.interface)
        if p.broadcast_flag or yiaddr == ZERO or p.htype != 1 or p.hlen != 6:
            return Destination(BROADCAST, CLIENT_PORT, src.interface)
        return Destination(yiaddr, CLIENT_PORT, src.interface, mac=p.mac)

    def _nak(self, p: DhcpPacket, src: Source, subnet: _Subnet, why: str, out: Outcome) -> None:
        server_ip = self._server_ip(subnet, src)
        opts: dict[int, bytes] = {
            OptionCode.MESSAGE_TYPE: bytes([MessageType.NAK]),
            OptionCode.SERVER_ID: server_ip.packed,
            OptionCode.MESSAGE: why.encode()[:255],
        }
        if p.client_id is not None:
            opts[OptionCode.CLIENT_ID] = p.client_id
        relay = p.relay_agent_info
        if relay is not None and p.giaddr != ZERO:
            opts[OptionCode.RELAY_AGENT_INFO] = relay
        # A relay must broadcast a NAK to the client: set the broadcast bit (§4.3.2).
        flags = p.flags | 0x8000 if p.giaddr != ZERO else p.flags
        nak = DhcpPacket(
            op=2,
            htype=p.htype,
            hlen=p.hlen,
            xid=p.xid,
            flags=flags,
            giaddr=p.giaddr,
            chaddr=p.chaddr,
            options=opts,
        )
        data = build(nak, self._max_size(p, src))
        destination = self._destination(p, src, ZERO, MessageType.NAK)
        out.replies.append(Reply(data, destination, MessageType.NAK, server_ip))
        self._note(
            logging.INFO,
            "dhcp.nak",
            mac=p.mac,
            xid=_xid(p),
            ip=str(p.requested_ip or p.ciaddr),
            msg_type="REQUEST",
            reason=why,
            arch=_arch(p),
        )
        self._count("nak")

    def _event(
        self, event: str, p: DhcpPacket, ip: IPv4Address, boot: BootChoice | None, **extra: Any
    ) -> None:
        self._count(event)
        if self._decisions:  # the value only: its fields are built by whoever reads them
            self._pending.append(DhcpDecision(event, logging.INFO, p, ip, boot, extra))

    def _drop(self, p: DhcpPacket, cause: DropReason, why: str, **extra: Any) -> None:
        """A request left unanswered: counted by ``cause``; ``why`` in words for the log."""
        self._count("dropped")
        self._dropped(cause)
        if self.min_level > logging.DEBUG:
            return
        mtype = p.message_type
        self._note(
            logging.DEBUG,
            "dhcp.drop",
            mac=p.mac,
            xid=_xid(p),
            reason=why,
            cause=cause.value,
            msg_type=mtype.name if mtype is not None else None,
            **extra,
        )

    def _dropped(self, cause: DropReason) -> None:
        drops = self.drops
        drops[cause] = drops.get(cause, 0) + 1

    def _note(self, level: int, kind: str, **fields: Any) -> None:
        if level >= self.min_level:
            self._pending.append(Notice(kind, level, fields))

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1
