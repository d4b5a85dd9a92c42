"""Real firmware on the layouts of real LANs.

1. The served subnet is the interface's secondary address (a management address is the
   primary): a BIOS machine gets next-server = the secondary address and boots from it.
2. ProxyDHCP beside a DHCP server on the same host and interface (dnsmasq kept for the
   addresses, so both share one server identifier), while another process keeps a core busy:
   BIOS and UEFI machines boot, each twice. The proxy must leave the firmware's address
   REQUEST to the real server (answering it raced the real ACK: PXE-E07 under load).
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pxed.lab.boot import SERVER_IF, SERVER_IP, BootLab
from pxed.lab.dhcp import DnsmasqDhcp, router_setup
from pxed.lab.machines import Firmware, Machine
from tests.e2e.test_boot import HOSTS, PXELINUX_FILES, RESERVED_BIOS_MAC, UEFI_MAC, assert_files

MANAGEMENT = "198.18.0.1/24"
ROUTER_POOL = ("198.19.3.10", "198.19.3.200")


def test_bios_boots_from_a_secondary_address(bootlab: BootLab) -> None:
    server = bootlab.server
    server.run("ip", "addr", "flush", "dev", SERVER_IF)
    server.run("ip", "addr", "add", MANAGEMENT, "dev", SERVER_IF)  # the kernel's primary
    server.run("ip", "addr", "add", f"{SERVER_IP}/16", "dev", SERVER_IF)
    bootlab.start_pxed(HOSTS)
    boot = bootlab.boot(Machine("bios-secondary", RESERVED_BIOS_MAC, Firmware.BIOS))
    why = boot.explain()
    assert boot.ok, f"no 'Linux version' on the serial console{why}"
    assert_files(boot.files(), bootlab.root, PXELINUX_FILES, "pxelinux from 198.19.0.1" + why)
    ready = bootlab.events("pxed.ready")[0]
    assert ready["addresses"][SERVER_IF]["dhcp"] == [SERVER_IP], ready


@pytest.fixture
def busy_core(bootlab: BootLab) -> Iterator[None]:
    """Another process keeping one of the machine's cores busy for the whole test."""
    hog = bootlab.server.popen(sys.executable, "-c", "while True: pass",
                               stdout=subprocess.DEVNULL)  # fmt: skip
    yield
    hog.kill()
    hog.wait(10)


def start_local_router(bootlab: BootLab) -> None:
    """dnsmasq on pxed's own host and interface, handing out addresses only."""
    setup = router_setup(SERVER_IP, ROUTER_POOL)
    DnsmasqDhcp(bootlab.server, SERVER_IF, setup, bootlab.lab.tmp / "router").start()


def from_router(ip: str) -> bool:
    a = ipaddress.IPv4Address(ip)
    return ipaddress.IPv4Address(ROUTER_POOL[0]) <= a <= ipaddress.IPv4Address(ROUTER_POOL[1])


@pytest.mark.usefixtures("busy_core")
def test_proxy_beside_a_dhcp_server_on_the_same_host(bootlab: BootLab) -> None:
    start_local_router(bootlab)
    bootlab.start_pxed(HOSTS, args=("--mode", "proxy"))
    assert bootlab.events("pxed.ready")[0]["mode"] == "proxy"
    machines = [
        Machine(f"{kind.value}-{n}", mac, kind)
        for n in (1, 2)
        for kind, mac in ((Firmware.UEFI, UEFI_MAC), (Firmware.BIOS, RESERVED_BIOS_MAC))
    ]
    for machine in machines:
        boot = bootlab.boot(machine)
        why = boot.explain()
        assert "PXE-E" not in boot.serial.text(), f"{machine.name}: firmware error{why}"
        assert boot.ok, f"{machine.name}: no 'Linux version' on the serial console{why}"
    # pxed never answered a REQUEST for an address: every ACK it sent is a boot answer on
    # port 4011 or to a client that already has its address.
    for ack in bootlab.events("proxy.ack"):
        assert ack["port"] == 4011 or ack["ip"] != "0.0.0.0", ack
    assert not bootlab.events("dhcp.ack")
    sources = {e["client"].split(":")[0] for e in bootlab.events("tftp.done")}
    assert sources and all(from_router(ip) for ip in sources), sources
    assert_files(boot.files(), bootlab.root, PXELINUX_FILES, "BIOS via same-host proxy")
