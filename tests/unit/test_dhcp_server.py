"""RFC 2131 / RFC 4578 rules against the DHCP core, with no sockets: bytes in, bytes out."""

from __future__ import annotations

import os
import struct
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxed.boot import ConfigBootPolicy
from pxed.config import BootConfig, Config, HostConfig, SubnetConfig
from pxed.dhcp.options import MessageType, OptionCode
from pxed.dhcp.packet import DhcpPacket, build, parse
from pxed.dhcp.server import BROADCAST, DhcpServer, Outcome, Source
from pxed.leases import LeaseState, LeaseTable
from pxed.netinfo import InterfaceInfo

IFACE = "pxs0"
SERVER_IP = IPv4Address("198.19.0.1")
NET = IPv4Network("198.19.0.0/16")
NOW = 1_800_000_000.0
OC = OptionCode


def make_server(
    *,
    ranges: tuple[tuple[str, str], ...] = (("198.19.1.0", "198.19.1.9"),),
    hosts: tuple[HostConfig, ...] = (),
    boot: BootConfig | None = None,
    **subnet_kw: Any,
) -> DhcpServer:
    sub = SubnetConfig(
        network=NET,
        ranges=tuple((IPv4Address(a), IPv4Address(b)) for a, b in ranges),
        interface=IFACE,
        router=(SERVER_IP,),
        dns=(SERVER_IP,),
        domain="lab.test",
        lease_time=3600,
        **subnet_kw,
    )
    config = Config(
        interfaces=(IFACE,),
        subnets=(sub,),
        hosts=hosts,
        boot=boot or BootConfig(uefi_arm64="ipxe-arm64.efi"),
    )
    info = InterfaceInfo(IFACE, "02:00:00:00:00:01", (IPv4Interface(f"{SERVER_IP}/16"),), 1500)
    reserved = {
        h.ip: b"\x01" + bytes.fromhex(h.mac.replace(":", "")) for h in hosts if h.ip is not None
    }
    table = LeaseTable(NET, sub.ranges, reserved)
    return DhcpServer(config, {IFACE: info}, {str(NET): table}, ConfigBootPolicy(config.boot))


class Client:
    """A scripted client: builds requests the way real clients do and parses the answers."""

    def __init__(self, server: DhcpServer, mac: str = "52:54:00:aa:bb:01", **opts: bytes) -> None:
        self.server = server
        self.mac = mac
        self.chaddr = bytes.fromhex(mac.replace(":", ""))
        self.extra = {int(k[1:]): v for k, v in opts.items()}
        self.xid = int.from_bytes(os.urandom(4), "big")
        self.now = NOW

    def packet(self, mtype: MessageType, **kw: Any) -> DhcpPacket:
        opts: dict[int, bytes] = {OC.MESSAGE_TYPE: bytes([mtype])}
        opts.update(kw.pop("options", {}))
        opts.update(self.extra)
        return DhcpPacket(op=1, xid=self.xid, chaddr=self.chaddr, options=opts, **kw)

    def send(self, packet: DhcpPacket, source: Source | None = None) -> Outcome:
        src = source or Source(IFACE, IPv4Address(0), 68)
        return self.server.receive(build(packet), src, self.now)

    def one(self, packet: DhcpPacket, **kw: Any) -> tuple[DhcpPacket, Outcome]:
        out = self.send(packet, **kw)
        assert len(out.replies) == 1, out
        return parse(out.replies[0].data), out

    def discover(self, **kw: Any) -> tuple[DhcpPacket, Outcome]:
        return self.one(self.packet(MessageType.DISCOVER, **kw))

    def select(self, offer: DhcpPacket) -> tuple[DhcpPacket, Outcome]:
        return self.one(
            self.packet(
                MessageType.REQUEST,
                options={
                    OC.REQUESTED_IP: offer.yiaddr.packed,
                    OC.SERVER_ID: offer.options[OC.SERVER_ID],
                },
            )
        )

    def dora(self) -> DhcpPacket:
        offer, _ = self.discover()
        ack, out = self.select(offer)
        assert ack.message_type is MessageType.ACK
        # A reserved host's binding is stored without holding its ACK back (background).
        writes = out.writes or out.background
        assert writes and writes[0].ip == ack.yiaddr
        return ack


def u32(data: bytes) -> int:
    return int(struct.unpack("!I", data)[0])


# ----------------------------------------------------------------- DORA and routing


