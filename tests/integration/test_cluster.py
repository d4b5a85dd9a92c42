"""Two pxed on one segment sharing the suite's PostgreSQL: real clients, real failures.

perfdhcp loads both for 60 s while one pxed is killed with SIGKILL and started again and
the database crashes and comes back; a capture on the client side of the switch is the
ground truth for what was offered and acknowledged, the database for what was kept.
dhclient renews its lease through a takeover.

perfdhcp runs as a directly attached client (``-l IFACE all``: broadcast requests, the
interface promiscuous to see the unicast replies to its made-up MACs). In relay mode it
can only unicast to one server (it does not set SO_BROADCAST for ``-l ADDRESS``), while a
real relay sends every request to each server it knows: direct mode is what reaches both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from pxed.lab import Lab, wait_for
from pxed.lab.capture import Capture, DhcpMsg, acks, conflicting_acks
from pxed.lab.clients import Dhclient, finish_perfdhcp, start_perfdhcp, udhcpc_once
from pxed.lab.cluster import (
    SERVER_IPS,
    ClusterNet,
    PxedClusterDhcp,
    make_cluster_net,
    shared_leases,
)
from pxed.lab.dhcp import CLIENT_IF, DhcpSetup
from pxed.lab.postgres import PostgresServer
from pxed.lab.pxed import pythonpath
from pxed.leases.pg import init_schema

pytestmark = pytest.mark.integration

TAKEOVER = 3  # seconds without a heartbeat before the other server takes over
RATE, PERIOD = 150, 60
A, B = SERVER_IPS[0], SERVER_IPS[1]


@pytest.fixture
def cluster(lab: Lab, postgres: PostgresServer) -> Iterator[ClusterNet]:
    init_schema(postgres.dsn)
    net = make_cluster_net(lab, postgres, setup=DhcpSetup(lease_time=3600))
    try:
        yield net
    finally:
        net.close()


def _offers_by_discover(msgs: list[DhcpMsg]) -> Counter[tuple[int, str]]:
    return Counter((m.xid, m.chaddr) for m in msgs if m.msg_type == "OFFER")


def _discovers(msgs: list[DhcpMsg], start: float, end: float) -> list[DhcpMsg]:
    return [m for m in msgs if m.msg_type == "DISCOVER" and start <= m.time < end]


def test_two_servers_under_load_through_a_kill_and_a_database_crash(
    cluster: ClusterNet, postgres: PostgresServer
) -> None:
    a, b = cluster.server(0, takeover=TAKEOVER, quiet=True), cluster.server(1, takeover=TAKEOVER,
                                                                            quiet=True)  # fmt: skip
    a.start()
    b.start()
    time.sleep(3 * 1.0 + 0.5)  # both past joining (two heartbeats) and seen by each other
    cluster.add_relay_address()  # perfdhcp needs an address on its interface
    cluster.client_ns.run("ip", "link", "set", CLIENT_IF, "promisc", "on")
    cap = Capture(cluster.client_ns, CLIENT_IF, cluster.lab.tmp / "cluster.pcap")
    t0 = time.time()
    perf = start_perfdhcp(cluster.client_ns, "all", CLIENT_IF, rate=RATE, clients=30000,
                          period=PERIOD, drop_time=3)  # fmt: skip
    try:
        time.sleep(15)
        killed = time.time()
        a.kill()  # SIGKILL: no goodbye, its heartbeat row just stops
        time.sleep(15)
        restarted = time.time()
        a.start()
        time.sleep(10)
        crashed = time.time()
        postgres.crash()
        crash_done = time.time()
        time.sleep(8)
        back = time.time()
        postgres.start()
        res = finish_perfdhcp(perf, timeout=PERIOD + 30)
    finally:
        if perf.poll() is None:
            perf.kill()
        cap.stop()
    end = time.time()
    msgs = cap.messages()
    assert cap.kernel_drops == 0, cap.stats
    assert {"DISCOVER-OFFER", "REQUEST-ACK"} <= res.exchanges.keys(), res.output

    # 1. No address was ever acknowledged to two clients.
    assert conflicting_acks(msgs) == {}
    # 2. No client got two offers for one DISCOVER: one server answers each.
    twice = {k: n for k, n in _offers_by_discover(msgs).items() if n > 1}
    events = {"killed": killed, "restarted": restarted, "crashed": crashed, "back": back}
    detail = [(m.xid, m.src, round(m.time - t0, 2)) for m in msgs
              if m.msg_type == "OFFER" and (m.xid, m.chaddr) in twice][:8]  # fmt: skip
    assert not twice, (f"{len(twice)} DISCOVERs got several offers: {detail}; "
                       f"{ {k: round(v - t0, 2) for k, v in events.items()} }")  # fmt: skip
    # 3. Both carried clients while both were up; after the takeover the survivor answered
    # every client (the dead one's share too) until the database went away.
    before_kill = [m for m in acks(msgs) if m.time < killed]
    assert {m.src for m in before_kill} == {A, B}
    assert not [m for m in msgs if m.src == A and killed + 0.2 < m.time < restarted]
    offered = {(m.xid, m.chaddr) for m in msgs if m.msg_type == "OFFER"}
    window = _discovers(msgs, killed + TAKEOVER + 2.5, restarted)
    unanswered = [m for m in window if (m.xid, m.chaddr) not in offered]
    assert window and not unanswered, f"{len(unanswered)} of {len(window)} DISCOVERs unanswered"
    # The restarted one rejoined and took its share again.
    assert [m for m in acks(msgs) if m.src == A and restarted + 4 < m.time < crashed]
    # 4. Nothing acknowledged while the database was down; service came back by itself.
    during = [m for m in acks(msgs) if crash_done + 0.5 < m.time < back]
    assert not during, f"{len(during)} ACKs while PostgreSQL was down"
    after = [m for m in acks(msgs) if back + 10 < m.time < end]
    assert after, "no ACK after PostgreSQL came back"
    assert {m.src for m in after} == {A, B}
    # 5. No acknowledged lease was lost: each client's last ACK is its row in the database.
    rows = {x.ip: x for x in shared_leases(postgres.dsn)}
    last: dict[str, DhcpMsg] = {}
    for m in acks(msgs):
        last[m.chaddr] = m
    missing = [f"{m.yiaddr} {mac}" for mac, m in last.items()
               if rows.get(m.yiaddr) is None or rows[m.yiaddr].mac != mac
               or rows[m.yiaddr].state != "ACTIVE"]  # fmt: skip
    assert not missing, f"{len(missing)} acknowledged leases not in the database: {missing[:5]}"
    assert len(last) > RATE * 20, (len(last), t0)


def test_dhclient_renews_through_a_takeover(cluster: ClusterNet) -> None:
    """dhclient bound by one server renews at T1 by unicast to it; that server is dead,
    so at T2 it rebinds by broadcast, and the survivor (its share now) acknowledges the
    same address."""
    servers = [cluster.server(i, takeover=TAKEOVER) for i in (0, 1)]
    for srv in servers:
        srv.settings["dhcp"]["lease_time"] = "16s"  # T1 8 s, T2 14 s
        srv.start()
    time.sleep(3.5)
    client = Dhclient(cluster.client_ns, CLIENT_IF, cluster.lab.tmp / "dhclient")
    client.start()
    try:
        bound = client.wait_reason(["BOUND"], timeout=30)
        address, server_id = bound["new_ip_address"], bound["new_dhcp_server_identifier"]
        dead = servers[SERVER_IPS.index(server_id)]
        dead.kill()
        # dhclient's script says RENEW for an ACK to its broadcast REBINDING too; its log
        # shows the unicast REQUESTs to the dead server, then the broadcast one.
        after = len(client.records())
        rebound = client.wait_reason(["RENEW", "REBIND"], timeout=40, after=after)
    finally:
        client.stop()
    survivor = B if server_id == A else A
    assert rebound["new_ip_address"] == rebound["old_ip_address"] == address
    assert rebound["old_dhcp_server_identifier"] == server_id
    assert rebound["new_dhcp_server_identifier"] == survivor
    out = client.output()
    renewing = out.find(f"DHCPREQUEST for {address} on {CLIENT_IF} to {server_id} port 67")
    rebinding = out.rfind(f"DHCPREQUEST for {address} on {CLIENT_IF} to 255.255.255.255")
    assert 0 <= renewing < rebinding, out


def test_a_pxed_started_while_the_database_is_down_waits_for_it(
    cluster: ClusterNet, postgres: PostgresServer
) -> None:
    """Started with PostgreSQL away: a reserved host is answered (its address needs no
    database), nobody else until the database is back, then everybody, by itself."""
    reserved_mac, other_mac = "02:00:5e:10:00:01", "02:00:5e:10:00:02"
    srv = cluster.server(0, takeover=TAKEOVER)
    srv.settings["dhcp"]["host"] = [{"mac": reserved_mac, "ip": "198.19.0.50"}]
    postgres.stop()
    srv.start()
    wait_for(lambda: bool(srv.events("leases.store_down")), 10)
    ns = cluster.client_ns
    assert udhcpc_once(ns, CLIENT_IF) == "198.19.0.50"
    ns.run("ip", "link", "set", CLIENT_IF, "address", other_mac)
    assert udhcpc_once(ns, CLIENT_IF) is None
    postgres.start()
    wait_for(lambda: bool(srv.events("leases.store_back")), 20)
    got = udhcpc_once(ns, CLIENT_IF)
    assert got is not None and got != "198.19.0.50"
    rows = {x.mac: x for x in shared_leases(postgres.dsn)}
    assert rows[other_mac].ip == got and rows[other_mac].state == "ACTIVE"


def test_pxed_leases_and_db_status_show_every_server(
    cluster: ClusterNet, postgres: PostgresServer
) -> None:
    servers = [cluster.server(i, takeover=TAKEOVER) for i in (0, 1)]
    for srv in servers:
        srv.start()
    time.sleep(3.5)
    ns = cluster.client_ns
    got: dict[str, str | None] = {}
    for n in range(1, 9):  # a few clients: the RFC 3074 split gives both servers some
        mac = f"02:00:5e:10:01:{n:02x}"
        ns.run("ip", "link", "set", CLIENT_IF, "address", mac)
        got[mac] = udhcpc_once(ns, CLIENT_IF)
    assert all(got.values()), got
    config = servers[0].config_path  # any server's file names the database
    out = subprocess.run([sys.executable, "-P", "-m", "pxed", "leases", "--config",
                          str(config)], capture_output=True, text=True, env=pythonpath(),
                         check=True, timeout=60).stdout  # fmt: skip
    assert "server pxed-a (198.19.0.1): last heartbeat" in out
    assert "server pxed-b (198.19.0.3): last heartbeat" in out
    header = next(line for line in out.splitlines() if line.startswith("IP "))
    assert "SERVER" in header.split()
    writers = set()
    for mac, ip in got.items():
        line = next(line for line in out.splitlines() if line.startswith(f"{ip} "))
        assert mac in line
        writers.add(line.split()[header.split().index("SERVER")])
    assert writers == {"pxed-a", "pxed-b"}, out
    status = subprocess.run([sys.executable, "-P", "-m", "pxed", "db", "status", "--dsn",
                             postgres.dsn], capture_output=True, text=True, env=pythonpath(),
                            check=False, timeout=60)  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert "pxed schema version 1 (up to date)" in status.stdout
    assert "server pxed-b" in status.stdout

    # Boot-once state is shared too: told to one server, the other boots the machine so.
    def host(srv: PxedClusterDhcp, *args: str) -> dict[str, Any]:
        res = subprocess.run([sys.executable, "-P", "-m", "pxed", "host", "02:00:5e:10:09:09",
                              "--state-dir", str(srv.state_dir), "--json", *args],
                             capture_output=True, text=True, env=pythonpath(), check=True,
                             timeout=60)  # fmt: skip
        answer: dict[str, Any] = json.loads(res.stdout)
        return answer

    assert host(servers[0], "--local")["next_boot"] == "local"
    wait_for(lambda: host(servers[1]).get("next_boot") == "local", 10)
    assert postgres.sql("SELECT profile FROM next_boot WHERE mac = '02:00:5e:10:09:09'") == "local"
