"""ProxyDHCP and auto mode on a LAN whose "router" keeps its own DHCP server.

Topology, all in namespaces this test makes: a switch namespace holding a bridge, and three
hosts plugged into it: the router (dnsmasq handing out addresses, no boot information),
pxed, and a client (dhclient, or a scapy PXE client).
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pxed.lab import Lab, Netns, wait_for
from pxed.lab.clients import dhclient_once
from pxed.lab.dhcp import DnsmasqDhcp, router_setup
from pxed.lab.pxed import PxedProcess

ROUTER_IP = "198.19.0.1"
PXED_IP = "198.19.0.5"
ROUTER_POOL = ("198.19.2.1", "198.19.2.50")
PROBE = Path(__file__).parent / "clients" / "pxe_probe.py"


@dataclass
class Segment:
    lab: Lab
    router: Netns
    pxed: Netns
    client: Netns
    root: Path

    @property
    def args(self) -> tuple[str, ...]:
        return ("--tftp-root", str(self.root), "--no-tftp")


@pytest.fixture
def segment(lab: Lab) -> Iterator[Segment]:
    sw = lab.ns("sw")
    lab.bridge(sw, "br0")
    hosts = {}
    for role, ifname in (("rt", "lan0"), ("px", "pxs0"), ("cl", "eth0")):
        host = lab.ns(role)
        lab.veth(host, ifname, sw, f"p-{role}")
        sw.run("ip", "link", "set", f"p-{role}", "master", "br0")
        hosts[role] = host
    lab.addr(hosts["rt"], "lan0", f"{ROUTER_IP}/16")
    lab.addr(hosts["px"], "pxs0", f"{PXED_IP}/16")
    root = lab.tmp / "tftp"
    root.mkdir()
    for name in ("pxelinux.0", "ipxe.efi", "boot.ipxe"):
        (root / name).write_bytes(b"boot")
    yield Segment(lab, hosts["rt"], hosts["px"], hosts["cl"], root)


def start_router(seg: Segment) -> DnsmasqDhcp:
    setup = router_setup(ROUTER_IP, ROUTER_POOL)
    router = DnsmasqDhcp(seg.router, "lan0", setup, seg.lab.tmp / "router")
    router.start()
    return router


def pxe_client(seg: Segment, *args: str) -> list[dict[str, Any]]:
    res = seg.client.run(sys.executable, str(PROBE), "eth0", *args, timeout=60)
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def pxed_on(segment: Segment, *args: str) -> PxedProcess:
    """pxed on the segment's pxs0 with ``args`` (not started yet)."""
    args = ["--iface", "pxs0", *args, *segment.args]
    return PxedProcess(segment.pxed, segment.lab.tmp, args=args)


def test_auto_mode_becomes_proxy_beside_a_router_and_leaves_plain_clients_alone(
    segment: Segment,
) -> None:
    start_router(segment)
    pxed = pxed_on(segment)  # auto
    ready = pxed.start()
    assert ready["mode"] == "proxy", pxed.log()
    (mode,) = pxed.events("pxed.mode")
    assert ROUTER_IP in mode["servers"]

    leases = dhclient_once(segment.client, "eth0", segment.lab.tmp)
    assert f"option dhcp-server-identifier {ROUTER_IP};" in leases
    assert "fixed-address 198.19.2." in leases
    # pxed said nothing to the ordinary client.
    assert not pxed.events("proxy.offer") and not pxed.events("dhcp.offer"), pxed.log()


def test_proxy_answers_pxe_firmware_with_boot_info_only(segment: Segment) -> None:
    start_router(segment)
    pxed = pxed_on(segment, "--mode", "proxy")
    assert pxed.start()["mode"] == "proxy"

    replies = pxe_client(segment, "--arch", "0")
    by_src = {r["src"]: r for r in replies}
    assert set(by_src) == {ROUTER_IP, PXED_IP}, replies
    router, proxy = by_src[ROUTER_IP], by_src[PXED_IP]
    assert router["yiaddr"].startswith("198.19.2.")
    assert proxy["yiaddr"] == "0.0.0.0"
    assert proxy["siaddr"] == PXED_IP and proxy["file"] == "pxelinux.0"
    assert proxy["options"]["vendor_class_id"] == "PXEClient"
    assert "lease_time" not in proxy["options"]

    # The firmware then asks the proxy on port 4011 from its new address (UEFI needs this).
    segment.client.run("ip", "addr", "add", f"{router['yiaddr']}/16", "dev", "eth0")
    (ack,) = pxe_client(segment, "--arch", "7", "--proxy", PXED_IP, "--ciaddr", router["yiaddr"])
    assert ack.get("file") == "ipxe.efi", ack
    assert ack["src"] == PXED_IP and ack["siaddr"] == PXED_IP
    assert [e["port"] for e in pxed.events("proxy.ack")] == [4011]


def test_auto_mode_serves_dhcp_when_alone(segment: Segment) -> None:
    pxed = pxed_on(segment, "--range", "198.19.3.1-198.19.3.50")
    ready = pxed.start()
    assert ready["mode"] == "dhcp", pxed.log()
    leases = dhclient_once(segment.client, "eth0", segment.lab.tmp)
    assert f"option dhcp-server-identifier {PXED_IP};" in leases
    assert "fixed-address 198.19.3." in leases