def test_discover_offers_a_pool_address_with_the_subnet_options() -> None:
    client = Client(make_server())
    offer, out = client.discover()
    assert offer.message_type is MessageType.OFFER
    assert offer.op == 2 and offer.xid == client.xid and offer.chaddr == client.chaddr
    assert IPv4Address("198.19.1.0") <= offer.yiaddr <= IPv4Address("198.19.1.9")
    assert offer.server_id == SERVER_IP
    assert offer.options[OC.SUBNET_MASK] == IPv4Address("255.255.0.0").packed
    assert offer.options[OC.ROUTER] == SERVER_IP.packed
    assert offer.options[OC.DNS_SERVERS] == SERVER_IP.packed
    assert offer.options[OC.DOMAIN_NAME] == b"lab.test"
    assert offer.options[OC.BROADCAST_ADDRESS] == IPv4Address("198.19.255.255").packed
    assert u32(offer.options[OC.LEASE_TIME]) == 3600
    assert u32(offer.options[OC.RENEWAL_TIME]) == 1800
    assert u32(offer.options[OC.REBINDING_TIME]) == 3150
    assert out.writes == []  # an offer is only a hold in memory
    # No broadcast flag, no address yet: unicast to yiaddr at chaddr (RFC 2131 §4.1).
    dest = out.replies[0].destination
    assert (dest.address, dest.port, dest.mac) == (offer.yiaddr, 68, client.mac)


def test_broadcast_flag_gets_a_broadcast_reply() -> None:
    client = Client(make_server())
    _, out = client.discover(flags=0x8000)
    assert out.replies[0].destination.address == BROADCAST
    assert out.replies[0].destination.mac is None


def test_request_after_offer_is_acked_and_must_be_written_first() -> None:
    client = Client(make_server())
    ack = client.dora()
    assert ack.yiaddr != IPv4Address(0)
    lease = client.server.tables[str(NET)].by_client(b"\x01" + client.chaddr)
    assert lease is not None and lease.state is LeaseState.ACTIVE and lease.ip == ack.yiaddr


def test_two_clients_are_never_offered_the_same_address() -> None:
    server = make_server()
    offers = {Client(server, f"52:54:00:00:00:{i:02x}").discover()[0].yiaddr for i in range(10)}
    assert len(offers) == 10


def test_request_for_another_server_is_ignored() -> None:
    client = Client(make_server())
    offer, _ = client.discover()
    out = client.send(
        client.packet(
            MessageType.REQUEST,
            options={
                OC.REQUESTED_IP: offer.yiaddr.packed,
                OC.SERVER_ID: IPv4Address("198.19.0.99").packed,
            },
        )
    )
    assert out.replies == [] and out.writes == []


def test_selecting_an_address_held_for_someone_else_is_naked() -> None:
    server = make_server()
    a, b = Client(server, "52:54:00:00:00:0a"), Client(server, "52:54:00:00:00:0b")
    offer_a, _ = a.discover()
    nak, out = b.one(
        b.packet(
            MessageType.REQUEST,
            options={OC.REQUESTED_IP: offer_a.yiaddr.packed, OC.SERVER_ID: SERVER_IP.packed},
        )
    )
    assert nak.message_type is MessageType.NAK
    assert nak.yiaddr == IPv4Address(0) and OC.LEASE_TIME not in nak.options
    assert out.replies[0].destination.address == BROADCAST
    assert out.writes == []


def test_init_reboot_rules() -> None:
    server = make_server()
    client = Client(server)
    ack = client.dora()
    # INIT-REBOOT with its own address: ACK.
    again, _ = client.one(
        client.packet(MessageType.REQUEST, options={OC.REQUESTED_IP: ack.yiaddr.packed})
    )
    assert again.message_type is MessageType.ACK and again.yiaddr == ack.yiaddr
    # Moved from another network: NAK.
    nak, _ = client.one(
        client.packet(
            MessageType.REQUEST, options={OC.REQUESTED_IP: IPv4Address("10.1.2.3").packed}
        )
    )
    assert nak.message_type is MessageType.NAK
    # Another client asking for this one's address: NAK.
    other = Client(server, "52:54:00:00:00:99")
    nak2, _ = other.one(
        other.packet(MessageType.REQUEST, options={OC.REQUESTED_IP: ack.yiaddr.packed})
    )
    assert nak2.message_type is MessageType.NAK


def test_renewing_is_acked_unicast_to_ciaddr_and_extends_the_lease() -> None:
    client = Client(make_server())
    ack = client.dora()
    client.now += 1800
    renew, out = client.one(
        client.packet(MessageType.REQUEST, ciaddr=ack.yiaddr), source=Source(IFACE, ack.yiaddr, 68)
    )
    assert renew.message_type is MessageType.ACK and renew.yiaddr == ack.yiaddr
    assert renew.ciaddr == ack.yiaddr
    assert out.replies[0].destination.address == ack.yiaddr
    assert out.writes[0].expires == pytest.approx(client.now + 3600)


