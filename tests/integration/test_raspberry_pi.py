"""Raspberry Pi 4/5 network boot at the packet level (no emulator runs the Pi's boot ROM):
a scripted client sends what the Pi's EEPROM boot loader sends (clients/rpi_probe.py) and
gets what it accepts, in full and in proxy mode beside a router, then reads its files over
TFTP from ``<serial>/`` and from the root."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pxed.dhcp import rpi
from pxed.lab.pxed import PxedProcess
from tests.integration.test_proxy import PXED_IP, ROUTER_IP, Segment, segment, start_router

__all__ = ["segment"]  # the fixture, shared with the ProxyDHCP tests

PROBE = Path(__file__).parent / "clients" / "rpi_probe.py"
SERIAL = "5b154510"
# dnsmasq's option 43 for pxe-service=0,"Raspberry Pi Boot", as the Raspberry Pi
# documentation's capture prints it ("6.1.3.10.4.0.80.88.69.9.20.0.0.17.82...116.255").
DOCUMENTED_43 = bytes([6, 1, 3, 10, 4, 0, 80, 88, 69, 9, 20, 0, 0, 17, *b"Raspberry Pi Boot", 255])


def probe(seg: Segment, *args: str) -> list[dict[str, Any]]:
    res = seg.client.run(sys.executable, str(PROBE), "eth0", *args, timeout=60)
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def pxed_for_pis(seg: Segment, mode: str) -> PxedProcess:
    (seg.root / SERIAL).mkdir()
    (seg.root / SERIAL / "start4.elf").write_bytes(b"S" * 5000)  # several 1468-byte blocks
    (seg.root / "start4.elf").write_bytes(b"R" * 3000)
    args = ["--iface", "pxs0", "--mode", mode, "--tftp-root", str(seg.root)]
    pxed = PxedProcess(seg.pxed, seg.lab.tmp, args=args)
    pxed.start()
    return pxed


def assert_pi_answer(reply: dict[str, Any]) -> None:
    opts = reply["options"]
    assert bytes.fromhex(opts["vendor_specific"]) == DOCUMENTED_43 == rpi.OPTION_43, reply
    assert bytes.fromhex(opts["vendor_class_id"]) == b"PXEClient", reply
    assert bytes.fromhex(opts["tftp_server_name"]) == PXED_IP.encode(), reply
    assert opts["server_id"] == PXED_IP and reply["siaddr"] == PXED_IP, reply
    # Option 97 echoed as sent; no boot file (the Pi ignores it, and 67 would say pxelinux.0).
    assert bytes.fromhex(opts["pxe_client_machine_identifier"])[1:5] == b"RPi4", reply
    assert "boot-file-name" not in opts and reply["file"] == "", reply


def test_full_mode_gives_a_pi_an_address_and_its_boot_menu(segment: Segment) -> None:
    pxed = pxed_for_pis(segment, "dhcp")
    replies = probe(segment, "dhcp", "--serial", SERIAL, "--request")
    offers = [r for r in replies if r["type"] == "offer"]
    acks = [r for r in replies if r["type"] == "ack"]
    assert len(offers) == 1 and len(acks) == 1, f"{replies}\n{pxed.log()}"
    for reply in (*offers, *acks):
        assert reply["src"] == PXED_IP and reply["yiaddr"].startswith("198.19."), reply
    assert_pi_answer(offers[0])
    (decision,) = pxed.events("dhcp.offer")
    assert decision.get("boot_file") == f"{SERIAL}/start4.elf", decision

    # Its TFTP: <serial>/ first (read one block, abort, read it all), then the root.
    segment.client.run("ip", "addr", "add", f"{acks[0]['yiaddr']}/16", "dev", "eth0")
    early, whole, root = probe(segment, "tftp", "--server", PXED_IP, "--serial", SERIAL)
    assert early == {"file": f"{SERIAL}/start4.elf", "early": True, "tsize": 5000,
                     "blksize": 1468}, early  # fmt: skip
    assert whole["bytes"] == whole["tsize"] == 5000, whole
    assert root["bytes"] == 3000, root
    # A Pi without a directory of its own: not found there, then the root's file.
    missing, _, fallback = probe(segment, "tftp", "--server", PXED_IP, "--serial", "0000beef")
    assert "error" in missing and fallback["bytes"] == 3000, (missing, fallback)


def test_proxy_mode_answers_a_pi_beside_the_router(segment: Segment) -> None:
    start_router(segment)
    pxed = pxed_for_pis(segment, "proxy")
    replies = probe(segment, "dhcp", "--serial", SERIAL)
    by_src = {r["src"]: r for r in replies}
    assert set(by_src) == {ROUTER_IP, PXED_IP}, f"{replies}\n{pxed.log()}"
    proxy = by_src[PXED_IP]
    assert proxy["yiaddr"] == "0.0.0.0" and "lease_time" not in proxy["options"], proxy
    assert_pi_answer(proxy)
    # The router's offer gives the address and says nothing of PXE.
    assert "vendor_specific" not in by_src[ROUTER_IP]["options"]


def test_a_bios_pc_beside_the_pi_still_gets_pxelinux(segment: Segment) -> None:
    """The Pi's vendor class is a BIOS PC's: without the FourCC or a Pi MAC it is a PC."""
    from tests.integration.test_proxy import pxe_client

    pxed_for_pis(segment, "proxy")
    start_router(segment)
    (proxy,) = [r for r in pxe_client(segment, "--arch", "0") if r["src"] == PXED_IP]
    assert proxy["file"] == "pxelinux.0" and "Raspberry" not in proxy["options"].get(
        "vendor_specific", "")
