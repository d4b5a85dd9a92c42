"""PXE through a ProxyDHCP: the "router" keeps handing out addresses, pxed only boots.

    router namespace: dnsmasq, addresses only --+
                                                 br0 -- tap -- QEMU
    server namespace: pxed --mode proxy  -------+

The machines get their address from the router and their boot files from pxed, over the
same firmware paths as test_boot.py: BIOS (iPXE ROM -> pxelinux.0 for the host entry) and
UEFI (EDK2 -> proxy offer + port 4011 -> ipxe.efi -> iPXE -> boot.ipxe).
"""

from __future__ import annotations

import ipaddress

from pxed.lab.boot import BootLab
from pxed.lab.dhcp import DnsmasqDhcp, router_setup
from pxed.lab.machines import Firmware, Machine
from tests.e2e.test_boot import (
    HOSTS,
    PXELINUX_FILES,
    RESERVED_BIOS_MAC,
    UEFI_HTTP_MAC,
    UEFI_MAC,
    assert_files,
)

ROUTER_IP = "198.19.0.254"
ROUTER_POOL = ("198.19.3.10", "198.19.3.200")


def start_router(bootlab: BootLab) -> None:
    router = bootlab.join("rt", "lan0")
    bootlab.lab.addr(router, "lan0", f"{ROUTER_IP}/16")
    setup = router_setup(ROUTER_IP, ROUTER_POOL)
    DnsmasqDhcp(router, "lan0", setup, bootlab.lab.tmp / "router").start()


def from_router(ip: str) -> bool:
    a = ipaddress.IPv4Address(ip)
    return ipaddress.IPv4Address(ROUTER_POOL[0]) <= a <= ipaddress.IPv4Address(ROUTER_POOL[1])


def test_bios_boots_through_the_proxy(bootlab: BootLab) -> None:
    start_router(bootlab)
    bootlab.start_pxed(HOSTS, args=("--mode", "proxy"))
    assert bootlab.events("pxed.ready")[0]["mode"] == "proxy"
    boot = bootlab.boot(Machine("bios-proxy", RESERVED_BIOS_MAC, Firmware.BIOS))
    why = boot.explain()
    assert boot.ok, f"no 'Linux version' on the serial console{why}"
    offers = bootlab.events("proxy.offer", mac=RESERVED_BIOS_MAC)
    assert offers and all(o["boot_file"] == "pxelinux.0" for o in offers), why
    assert not bootlab.events("dhcp.ack"), f"pxed handed out an address{why}"
    files = boot.files()
    assert_files(files, bootlab.root, PXELINUX_FILES, "pxelinux via proxy" + why)
    # The address the machine used is the router's: TFTP requests came from it.
    sources = {e["client"].split(":")[0] for e in bootlab.events("tftp.done")
               if e.get("mac") == RESERVED_BIOS_MAC and "client" in e}
    assert sources and all(from_router(ip) for ip in sources), f"{sources}{why}"


def test_uefi_boots_through_the_proxy(bootlab: BootLab) -> None:
    start_router(bootlab)
    bootlab.start_pxed(HOSTS, args=("--mode", "proxy"))
    boot = bootlab.boot(Machine("uefi-proxy", UEFI_MAC, Firmware.UEFI))
    why = boot.explain()
    assert "Start PXE over IPv4" in boot.serial.text(), f"OVMF's PXE client did not run{why}"
    assert boot.ok, f"no 'Linux version' on the serial console{why}"
    offers = bootlab.events("proxy.offer", mac=UEFI_MAC)
    assert any(o["boot_file"] == "ipxe.efi" for o in offers), why
    assert any(o["boot_file"] == "boot.ipxe" for o in offers), f"iPXE did not ask again{why}"
    assert not bootlab.events("dhcp.ack"), f"pxed handed out an address{why}"
    assert_files(boot.files(), bootlab.root, ("ipxe.efi", "boot.ipxe", "vmlinuz"),
                 "UEFI via proxy" + why)
    # The story in proxy mode: EDK2's ProxyDHCP answer, its size probe of ipxe.efi, the file,
    # iPXE's own ProxyDHCP answer, its script and the kernel; the address is the router's.
    (story,) = bootlab.boots(UEFI_MAC)
    dhcp = [s["detail"] for s in story["steps"] if s["kind"] == "dhcp"]
    assert dhcp[0]["proxy"] and dhcp[0]["arch"] == 7 and dhcp[0]["boot_file"] == "ipxe.efi"
    assert any(d.get("ipxe") and d["boot_file"] == "boot.ipxe" for d in dhcp), dhcp
    served = [s["detail"]["file"] for s in story["steps"]
              if s["kind"] == "tftp" and s["ok"] and not s["detail"].get("probe")]  # fmt: skip
    assert served[:3] == ["ipxe.efi", "boot.ipxe", "vmlinuz"], served
    assert from_router(story["ip"]), story


def test_uefi_http_boot_through_the_proxy(bootlab: BootLab) -> None:
    """UEFI HTTP boot beside a router: the router gives the address, pxed's ProxyDHCP on
    port 67 (HTTP boot has no port 4011 step) the URL on pxed's HTTP server."""
    start_router(bootlab)
    bootlab.start_pxed(args=("--mode", "proxy", "--http-port", "8080"))
    boot = bootlab.boot(Machine("uefi-http-proxy", UEFI_HTTP_MAC, Firmware.UEFI_HTTP))
    why = boot.explain()
    assert boot.ok, f"no 'Linux version' on the serial console{why}"
    offers = bootlab.events("proxy.offer", mac=UEFI_HTTP_MAC)
    assert offers and offers[0]["arch"] == 16 and offers[0]["boot_file"] == "ipxe.efi", why
    assert not bootlab.events("dhcp.ack"), f"pxed handed out an address{why}"
    http = [e for e in bootlab.events("http.done") if e.get("file") == "ipxe.efi"]
    assert http and from_router(http[0]["client"].rsplit(":", 1)[0]), f"{http}{why}"