def test_renewing_someone_elses_address_is_naked() -> None:
    server = make_server()
    a = Client(server, "52:54:00:00:00:0a")
    ack = a.dora()
    b = Client(server, "52:54:00:00:00:0b")
    nak, _ = b.one(b.packet(MessageType.REQUEST, ciaddr=ack.yiaddr))
    assert nak.message_type is MessageType.NAK


def test_decline_quarantines_the_address() -> None:
    server = make_server(ranges=(("198.19.1.0", "198.19.1.2"),))
    a = Client(server, "52:54:00:00:00:0a")
    ack = a.dora()
    out = a.send(
        a.packet(
            MessageType.DECLINE,
            options={OC.REQUESTED_IP: ack.yiaddr.packed, OC.SERVER_ID: SERVER_IP.packed},
        )
    )
    assert out.replies == []
    assert out.writes and out.writes[0].state is LeaseState.DECLINED
    # Neither this client nor any other gets the declined address while it is quarantined.
    for mac in ("52:54:00:00:00:0a", "52:54:00:00:00:0b"):
        offer, _ = Client(server, mac).discover()
        assert offer.yiaddr != ack.yiaddr


def test_release_frees_the_address_for_others() -> None:
    server = make_server(ranges=(("198.19.1.0", "198.19.1.0"),))
    a = Client(server, "52:54:00:00:00:0a")
    ack = a.dora()
    b = Client(server, "52:54:00:00:00:0b")
    assert b.send(b.packet(MessageType.DISCOVER)).replies == []  # exhausted
    out = a.send(
        a.packet(MessageType.RELEASE, ciaddr=ack.yiaddr, options={OC.SERVER_ID: SERVER_IP.packed})
    )
    assert out.replies == [] and out.writes[0].state is LeaseState.RELEASED
    b.xid += 1
    offer, _ = b.discover()
    assert offer.yiaddr == ack.yiaddr


def test_release_by_another_client_changes_nothing() -> None:
    server = make_server()
    ack = Client(server, "52:54:00:00:00:0a").dora()
    b = Client(server, "52:54:00:00:00:0b")
    out = b.send(b.packet(MessageType.RELEASE, ciaddr=ack.yiaddr))
    assert out.writes == []


def test_inform_gets_options_but_no_lease() -> None:
    client = Client(make_server())
    ciaddr = IPv4Address("198.19.0.77")
    ack, out = client.one(client.packet(MessageType.INFORM, ciaddr=ciaddr))
    assert ack.message_type is MessageType.ACK
    assert ack.yiaddr == IPv4Address(0)
    assert OC.LEASE_TIME not in ack.options and OC.RENEWAL_TIME not in ack.options
    assert ack.options[OC.DNS_SERVERS] == SERVER_IP.packed
    assert out.replies[0].destination.address == ciaddr
    assert out.writes == []


def test_pool_exhaustion_gives_no_offer_then_recovers(caplog: pytest.LogCaptureFixture) -> None:
    server = make_server(ranges=(("198.19.1.0", "198.19.1.1"),))
    acks = [Client(server, f"52:54:00:00:00:{i:02x}").dora() for i in range(2)]
    late = Client(server, "52:54:00:00:00:ff")
    for _ in range(3):
        assert late.send(late.packet(MessageType.DISCOVER)).replies == []
    assert server.stats["exhausted"] == 3
    holder = Client(server, "52:54:00:00:00:00")
    holder.send(
        holder.packet(
            MessageType.RELEASE, ciaddr=acks[0].yiaddr, options={OC.SERVER_ID: SERVER_IP.packed}
        )
    )
    offer, _ = late.discover()
    assert offer.yiaddr == acks[0].yiaddr


def test_expired_leases_are_reused() -> None:
    server = make_server(ranges=(("198.19.1.0", "198.19.1.0"),))
    a = Client(server, "52:54:00:00:00:0a")
    ack = a.dora()
    b = Client(server, "52:54:00:00:00:0b")
    b.now = NOW + 3601
    offer, _ = b.discover()
    assert offer.yiaddr == ack.yiaddr


def test_client_id_is_the_identity_and_is_echoed() -> None:
    server = make_server()
    cid = b"\xff\x00\x00\x00\x01\x00\x01\x02\x03"
    a = Client(server, "52:54:00:00:00:0a", o61=cid)
    ack = a.dora()
    assert ack.options[OC.CLIENT_ID] == cid  # RFC 6842
    # Same client-id behind another NIC: same lease.
    b = Client(server, "52:54:00:00:00:0b", o61=cid)
    offer, _ = b.discover()
    assert offer.yiaddr == ack.yiaddr


