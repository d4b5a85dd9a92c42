"""Real DHCP clients (ISC dhclient, busybox udhcpc) against the server in network namespaces.

Each test: a server namespace with the server under test, a client namespace with the
client, a packet capture on the client side. The capture is the ground truth of what was
sent on the wire; the server's log and lease store are checked against it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from pxed.lab import Lab, wait_for
from pxed.lab.capture import Capture, DhcpMsg
from pxed.lab.clients import Dhclient, Udhcpc
from pxed.lab.dhcp import CLIENT_IF, DhcpNet, DhcpServer, DhcpSetup, Reservation, norm_xid
from tests.lab import dhcp_net

RESERVED_MAC = "52:54:00:12:34:56"
RESERVED_IP = "198.19.0.50"
RESERVED_NAME = "node1"


@pytest.fixture
def net(lab: Lab) -> Iterator[DhcpNet]:
    the_net = dhcp_net(lab)
    try:
        yield the_net
    finally:
        the_net.close()


@pytest.fixture
def reserved_net(lab: Lab) -> Iterator[DhcpNet]:
    setup = DhcpSetup(hosts=(Reservation(RESERVED_MAC, RESERVED_IP, RESERVED_NAME,
                                         "pxelinux.0"),))
    the_net = dhcp_net(lab, setup, client_mac=RESERVED_MAC)
    try:
        yield the_net
    finally:
        the_net.close()


def _renewals(msgs: list[DhcpMsg], ip: str, mac: str) -> list[tuple[DhcpMsg, DhcpMsg]]:
    """(REQUEST, ACK) pairs of RENEWING requests: ciaddr set, no requested-address option."""
    pairs = []
    for req in msgs:
        if req.msg_type != "REQUEST" or req.ciaddr != ip or req.chaddr != mac:
            continue
        for ack in msgs:
            if ack.msg_type == "ACK" and ack.xid == req.xid and ack.time >= req.time:
                pairs.append((req, ack))
                break
    return pairs


def _assert_server_acked(server: DhcpServer, pairs: list[tuple[DhcpMsg, DhcpMsg]], ip: str,
                         mac: str, wire: list[DhcpMsg]) -> None:
    """The server's own log has the renewal ACKs: same address, MAC and transaction.

    Clients may reuse the xid of the first exchange for renewals (dhclient does), so the
    log must show a renewing state where it reports one (pxed: state="renewing"), and as
    many ACKs for those transactions as went out on the wire.
    """
    if not server.logs_events:
        return
    xids = {req.xid for req, _ in pairs}
    logged = [e for e in server.events("dhcp.ack") if norm_xid(e.get("xid")) in xids]
    assert logged, (
        f"no dhcp.ack logged for xids {sorted(xids)}; acks logged: "
        f"{server.events('dhcp.ack')}\n{server.tail()}"
    )
    for event in logged:
        assert event.get("ip") == ip, event
        assert str(event.get("mac", "")).lower() == mac, event
    on_wire = [m for m in wire if m.msg_type == "ACK" and m.xid in xids]
    assert len(logged) >= len(on_wire), (logged, on_wire)
    if any("state" in e for e in logged):
        assert any(e.get("state") == "renewing" for e in logged), logged


def _assert_released(server: DhcpServer, ip: str, mac: str) -> None:
    def released() -> bool:
        lease = server.leases_by_ip().get(ip)
        if server.keeps_released_rows:
            return lease is not None and lease.state == "RELEASED"
        return lease is None or lease.state == "RELEASED"

    ok = wait_for(released, timeout=10)
    assert ok, f"lease {ip} ({mac}) not released: {server.leases_by_ip().get(ip)}\n{server.tail()}"


def test_dhclient_lease_renew_release(net: DhcpNet) -> None:
    setup = net.setup
    server = net.server()
    server.start()
    cap = Capture(net.client_ns, CLIENT_IF, net.tmp / "dhclient.pcap")
    client = Dhclient(net.client_ns, CLIENT_IF, net.tmp / "dhclient", renew_after=2)
    try:
        client.start()
        bound = client.wait_reason(["BOUND"])
        ip = bound["new_ip_address"]
        assert setup.in_pool(ip), bound
        assert bound.get("new_subnet_mask") == setup.netmask, bound
        assert bound.get("new_routers") == setup.router, bound
        assert bound.get("new_domain_name_servers") == " ".join(setup.dns), bound
        assert bound.get("new_domain_name") == setup.domain, bound
        assert bound.get("new_dhcp_server_identifier") == setup.server_ip, bound

        lease = server.leases_by_ip().get(ip)
        assert lease is not None and lease.mac == net.client_mac, (lease, server.tail())
        assert lease.state == "ACTIVE", lease

        # Renewal: dhclient was told T1 = 2 s, so it sends a unicast REQUEST with ciaddr set.
        renew = client.wait_reason(["RENEW"], timeout=20)
        assert renew["new_ip_address"] == ip, renew

        # Reboot: a new dhclient with the same lease file asks for its address back
        # (INIT-REBOOT: REQUEST with requested-address, no ciaddr) and keeps it.
        client.stop()
        seen = len(client.records())
        client.start()
        reboot = client.wait_reason(["REBOOT", "BOUND"], after=seen)
        assert reboot["new_ip_address"] == ip, reboot

        client.release()
        _assert_released(server, ip, net.client_mac)
    finally:
        client.stop()
        cap.stop()

    msgs = cap.messages()
    pairs = _renewals(msgs, ip, net.client_mac)
    assert pairs, f"no RENEWING request/ack on the wire: {[(m.msg_type, m.ciaddr) for m in msgs]}"
    for req, ack in pairs:
        assert "requested_addr" not in req.options, req  # RENEWING: RFC 2131 4.3.2
        assert req.dst == setup.server_ip, req  # unicast to the server
        assert ack.yiaddr == ip, ack
    _assert_server_acked(server, pairs, ip, net.client_mac, msgs)

    releases = [m for m in msgs if m.msg_type == "RELEASE" and m.ciaddr == ip]
    assert releases, "dhclient -r sent no DHCPRELEASE"
    if server.logs_events:
        assert any(e.get("ip") == ip for e in server.events("dhcp.release")), server.tail()

    # SIGTERM: a clean exit, and the release is still on disk afterwards.
    assert server.stop() == 0, server.tail()
    _assert_released(server, ip, net.client_mac)


def test_udhcpc_lease_renew_release(net: DhcpNet) -> None:
    setup = net.setup
    server = net.server()
    server.start()
    cap = Capture(net.client_ns, CLIENT_IF, net.tmp / "udhcpc.pcap")
    client = Udhcpc(net.client_ns, CLIENT_IF, net.tmp / "udhcpc")
    try:
        client.start()
        bound = client.wait_reason(["bound"])
        ip = bound["ip"]
        assert setup.in_pool(ip), bound
        assert bound.get("subnet") == setup.netmask, bound
        assert bound.get("router") == setup.router, bound
        assert bound.get("dns") == " ".join(setup.dns), bound
        assert bound.get("domain") == setup.domain, bound
        assert bound.get("serverid") == setup.server_ip, bound
        lease = server.leases_by_ip().get(ip)
        assert lease is not None and lease.mac == net.client_mac, (lease, server.tail())

        seen = len(client.records())
        client.signal(signal.SIGUSR1)  # renew
        renew = client.wait_reason(["renew", "bound"], after=seen, timeout=20)
        assert renew["ip"] == ip, renew

        seen = len(client.records())
        client.signal(signal.SIGUSR2)  # release
        client.wait_reason(["deconfig"], after=seen, timeout=20)
        _assert_released(server, ip, net.client_mac)
    finally:
        client.stop()
        cap.stop()

    msgs = cap.messages()
    pairs = _renewals(msgs, ip, net.client_mac)
    assert pairs, f"no RENEWING request/ack on the wire: {[(m.msg_type, m.ciaddr) for m in msgs]}"
    for _req, ack in pairs:
        assert ack.yiaddr == ip, ack
    _assert_server_acked(server, pairs, ip, net.client_mac, msgs)
    assert any(m.msg_type == "RELEASE" and m.ciaddr == ip for m in msgs), "no DHCPRELEASE sent"


def test_reservation_gives_reserved_address_and_hostname(reserved_net: DhcpNet) -> None:
    net = reserved_net
    server = net.server()
    server.start()
    cap = Capture(net.client_ns, CLIENT_IF, net.tmp / "reserved.pcap")
    dhclient = Dhclient(net.client_ns, CLIENT_IF, net.tmp / "dhclient")
    try:
        dhclient.start()
        bound = dhclient.wait_reason(["BOUND"])
        assert bound["new_ip_address"] == RESERVED_IP, bound
        assert bound.get("new_host_name") == RESERVED_NAME, bound
        dhclient.stop()

        # A second, different client implementation sees the same reservation.
        udhcpc = Udhcpc(net.client_ns, CLIENT_IF, net.tmp / "udhcpc")
        udhcpc.start("-q")
        rec = udhcpc.wait_reason(["bound"])
        assert rec["ip"] == RESERVED_IP, rec
        assert rec.get("hostname") == RESERVED_NAME, rec
        udhcpc.stop()
    finally:
        dhclient.stop()
        cap.stop()

    offered = [m for m in cap.messages() if m.msg_type in ("OFFER", "ACK")]
    assert offered and all(m.yiaddr == RESERVED_IP for m in offered), offered
    lease = server.leases_by_ip().get(RESERVED_IP)
    assert lease is not None and lease.mac == RESERVED_MAC, lease
