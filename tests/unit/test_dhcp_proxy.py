"""ProxyDHCP rules against the core: only PXE clients, no addresses, boot file on 67 and 4011."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from hypothesis import given, settings
from hypothesis import strategies as st

from pxed.boot import ConfigBootPolicy
from pxed.config import BootConfig, Config, HostConfig, SubnetConfig
from pxed.dhcp.options import MessageType, OptionCode
from pxed.dhcp.packet import DhcpPacket, build, parse
from pxed.dhcp.proxy import PROXY_PORT, ProxyServer
from pxed.dhcp.server import BROADCAST, Outcome, Source
from pxed.netinfo import InterfaceInfo

OC = OptionCode
IFACE = "pxs0"
ME = IPv4Address("198.19.0.5")
ROUTER = IPv4Address("198.19.0.1")
PXE_VC = b"PXEClient:Arch:00007:UNDI:003016"
MAC = bytes.fromhex("525400000001")


def proxy(hosts: tuple[HostConfig, ...] = ()) -> ProxyServer:
    cfg = Config(interfaces=(IFACE,), mode="proxy", hosts=hosts, boot=BootConfig())
    info = InterfaceInfo(IFACE, "02:00:00:00:00:05", (IPv4Interface(f"{ME}/16"),), 1500)
    return ProxyServer(cfg, {IFACE: info}, ConfigBootPolicy(cfg.boot))


def send(
    server: ProxyServer,
    mtype: MessageType,
    *,
    port: int = 67,
    ciaddr: str = "0.0.0.0",
    src: str = "0.0.0.0",
    **opts: bytes,
) -> Outcome:
    options = {OC.MESSAGE_TYPE: bytes([mtype]), **{int(k[1:]): v for k, v in opts.items()}}
    p = DhcpPacket(op=1, xid=0x1234, chaddr=MAC, ciaddr=IPv4Address(ciaddr), options=options)
    return server.receive(build(p), Source(IFACE, IPv4Address(src), 68, port), 0.0)


def test_non_pxe_clients_never_get_an_answer() -> None:
    server = proxy()
    assert send(server, MessageType.DISCOVER).replies == []
    assert send(server, MessageType.DISCOVER, o60=b"MSFT 5.0").replies == []
    assert send(server, MessageType.REQUEST, o54=ME.packed, o50=ME.packed).replies == []


def test_pxe_discover_gets_an_offer_without_an_address() -> None:
    out = send(
        proxy(),
        MessageType.DISCOVER,
        o60=PXE_VC,
        o93=struct.pack("!H", 0),
        o97=b"\x00" + bytes(range(16)),
    )
    (reply,) = out.replies
    offer = parse(reply.data)
    assert offer.message_type is MessageType.OFFER
    assert offer.yiaddr == IPv4Address(0) and offer.siaddr == ME
    assert offer.file == b"pxelinux.0" and offer.options[OC.BOOTFILE_NAME] == b"pxelinux.0"
    assert offer.server_id == ME
    assert offer.options[OC.VENDOR_CLASS_ID] == b"PXEClient"
    assert offer.options[OC.VENDOR_SPECIFIC] == bytes([6, 1, 8, 255])
    assert offer.options[OC.CLIENT_UUID] == b"\x00" + bytes(range(16))
    for code in (OC.LEASE_TIME, OC.SUBNET_MASK, OC.ROUTER, OC.DNS_SERVERS):
        assert code not in offer.options
    assert (reply.destination.address, reply.destination.port) == (BROADCAST, 68)
    assert out.writes == []


def test_port_4011_request_is_acked_to_the_client_with_the_boot_file() -> None:
    client = IPv4Address("198.19.1.23")
    out = send(
        proxy(),
        MessageType.REQUEST,
        port=PROXY_PORT,
        ciaddr=str(client),
        src=str(client),
        o60=PXE_VC,
        o93=struct.pack("!H", 7),
    )
    (reply,) = out.replies
    ack = parse(reply.data)
    assert ack.message_type is MessageType.ACK
    assert ack.file == b"ipxe.efi" and ack.siaddr == ME and ack.yiaddr == IPv4Address(0)
    assert ack.ciaddr == client
    assert (reply.destination.address, reply.destination.port) == (client, 68)


def test_ipxe_gets_the_script_and_hosts_their_file() -> None:
    out = send(proxy(), MessageType.DISCOVER, o60=PXE_VC, o77=b"iPXE")
    assert parse(out.replies[0].data).file == b"boot.ipxe"
    host = HostConfig("52:54:00:00:00:01", None, None, "special.0")
    out = send(proxy((host,)), MessageType.DISCOVER, o60=PXE_VC, o77=b"iPXE")
    assert parse(out.replies[0].data).file == b"special.0"


def test_requests_to_the_router_are_left_alone() -> None:
    out = send(
        proxy(),
        MessageType.REQUEST,
        o60=PXE_VC,
        o54=ROUTER.packed,
        o50=IPv4Address("198.19.1.23").packed,
    )
    assert out.replies == []


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([67, PROXY_PORT]))
def test_no_input_makes_the_proxy_raise(data: bytes, port: int) -> None:
    proxy().receive(data, Source(IFACE, IPv4Address(0), 68, port), 0.0)


def test_requests_on_67_with_our_server_id_are_the_dhcp_servers() -> None:
    # The router's server on this host shares our address, so the firmware's REQUEST for its
    # offer names us: selecting, init-reboot and renewing requests all go unanswered.
    server = proxy()
    for kw in (
        {"o54": ME.packed, "o50": IPv4Address("198.19.2.7").packed},
        {"o50": IPv4Address("198.19.2.7").packed},
        {"o54": ME.packed, "ciaddr": "198.19.2.7", "src": "198.19.2.7"},
    ):
        assert send(server, MessageType.REQUEST, o60=PXE_VC, **kw).replies == []
    assert server.stats["address-request"] == 3


def test_boot_server_discovery_on_67_is_answered() -> None:
    boot_item = bytes([71, 4, 0x80, 0x00, 0x00, 0x00, 255])  # PXE 2.1 §2.2.5: type, layer
    out = send(proxy(), MessageType.REQUEST, o60=PXE_VC, o43=boot_item, ciaddr="198.19.2.7")
    (reply,) = out.replies
    assert parse(reply.data).message_type is MessageType.ACK


def two_address_proxy(**cfg_kw: object) -> ProxyServer:
    cfg = Config(interfaces=(IFACE,), mode="proxy", boot=BootConfig(), **cfg_kw)
    addrs = (IPv4Interface("198.18.0.1/24"), IPv4Interface("198.19.0.5/16"))
    info = InterfaceInfo(IFACE, "02:00:00:00:00:05", addrs, 1500)
    return ProxyServer(cfg, {IFACE: info}, ConfigBootPolicy(cfg.boot))


def offered_server(server: ProxyServer) -> IPv4Address:
    out = send(server, MessageType.DISCOVER, o60=PXE_VC, o93=struct.pack("!H", 0))
    (reply,) = out.replies
    p = parse(reply.data)
    assert p.siaddr == IPv4Address(p.options[OC.SERVER_ID])
    return p.siaddr


def test_the_proxy_answers_from_its_address_in_the_clients_subnet() -> None:
    # Nothing known: the primary address (the only guess there is).
    assert offered_server(two_address_proxy()) == IPv4Address("198.18.0.1")
    # A configured subnet says where the clients are.
    sub = SubnetConfig(network=IPv4Network("198.19.0.0/16"), ranges=())
    assert offered_server(two_address_proxy(subnets=(sub,))) == ME
    # A derived one does not (it is the primary's network, not the router's).
    derived = SubnetConfig(network=IPv4Network("198.18.0.0/24"), ranges=(), derived=True)
    assert offered_server(two_address_proxy(subnets=(derived,))) == IPv4Address("198.18.0.1")
    # Learned: the router's offer to the probe, or a client's REQUEST for the router's offer.
    learned = two_address_proxy()
    learned.learn(IFACE, IPv4Address("198.19.3.9"))
    assert offered_server(learned) == ME
    seen = two_address_proxy()
    send(seen, MessageType.REQUEST, o60=PXE_VC, o50=IPv4Address("198.19.3.10").packed)
    assert offered_server(seen) == ME