# ----------------------------------------------------------------- relays


def test_relayed_request_goes_back_to_the_relay_with_option_82_last() -> None:
    client = Client(make_server())
    relay = IPv4Address("198.19.0.2")
    agent = bytes([1, 4]) + b"eth7" + bytes([2, 2]) + b"\x00\x01"
    offer, out = client.one(
        client.packet(
            MessageType.DISCOVER, giaddr=relay, hops=1, options={OC.RELAY_AGENT_INFO: agent}
        )
    )
    assert offer.giaddr == relay
    dest = out.replies[0].destination
    assert (dest.address, dest.port, dest.mac) == (relay, 67, None)
    assert offer.options[OC.RELAY_AGENT_INFO] == agent
    assert list(offer.options)[-1] == OC.RELAY_AGENT_INFO


def test_relayed_request_from_an_unknown_subnet_is_dropped() -> None:
    client = Client(make_server())
    out = client.send(client.packet(MessageType.DISCOVER, giaddr=IPv4Address("10.9.9.1")))
    assert out.replies == []


def test_unconfigured_interface_is_ignored() -> None:
    client = Client(make_server())
    out = client.send(
        client.packet(MessageType.DISCOVER), source=Source("eth9", IPv4Address(0), 68)
    )
    assert out.replies == []


# ----------------------------------------------------------------- reservations


def test_reservation_gets_its_address_hostname_and_nobody_else_does() -> None:
    host = HostConfig("52:54:00:12:34:56", IPv4Address("198.19.0.50"), "node1", "pxelinux.0")
    server = make_server(hosts=(host,), ranges=(("198.19.0.50", "198.19.0.51"),))
    node = Client(server, host.mac)
    ack = node.dora()
    assert ack.yiaddr == host.ip
    assert ack.options[OC.HOSTNAME] == b"node1"
    others = {Client(server, f"52:54:00:00:01:{i:02x}").discover()[0].yiaddr for i in range(1)}
    assert host.ip not in others
    # A reserved host asking for another address is told no.
    nak, _ = node.one(
        node.packet(
            MessageType.REQUEST, options={OC.REQUESTED_IP: IPv4Address("198.19.0.51").packed}
        )
    )
    assert nak.message_type is MessageType.NAK


# ----------------------------------------------------------------- PXE

PXE_VC = b"PXEClient:Arch:00000:UNDI:002001"


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        (None, "pxelinux.0"),
        (0, "pxelinux.0"),
        (7, "ipxe.efi"),
        (9, "ipxe.efi"),
        (11, "ipxe-arm64.efi"),
        (0x4242, "pxelinux.0"),  # unknown architecture: the default
    ],
)
def test_boot_file_by_architecture(arch: int | None, expected: str) -> None:
    opts = {"o60": PXE_VC}
    if arch is not None:
        opts["o93"] = struct.pack("!H", arch)
    client = Client(make_server(), **opts)
    offer, _ = client.discover()
    assert offer.file == expected.encode()
    assert offer.options[OC.BOOTFILE_NAME] == expected.encode()
    assert offer.siaddr == SERVER_IP
    assert offer.options[OC.VENDOR_CLASS_ID] == b"PXEClient"
    assert offer.options[OC.TFTP_SERVER_NAME] == str(SERVER_IP).encode()
    # Without option 43 EDK2 takes this for a BINL offer and asks port 4011 instead (PXE-E16).
    assert offer.options[OC.VENDOR_SPECIFIC] == bytes([6, 1, 8, 255])


def test_a_configured_option_43_is_what_pxe_clients_get() -> None:
    mine = bytes([6, 1, 3, 8, 7, 0x80, 0, 1, 198, 19, 0, 1, 255])  # a boot-server list
    server = make_server(options=((OC.VENDOR_SPECIFIC, mine),))
    client = Client(server, o60=PXE_VC, o55=bytes([1, 3, 43, 60, 66, 67]))
    offer, _ = client.discover()
    assert offer.options[OC.VENDOR_SPECIFIC] == mine
    assert offer.options[OC.VENDOR_CLASS_ID] == b"PXEClient"


