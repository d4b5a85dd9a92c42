"""No client can take or break another's lease: forged messages from a machine on the segment.

A switch (bridge) with pxed, a victim with a lease (dhclient), a reserved host (udhcpc with
the reserved MAC) and an attacker sending scapy-built DECLINEs, RELEASEs and REQUESTs with
other machines' identities, then a starvation run of random MACs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pxed.lab import Lab, Netns, wait_for
from pxed.lab.clients import dhclient_once, leased_address, udhcpc_once
from pxed.lab.pxed import PxedProcess

HOSTILE = Path(__file__).parent / "clients" / "hostile.py"
SERVER_IP = "198.19.0.1"
VICTIM_MAC = "52:54:00:0b:00:01"
RESERVED_MAC = "52:54:00:0b:00:50"
RESERVED_IP = "198.19.0.50"


@dataclass
class Segment:
    lab: Lab
    server: Netns
    victim: Netns
    reserved: Netns
    attacker: Netns


@pytest.fixture
def segment(lab: Lab) -> Segment:
    sw = lab.ns("sw")
    lab.bridge(sw, "br0")
    hosts: dict[str, Netns] = {}
    for role, mac in (("srv", None), ("vic", VICTIM_MAC), ("res", RESERVED_MAC), ("att", None)):
        host = lab.ns(role)
        lab.veth(host, "eth0", sw, f"p-{role}")
        if mac is not None:
            host.run("ip", "link", "set", "eth0", "address", mac)
        sw.run("ip", "link", "set", f"p-{role}", "master", "br0")
        hosts[role] = host
    lab.addr(hosts["srv"], "eth0", f"{SERVER_IP}/16")
    return Segment(lab, hosts["srv"], hosts["vic"], hosts["res"], hosts["att"])


def start_pxed(seg: Segment, extra: str = "") -> PxedProcess:
    cfg = seg.lab.tmp / "pxed.toml"
    cfg.write_text(
        f"""
[server]
interfaces = ["eth0"]
mode = "dhcp"
[dhcp]
range = "198.19.1.10-198.19.1.250"
{extra}
[[dhcp.host]]
mac = "{RESERVED_MAC}"
ip = "{RESERVED_IP}"
[[dhcp.host]]
mac = "{VICTIM_MAC}"
[tftp]
enabled = false
"""
    )
    pxed = PxedProcess(seg.server, seg.lab.tmp, args=["--config", str(cfg)])
    pxed.start()
    return pxed


def dhclient(seg: Segment, ns: Netns, tag: str) -> str:
    """A lease with dhclient (renewing the one in its lease file, if any); the address."""
    return leased_address(dhclient_once(ns, "eth0", seg.lab.tmp, tag))


def hostile(seg: Segment, *args: str) -> list[dict[str, Any]]:
    res = seg.attacker.run(sys.executable, str(HOSTILE), "eth0", *args, timeout=120)
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def test_forged_declines_releases_and_client_ids_change_nothing(segment: Segment) -> None:
    pxed = start_pxed(segment)
    victim_ip = dhclient(segment, segment.victim, "victim")
    assert victim_ip.startswith("198.19.1.")
    reserved_cid = "01" + RESERVED_MAC.replace(":", "")
    victim_cid = "01" + VICTIM_MAC.replace(":", "")
    for chaddr, cid in (("02:66:66:66:66:66", None), ("02:66:66:66:66:66", victim_cid)):
        for ip in (victim_ip, RESERVED_IP):
            args = ["--chaddr", chaddr, "--requested", ip, "--server-id", SERVER_IP]
            if cid:
                args += ["--client-id", cid]
            assert hostile(segment, "send", "decline", *args, "--wait", "0.5") == []
    # A RELEASE of the victim's address from another machine, with our server identifier.
    hostile(
        segment, "send", "release", "--chaddr", "02:66:66:66:66:66", "--ciaddr", victim_ip,
        "--server-id", SERVER_IP, "--wait", "0.5",
    )  # fmt: skip
    # A REQUEST for the reserved address with the reserved host's client-id from another MAC.
    (answer,) = hostile(
        segment, "send", "request", "--chaddr", "02:66:66:66:66:67", "--client-id", reserved_cid,
        "--requested", RESERVED_IP, "--server-id", SERVER_IP,
    )  # fmt: skip
    assert answer["type"] == "nak", answer
    (answer,) = hostile(
        segment, "send", "request", "--chaddr", "02:66:66:66:66:67", "--client-id", reserved_cid,
        "--requested", RESERVED_IP,
    )  # fmt: skip
    assert answer["type"] == "nak", answer

    # The victim keeps its address; the reserved host still gets its own.
    assert dhclient(segment, segment.victim, "victim") == victim_ip
    assert udhcpc_once(segment.reserved) == RESERVED_IP, pxed.log()
    assert not pxed.events("dhcp.decline") and not pxed.events("dhcp.pool_exhausted")
    assert [e["ip"] for e in pxed.events("dhcp.release")] == []


def test_starvation_against_known_only(segment: Segment) -> None:
    pxed = start_pxed(segment, "known_only = true")
    (storm,) = hostile(segment, "storm", "--count", "300")
    assert storm["sent"] == 300 and storm["offers"] == 0, storm
    assert dhclient(segment, segment.victim, "victim").startswith("198.19.1.")
    assert udhcpc_once(segment.reserved) == RESERVED_IP, pxed.log()


def test_starvation_against_the_new_client_bound(segment: Segment) -> None:
    rate = 10
    pxed = start_pxed(segment, f"new_clients_per_second = {rate}")
    victim_ip = dhclient(segment, segment.victim, "victim")
    (storm,) = hostile(segment, "storm", "--count", "400")
    # A second's burst, then the rate, for as long as the storm lasted (and a second more
    # for the offers still coming while the sniffer listens).
    bound = rate + rate * (storm["seconds"] + 1)
    assert 0 < storm["offers"] <= bound, storm
    assert wait_for(lambda: pxed.events("dhcp.new_clients_limited"), timeout=5), pxed.log()
    assert len(pxed.events("dhcp.new_clients_limited")) == 1
    # Known machines are answered through it: the victim renews, the reserved host binds.
    assert dhclient(segment, segment.victim, "victim") == victim_ip
    assert udhcpc_once(segment.reserved) == RESERVED_IP, pxed.log()