def test_full_mode_warns_about_another_server_once(segment: Segment) -> None:
    pxed = pxed_on(segment, "--mode", "dhcp", "--range", "198.19.3.1-198.19.3.50")
    pxed.start()
    start_router(segment)
    # Two PXE-ish clients make the router broadcast two offers; one warning names it.
    pxe_client(segment)
    pxe_client(segment)
    assert wait_for(lambda: pxed.events("dhcp.other_server"), 5), pxed.log()
    warnings = pxed.events("dhcp.other_server")
    assert [w["server"] for w in warnings] == [ROUTER_IP]


MANAGEMENT_IP = "198.18.0.5"


def management_first(seg: Segment) -> None:
    """pxed's interface as on a host with a management address: the kernel's primary is on
    another network than the router's clients (the served address comes second)."""
    seg.pxed.run("ip", "addr", "flush", "dev", "pxs0")
    seg.pxed.run("ip", "addr", "add", f"{MANAGEMENT_IP}/24", "dev", "pxs0")
    seg.pxed.run("ip", "addr", "add", f"{PXED_IP}/16", "dev", "pxs0")


def proxy_addresses(pxed: PxedProcess) -> list[list[str]]:
    """What pxed said it answers from on pxs0, at start-up and after each change."""
    maps = [e["addresses"] for e in pxed.events("pxed.ready")]
    maps += [e["interfaces"] for e in pxed.events("pxed.addresses")]
    return [m["pxs0"]["dhcp"] for m in maps]


@pytest.mark.parametrize("mode", ["auto", "proxy"])
def test_proxy_answers_from_its_address_in_the_routers_subnet(segment: Segment, mode: str) -> None:
    management_first(segment)
    start_router(segment)
    pxed = pxed_on(segment, "--mode", mode)
    assert pxed.start()["mode"] == "proxy"
    # Auto mode learnt where the router puts its clients from the probe before it was ready;
    # explicit proxy mode asks the router once in the background, for an interface like this.
    assert wait_for(lambda: [PXED_IP] in proxy_addresses(pxed), timeout=10), pxed.log()
    replies = pxe_client(segment, "--arch", "0")
    proxy = next(r for r in replies if r["yiaddr"] == "0.0.0.0")
    assert proxy["siaddr"] == PXED_IP and proxy["options"]["server_id"] == PXED_IP, proxy


def test_sighup_in_auto_mode_keeps_the_proxy_and_takes_the_new_boot_file(
    segment: Segment,
) -> None:
    """A reload keeps the mode auto mode chose (no second probe) and the proxy core that
    replaces the old one answers with the new [boot] settings."""
    start_router(segment)
    (segment.root / "other.0").write_bytes(b"boot")
    cfg = segment.lab.tmp / "proxy.toml"
    cfg.write_text('[boot]\nbios = "pxelinux.0"\n')
    pxed = pxed_on(segment, "--config", str(cfg))
    assert pxed.start()["mode"] == "proxy"
    assert pxed.proc is not None
    cfg.write_text('[boot]\nbios = "other.0"\n')
    pxed.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: pxed.events("pxed.reloaded"), timeout=10)
    assert pxed.events("pxed.reloaded")[0]["changed"] == ["boot.bios"]
    replies = pxe_client(segment, "--arch", "0")
    (proxy,) = [r for r in replies if r["src"] == PXED_IP]
    assert proxy["file"] == "other.0", proxy
    assert len(pxed.events("pxed.mode")) == 1  # probed once, at start-up


def test_proxy_gives_ipxe_its_rendered_profile_script_over_http(segment: Segment) -> None:
    """Beside the router, on an interface whose first address is a management one: iPXE is
    offered its machine's own script as a URL on pxed's address in the router's subnet, and
    the script, rendered on request, names that address and the address the router gave the
    machine (pxed holds no lease for it: it is the one the request came from)."""
    management_first(segment)
    start_router(segment)
    (segment.root / "inst").mkdir()
    (segment.root / "inst" / "linux").write_bytes(b"kernel")
    out = segment.client.run("ip", "-j", "link", "show", "eth0").stdout
    mac = str(json.loads(out)[0]["address"]).lower()
    dashes = mac.replace(":", "-")
    cfg = segment.lab.tmp / "profile.toml"
    cfg.write_text(f"""
[http]
listen = "0.0.0.0:8080"

[[profile]]
name = "inst"
kernel = "inst/linux"
cmdline = "ip={{{{ ip }}}} host={{{{ hostname }}}} srv={{{{ server }}}}"
match = {{ mac = ["{mac}"] }}
""")
    pxed = pxed_on(segment, "--mode", "proxy", "--config", str(cfg))
    assert pxed.start()["mode"] == "proxy"
    assert wait_for(lambda: [PXED_IP] in proxy_addresses(pxed), timeout=10), pxed.log()

    replies = pxe_client(segment, "--arch", "0", "--ipxe")
    router = next(r for r in replies if r["src"] == ROUTER_IP)
    proxy = next(r for r in replies if r["src"] == PXED_IP)
    url = f"http://{PXED_IP}:8080/pxed/{dashes}/boot.ipxe"
    assert proxy["file"] == url, (proxy, pxed.log())
    (offer,) = pxed.events("proxy.offer")
    assert offer["profile"] == "inst", offer

    ip = router["yiaddr"]
    segment.client.run("ip", "addr", "add", f"{ip}/16", "dev", "eth0")
    res = segment.client.run("curl", "-sS", "--max-time", "20", url, timeout=30)
    script = res.stdout
    assert f"kernel http://{PXED_IP}:8080/inst/linux" in script, script
    assert f"ip={ip} host=host-{dashes} srv={PXED_IP}" in script, script
    (done,) = [e for e in pxed.events("http.done") if e["file"] == f"pxed/{dashes}/boot.ipxe"]
    assert done["bytes"] == len(script.encode()), done