@pytest.mark.parametrize(
    "ipxe_opts", [{"o77": b"iPXE"}, {"o175": b"\x13\x01\x01"}, {"o77": b"\x04iPXE"}]
)
def test_ipxe_gets_its_script_not_itself(ipxe_opts: dict[str, bytes]) -> None:
    client = Client(make_server(), o60=PXE_VC, o93=struct.pack("!H", 7), **ipxe_opts)
    offer, _ = client.discover()
    assert offer.file == b"boot.ipxe"


def test_host_boot_wins_and_warns_on_chainload_loop(caplog: pytest.LogCaptureFixture) -> None:
    host = HostConfig("52:54:00:12:34:56", None, None, "undionly.kpxe")
    server = make_server(hosts=(host,))
    client = Client(server, host.mac, o60=PXE_VC, o77=b"iPXE", o93=struct.pack("!H", 7))
    offer, _ = client.discover()
    assert offer.file == b"undionly.kpxe"


def test_plain_dhcp_clients_get_no_boot_file() -> None:
    client = Client(make_server())
    offer, _ = client.discover()
    assert offer.file == b"" and OC.BOOTFILE_NAME not in offer.options
    assert offer.siaddr == IPv4Address(0)
    assert OC.VENDOR_CLASS_ID not in offer.options


def test_next_server_override() -> None:
    boot = BootConfig(next_server=IPv4Address("198.19.0.9"))
    client = Client(make_server(boot=boot), o60=PXE_VC)
    offer, _ = client.discover()
    assert offer.siaddr == IPv4Address("198.19.0.9")
    assert offer.server_id == SERVER_IP


# ----------------------------------------------------------------- options


def test_optional_options_only_when_requested() -> None:
    server = make_server(
        ntp=(SERVER_IP,),
        mtu=9000,
        options=((150, b"\xc6\x13\x00\x02"),),
        routes=((IPv4Network("198.18.5.0/24"), SERVER_IP),),
    )
    plain, _ = Client(server, "52:54:00:00:00:01").discover()
    for code in (OC.NTP_SERVERS, OC.INTERFACE_MTU, 150, OC.CLASSLESS_STATIC_ROUTES):
        assert code not in plain.options
    asks = Client(server, "52:54:00:00:00:02", o55=bytes([42, 26, 150, 121]))
    offer, _ = asks.discover()
    assert offer.options[OC.NTP_SERVERS] == SERVER_IP.packed
    assert offer.options[OC.INTERFACE_MTU] == struct.pack("!H", 9000)
    assert offer.options[150] == b"\xc6\x13\x00\x02"
    assert offer.options[OC.CLASSLESS_STATIC_ROUTES] == bytes([24, 198, 18, 5]) + SERVER_IP.packed


def test_shorter_lease_is_granted_when_asked() -> None:
    client = Client(make_server(), o51=struct.pack("!I", 600))
    offer, _ = client.discover()
    assert u32(offer.options[OC.LEASE_TIME]) == 600


def test_reply_respects_the_maximum_message_size() -> None:
    big = tuple((code, bytes(200)) for code in range(128, 140))
    server = make_server(options=big)
    client = Client(server, o57=struct.pack("!H", 576), o55=bytes(range(128, 140)))
    out = client.send(client.packet(MessageType.DISCOVER))
    assert len(out.replies[0].data) <= 576 - 28
    offer = parse(out.replies[0].data)
    assert offer.message_type is MessageType.OFFER and offer.server_id == SERVER_IP


# What a client may send that shapes a plain reply, as Client(**opts) takes it.
CLIENT_OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "o55": st.lists(
            st.sampled_from([1, 3, 6, 15, 26, 42, 51, 121, 128, 129, 130]), min_size=1, max_size=8
        ).map(bytes),
        "o61": st.binary(min_size=2, max_size=300),
        "o82": st.binary(min_size=1, max_size=40).map(lambda b: b"\x01" + bytes([len(b)]) + b),
        "o57": st.integers(576, 1500).map(lambda n: struct.pack("!H", n)),
        "o51": st.integers(0, 7200).map(lambda n: struct.pack("!I", n)),
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    opts=CLIENT_OPTIONS,
    relayed=st.booleans(),
    flags=st.sampled_from([0, 0x8000]),
    big=st.integers(0, 250),
)
def test_plain_replies_are_the_bytes_the_general_path_builds(
    opts: dict[str, bytes], relayed: bool, flags: int, big: int
) -> None:
    # DhcpServer._pack_plain encodes a client's reply from options encoded once per kind;
    # whatever a client asks, it must send exactly what build() makes of the same reply.
    def server() -> DhcpServer:
        return make_server(
            ntp=(SERVER_IP,),
            mtu=1400,
            routes=((IPv4Network("10.0.0.0/8"), SERVER_IP),),
            options=((128, b"x" * big), (129, b"y" * 300), (130, b"")),
        )

    fast, general = server(), server()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(general, "_pack_plain", lambda *args: None)
        compare_replies(fast, general, opts, relayed, flags)


