"""perfdhcp (Kea's load generator, posing as a relay) against the server in namespaces.

perfdhcp needs an address on its link and talks to the server from port 67 with giaddr set,
so the server answers it as it answers any relay. What clients were given is read from a
capture on the client side of the link, never from the server's own account.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pxed.lab import Lab, wait_for
from pxed.lab.capture import Capture, DhcpMsg, acks, conflicting_acks
from pxed.lab.clients import finish_perfdhcp, mac_in_space, run_perfdhcp, start_perfdhcp
from pxed.lab.dhcp import CLIENT_IF, DhcpNet, Lease
from tests.lab import dhcp_net

# Two disjoint client MAC spaces (perfdhcp -b mac=BASE -R N draws BASE .. BASE+N-1).
BEFORE_BASE, BEFORE_N = "02:00:00:0a:00:00", 20000
AFTER_BASE, AFTER_N = "02:00:00:0b:00:00", 2000
RATE, PERIOD = 200, 10  # a modest load: exchanges per second, seconds
CRASH_RATE = 2000


@pytest.fixture
def net(lab: Lab) -> Iterator[DhcpNet]:
    the_net = dhcp_net(lab)
    try:
        yield the_net
    finally:
        the_net.close()


def _last_ack_per_mac(msgs: list[DhcpMsg]) -> dict[str, DhcpMsg]:
    last: dict[str, DhcpMsg] = {}
    for m in acks(msgs):
        last[m.chaddr] = m
    return last


def _missing(expected: dict[str, DhcpMsg], leases: dict[str, Lease], now: float) -> list[str]:
    """ACKed bindings (mac -> ACK) that the lease store does not hold as active and unexpired."""
    out = []
    for mac, ack in expected.items():
        lease = leases.get(ack.yiaddr)
        if lease is None or lease.mac != mac or lease.state != "ACTIVE" or lease.expires <= now:
            out.append(f"{ack.yiaddr} {mac}: {lease}")
    return out


def test_perfdhcp_relay_exchanges_without_drops(net: DhcpNet) -> None:
    server = net.server(quiet=True)  # no per-packet logging: 800 packets/s
    server.start()
    relay = net.add_relay_address()
    cap = Capture(net.client_ns, CLIENT_IF, net.tmp / "perf.pcap")
    lost0 = net.client_ns.udp_rcvbuf_errors()
    try:
        # Replies may be up to 3 s late (-d 3) on a busy machine: this asserts that every
        # exchange completes; how fast is for bench/dhcp.
        res = run_perfdhcp(net.client_ns, rate=RATE, clients=2000, period=PERIOD, drop_time=3,
                           timeout=60)
    finally:
        cap.stop()
    # Replies the kernel dropped at perfdhcp's own full socket (the load generator starved of
    # CPU on a busy machine) are not the server's drops; the capture still saw them.
    lost_at_perfdhcp = net.client_ns.udp_rcvbuf_errors() - lost0
    assert {"DISCOVER-OFFER", "REQUEST-ACK"} <= res.exchanges.keys(), res.output
    for name, ex in res.exchanges.items():
        assert ex.sent >= 0.75 * RATE * PERIOD, (name, ex, res.output)
        assert ex.drops <= lost_at_perfdhcp, (name, ex, lost_at_perfdhcp, res.output)
        assert ex.rejected == 0, (name, ex)
    if lost_at_perfdhcp == 0:
        assert res.returncode == 0, res.output

    msgs = cap.messages()
    assert cap.kernel_drops == 0, cap.stats
    # On the wire: every DISCOVER answered by an OFFER, every REQUEST by an ACK.
    answered = {(m.msg_type, m.xid) for m in msgs}
    unanswered = [
        (m.msg_type, m.xid, m.chaddr) for m in msgs
        if (m.msg_type == "DISCOVER" and ("OFFER", m.xid) not in answered)
        or (m.msg_type == "REQUEST" and ("ACK", m.xid) not in answered)
    ]
    assert not unanswered, f"{len(unanswered)} unanswered: {unanswered[:20]}"
    replies = [m for m in msgs if m.msg_type in ("OFFER", "ACK")]
    assert len(acks(msgs)) >= res.ra.received, (len(acks(msgs)), res.ra)
    for m in replies:
        assert m.giaddr == relay, m
        assert m.dst == relay, m  # answered to the relay, RFC 2131 4.1
        assert net.setup.in_pool(m.yiaddr), m
    assert conflicting_acks(msgs) == {}
    # Every binding a client was last ACKed is in the store, owned by that client.
    missing = _missing(_last_ack_per_mac(msgs), server.leases_by_ip(), time.time())
    assert not missing, missing[:20]


def test_sigkill_loses_no_acked_lease(net: DhcpNet) -> None:
    """kill -9 during load: every ACKed lease survives and is never handed to another MAC."""
    server = net.server()
    server.start()
    net.add_relay_address()
    cap = Capture(net.client_ns, CLIENT_IF, net.tmp / "crash.pcap")
    try:
        # A rate near or past what the server sustains, so that it handles requests in
        # bursts: a daemon that sent a burst's ACKs before committing it would be caught
        # with ACKs on the wire and nothing on disk. Kill once many exchanges completed.
        load = start_perfdhcp(net.client_ns, rate=CRASH_RATE, clients=BEFORE_N, period=8,
                              base_mac=BEFORE_BASE)
        # Kill once a few hundred leases are on disk, however fast this machine is today
        # (a fixed sleep gave 130 ACKs on a loaded CI machine, too few to mean anything).
        wait_for(lambda: len(server.leases_by_ip()) >= 400, timeout=7, interval=0.1)
        server.kill()
        killed_at = time.time()
        after_kill = server.leases_by_ip()  # what is on disk at the crash
        server.start()
        before = finish_perfdhcp(load, timeout=60)
        # New clients, a MAC space of their own, after the restart.
        after = run_perfdhcp(net.client_ns, rate=200, clients=AFTER_N, period=4,
                             base_mac=AFTER_BASE, timeout=60)
        time.sleep(0.5)
    finally:
        cap.stop()
    assert cap.kernel_drops == 0, cap.stats
    msgs = cap.messages()
    assert before.ra.received > 0 and after.ra.received > 0, (before.output, after.output)

    # Ground truth: the ACKs seen on the client side of the link before the kill.
    acked_before = _last_ack_per_mac([m for m in msgs if m.time < killed_at])
    assert len(acked_before) >= 200, f"only {len(acked_before)} ACKs before the kill"
    assert all(mac_in_space(mac, BEFORE_BASE, BEFORE_N) for mac in acked_before)

    # 1. At the moment of the crash every ACKed lease was already on disk.
    missing = _missing(acked_before, after_kill, killed_at)
    assert not missing, f"{len(missing)} ACKed leases not on disk after kill -9: {missing[:20]}"

    # 2. No address ACKed to one MAC was ever ACKed to another, before or after the restart.
    assert conflicting_acks(msgs) == {}, conflicting_acks(msgs)

    # 3. The new clients got none of the addresses taken before the kill.
    taken = {ack.yiaddr for ack in acked_before.values()}
    new_acks = [m for m in acks(msgs) if mac_in_space(m.chaddr, AFTER_BASE, AFTER_N)]
    assert new_acks, "the restarted server ACKed none of the new clients"
    stolen = [(m.yiaddr, m.chaddr) for m in new_acks if m.yiaddr in taken]
    assert not stolen, f"addresses ACKed before the kill handed to new clients: {stolen[:20]}"

    # 4. And the store, after it all, still holds every client's latest binding.
    ok = wait_for(lambda: not _missing(_last_ack_per_mac(msgs), server.leases_by_ip(),
                                       time.time()), timeout=5)
    assert ok, _missing(_last_ack_per_mac(msgs), server.leases_by_ip(), time.time())[:20]