def compare_replies(
    fast: DhcpServer, general: DhcpServer, opts: dict[str, bytes], relayed: bool, flags: int
) -> None:
    relay = Source(IFACE, IPv4Address("198.19.0.2"), 67)
    kw: dict[str, Any] = {"flags": flags}
    if relayed:
        kw.update(giaddr=IPv4Address("198.19.0.2"), hops=1)
    a, b = Client(fast, **opts), Client(general, **opts)
    b.xid = a.xid
    bound = IPv4Address("198.19.1.0")
    steps: list[tuple[MessageType, dict[str, Any]]] = [
        (MessageType.DISCOVER, {}),
        (MessageType.REQUEST, {"options": {OC.REQUESTED_IP: bound.packed}}),  # INIT-REBOOT
        (MessageType.REQUEST, {"ciaddr": bound}),  # RENEWING: ciaddr echoed in the ACK
        (MessageType.INFORM, {"ciaddr": bound}),
    ]
    for mtype, step in steps:
        extra = {**kw, **step}
        source = relay if relayed else None
        one = a.send(a.packet(mtype, **extra), source)
        two = b.send(b.packet(mtype, **extra), source)
        assert [r.data for r in one.replies] == [r.data for r in two.replies]
        assert [r.destination for r in one.replies] == [r.destination for r in two.replies]
        assert one.replies  # every one of them is answered


# ----------------------------------------------------------------- hostile input

VALID = build(
    DhcpPacket(
        op=1,
        xid=1,
        chaddr=bytes(6),
        options={
            OC.MESSAGE_TYPE: b"\x03",
            OC.REQUESTED_IP: IPv4Address("198.19.1.3").packed,
            OC.CLIENT_ID: b"\x01" + bytes(6),
            OC.PARAMETER_REQUEST_LIST: bytes([1, 3, 6, 43, 66, 67]),
            OC.CLIENT_ARCH: b"\x00\x07",
            OC.USER_CLASS: b"iPXE",
            OC.RELAY_AGENT_INFO: b"\x01\x01x",
        },
    )
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=700),
        st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)).map(
            lambda t: VALID[: t[0]] + bytes([t[1]]) + VALID[t[0] + 1 :]
        ),
        st.integers(0, len(VALID)).map(lambda n: VALID[:n]),
        st.tuples(st.integers(240, len(VALID)), st.binary(min_size=1, max_size=8)).map(
            lambda t: VALID[: t[0]] + t[1] + VALID[t[0] :]
        ),
    )
)
def test_no_input_makes_the_core_raise(data: bytes) -> None:
    server = make_server()
    for src in (Source(IFACE, IPv4Address(0), 68), Source(IFACE, IPv4Address("198.19.0.2"), 67)):
        out = server.receive(data, src, NOW)
        for reply in out.replies:
            parse(reply.data)  # whatever we answer is itself well-formed


def test_config_built_in_code_works_with_replace() -> None:
    # Frozen configuration objects are changed by copying, as embedders will.
    server = make_server()
    cfg = replace(server.config, offer_hold=5.0)
    assert cfg.offer_hold == 5.0


# ----------------------------------------------------------------- hostile clients

VICTIM = "52:54:00:00:00:0a"
RESERVED_MAC = "52:54:00:00:00:50"
RESERVED_IP = IPv4Address("198.19.0.50")


def decline(client: Client, ip: IPv4Address, server_id: IPv4Address = SERVER_IP) -> Outcome:
    return client.send(
        client.packet(
            MessageType.DECLINE,
            options={OC.REQUESTED_IP: ip.packed, OC.SERVER_ID: server_id.packed},
        )
    )


def test_a_decline_from_another_client_changes_nothing() -> None:
    server = make_server(hosts=(HostConfig(mac=RESERVED_MAC, ip=RESERVED_IP),))
    ack = Client(server, VICTIM).dora()
    # Another chaddr, and the same chaddr with another client-id: neither holds the address.
    for attacker in (
        Client(server, "52:54:00:66:66:66"),
        Client(server, VICTIM, o61=b"\x01attacker"),
        Client(server, "52:54:00:66:66:66", o61=b"\x01" + bytes.fromhex("525400000050")),
        # The victim's identity as its key has it (01 + MAC), from another chaddr.
        Client(server, "52:54:00:66:66:66", o61=b"\x01" + bytes.fromhex("52540000000a")),
    ):
        for ip in (ack.yiaddr, RESERVED_IP):
            out = decline(attacker, ip)
            assert out.writes == [] and out.replies == []
    assert server.stats["dropped"] >= 8
    # The victim renews its lease and the reserved host still gets its address.
    victim = Client(server, VICTIM)
    renewed, _ = victim.one(
        victim.packet(MessageType.REQUEST, ciaddr=ack.yiaddr), source=Source(IFACE, ack.yiaddr, 68)
    )
    assert renewed.message_type is MessageType.ACK and renewed.yiaddr == ack.yiaddr
    assert Client(server, RESERVED_MAC).dora().yiaddr == RESERVED_IP


def test_a_decline_needs_our_server_identifier() -> None:
    server = make_server()
    a = Client(server, VICTIM)
    ack = a.dora()
    assert decline(a, ack.yiaddr, IPv4Address("198.19.0.254")).writes == []
    assert decline(a, ack.yiaddr).writes[0].state is LeaseState.DECLINED


def test_a_release_from_another_client_or_server_id_changes_nothing() -> None:
    server = make_server()
    ack = Client(server, VICTIM).dora()
    b = Client(server, "52:54:00:00:00:0b")
    out = b.send(
        b.packet(MessageType.RELEASE, ciaddr=ack.yiaddr, options={OC.SERVER_ID: SERVER_IP.packed})
    )
    assert out.writes == []
    a = Client(server, VICTIM)
    other_server = IPv4Address("198.19.0.254").packed
    out = a.send(
        a.packet(MessageType.RELEASE, ciaddr=ack.yiaddr, options={OC.SERVER_ID: other_server})
    )
    assert out.writes == []


def test_the_reserved_hosts_client_id_from_another_machine_is_not_the_host() -> None:
    server = make_server(hosts=(HostConfig(mac=RESERVED_MAC, ip=RESERVED_IP),))
    spoof = Client(server, "52:54:00:66:66:66", o61=b"\x01" + bytes.fromhex("525400000050"))
    offer, _ = spoof.discover()
    assert offer.yiaddr != RESERVED_IP
    nak, _ = spoof.one(
        spoof.packet(
            MessageType.REQUEST,
            options={OC.REQUESTED_IP: RESERVED_IP.packed, OC.SERVER_ID: SERVER_IP.packed},
        )
    )
    assert nak.message_type is MessageType.NAK
    init_reboot, _ = spoof.one(
        spoof.packet(MessageType.REQUEST, options={OC.REQUESTED_IP: RESERVED_IP.packed})
    )
    assert init_reboot.message_type is MessageType.NAK
    assert Client(server, RESERVED_MAC).dora().yiaddr == RESERVED_IP


def test_known_only_answers_only_hosts_in_the_configuration() -> None:
    server = make_server(hosts=(HostConfig(mac=RESERVED_MAC, ip=RESERVED_IP),))
    server.config = replace(server.config, known_only=True)
    stranger = Client(server, "52:54:00:66:66:66")
    assert stranger.send(stranger.packet(MessageType.DISCOVER)).replies == []
    out = stranger.send(
        stranger.packet(
            MessageType.REQUEST, options={OC.REQUESTED_IP: IPv4Address("198.19.1.1").packed}
        )
    )
    assert out.replies == [] and out.writes == []
    assert server.stats["unknown-client"] == 2
    assert Client(server, RESERVED_MAC).dora().yiaddr == RESERVED_IP


def test_new_clients_a_second_are_bounded_per_interface(caplog: pytest.LogCaptureFixture) -> None:
    server = make_server(ranges=(("198.19.1.0", "198.19.1.200"),))
    server.config = replace(server.config, new_clients_per_second=5)
    known = Client(server, VICTIM)
    known.dora()
    offers = 0
    for i in range(20):
        c = Client(server, f"52:54:00:77:00:{i:02x}")
        offers += len(c.send(c.packet(MessageType.DISCOVER)).replies)
    assert offers == 4  # the victim's DORA took the first of the 5
    assert server.stats["rate-limited"] == 16
    # A client the server knows is answered while new ones are refused.
    known.xid += 1
    offer, _ = known.discover()
    assert offer.message_type is MessageType.OFFER
    # A second later, new clients are admitted again.
    late = Client(server, "52:54:00:78:00:01")
    late.now = NOW + 1.0
    assert len(late.send(late.packet(MessageType.DISCOVER)).replies) == 1


def two_subnet_server() -> DhcpServer:
    net_a, net_b = IPv4Network("198.19.10.0/24"), IPv4Network("198.19.11.0/24")
    subs = tuple(
        SubnetConfig(
            network=net,
            ranges=((net.network_address + 100, net.network_address + 150),),
            interface=IFACE,
        )
        for net in (net_a, net_b)
    )
    config = Config(interfaces=(IFACE,), subnets=subs)
    addrs = (
        IPv4Interface("198.18.0.1/24"),
        IPv4Interface("198.19.10.1/24"),
        IPv4Interface("198.19.11.1/24"),
    )
    info = InterfaceInfo(IFACE, "02:00:00:00:00:01", addrs, 1500)
    tables = {str(s.network): LeaseTable(s.network, s.ranges) for s in subs}
    return DhcpServer(config, {IFACE: info}, tables, ConfigBootPolicy(config.boot))


def test_several_subnets_on_one_segment_each_answer_from_their_own_address() -> None:
    server = two_subnet_server()
    first, _ = Client(server, "52:54:00:00:00:01").discover()
    assert first.yiaddr == IPv4Address("198.19.10.100")
    assert first.options[OC.SERVER_ID] == IPv4Address("198.19.10.1").packed
    # A client asking for an address in the second subnet is served from that one.
    b = Client(server, "52:54:00:00:00:02")
    offer, _ = b.discover(options={OC.REQUESTED_IP: IPv4Address("198.19.11.120").packed})
    assert offer.yiaddr == IPv4Address("198.19.11.120")
    assert offer.options[OC.SERVER_ID] == IPv4Address("198.19.11.1").packed
    ack, _ = b.select(offer)
    assert ack.message_type is MessageType.ACK
    assert ack.options[OC.SERVER_ID] == IPv4Address("198.19.11.1").packed


def test_an_address_removed_takes_its_subnet_off_the_segment() -> None:
    server = two_subnet_server()
    info = server.interfaces[IFACE]
    server.set_interfaces(
        {IFACE: replace(info, addresses=tuple(a for a in info.addresses if a.ip.packed[2] != 10))}
    )
    offer, _ = Client(server, "52:54:00:00:00:01").discover()
    assert offer.yiaddr == IPv4Address("198.19.11.100")
    assert offer.options[OC.SERVER_ID] == IPv4Address("198.19.11.1").packed


def test_a_relayed_request_is_answered_from_the_address_the_relay_reached() -> None:
    relayed = IPv4Network("198.18.5.0/24")
    sub = SubnetConfig(network=relayed, ranges=((relayed[100], relayed[150]),))
    config = Config(interfaces=(IFACE,), subnets=(sub,))
    addrs = (IPv4Interface("198.18.0.1/24"), IPv4Interface("198.18.4.1/24"))
    info = InterfaceInfo(IFACE, "02:00:00:00:00:01", addrs, 1500)
    server = DhcpServer(
        config, {IFACE: info}, {str(relayed): LeaseTable(relayed, sub.ranges)},
        ConfigBootPolicy(config.boot),
    )  # fmt: skip
    c = Client(server)
    src = Source(IFACE, IPv4Address("198.18.4.2"), 67, local=IPv4Address("198.18.4.1"))
    offer, _ = c.one(c.packet(MessageType.DISCOVER, giaddr=relayed[1], hops=1), source=src)
    assert offer.options[OC.SERVER_ID] == IPv4Address("198.18.4.1").packed


def test_a_host_entry_without_an_address_gets_a_pool_lease() -> None:
    # A per-host boot rule ([[dhcp.host]] mac + boot, no ip): the REQUEST used to raise
    # inside the core (None in a network), so such a host never got its ACK.
    server = make_server(hosts=(HostConfig(mac=VICTIM, boot="special.0"),))
    ack = Client(server, VICTIM).dora()
    assert ack.yiaddr in NET and ack.file.rstrip(b"\0") == b"special.0"


def test_ack_records_the_clients_arch_and_boot_file() -> None:
    """The lease written with an ACK says what `pxed leases` shows: option 93 and the file."""
    client = Client(make_server(), o60=PXE_VC, o93=struct.pack("!H", 7))
    offer, _ = client.discover()
    ack, out = client.select(offer)
    assert ack.options[OC.BOOTFILE_NAME] == b"ipxe.efi"
    (lease,) = out.writes
    assert (lease.arch, lease.boot_file) == (7, "ipxe.efi")
    plain = Client(client.server, mac="52:54:00:aa:bb:02")
    plain.dora()
    lease = client.server.tables[str(NET)].by_client(b"\x01" + plain.chaddr)
    assert lease is not None and (lease.arch, lease.boot_file) == (None, None)
