"""A Raspberry Pi 4/5 boot loader's network side, scripted with scapy and a UDP socket, from
its documented behaviour (Raspberry Pi documentation "Network booting", rpi-eeprom notes).

    python rpi_probe.py IFACE dhcp --serial 5b154510 [--model RPi4] [--request]
    python rpi_probe.py IFACE tftp --server IP --serial 5b154510

``dhcp`` broadcasts the Pi's DISCOVER (broadcast flag clear; 55, 93 = 0, 94, 97 with the
FourCC, 60 "PXEClient:Arch:00000:UNDI:002001") and prints each reply as a JSON line;
``--request`` then sends the REQUEST (without option 60, as the 2020 EEPROM did) to the
server that offered with "Raspberry Pi Boot" and prints its ACK. ``tftp`` asks for
``<serial>/start4.elf`` as the boot loader does (tsize 0, blksize 1468): it reads one block,
aborts with ERROR 0 "Early terminate", asks again and reads it all; then ``start4.elf`` at
the root; prints {"file": ..., "bytes": N, "tsize": N} or {"file": ..., "error": ...} each.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct

from scapy.all import BOOTP, DHCP, IP, UDP, Ether, conf, get_if_hwaddr, sendp, sniff

VENDOR = b"PXEClient:Arch:00000:UNDI:002001"
PRL = [1, 3, 43, 60, 66, 67, 128, 129, 130, 131, 132, 133, 134, 135]


def option97(model: str, mac: bytes, serial: str) -> bytes:
    revision = (0x00A03111).to_bytes(4, "little")
    return b"\x00" + model.encode() + revision + mac[2:6] + int(serial, 16).to_bytes(4, "little")


def describe(pkt: object) -> dict[str, object]:
    raw: dict[str, str] = {}
    for item in pkt[DHCP].options:  # type: ignore[index]
        if isinstance(item, tuple) and len(item) >= 2:
            value = item[1]
            key = str(item[0])
            raw[key] = value.hex() if isinstance(value, bytes) else str(value)
    return {"src": pkt[IP].src, "dst": pkt[IP].dst, "yiaddr": pkt[BOOTP].yiaddr,  # type: ignore[index]
            "siaddr": pkt[BOOTP].siaddr, "file": pkt[BOOTP].file.rstrip(b"\0").hex(),  # type: ignore[index]
            "options": raw}


def exchange(iface: str, mac: str, xid: int, options: list[object], wait: float) -> list[object]:
    chaddr = bytes.fromhex(mac.replace(":", ""))
    pkt = (Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
           / UDP(sport=68, dport=67) / BOOTP(op=1, xid=xid, chaddr=chaddr, flags=0)
           / DHCP(options=[*options, "end"]))
    return list(sniff(iface=iface, filter="udp and dst port 68", timeout=wait,
                      started_callback=lambda: sendp(pkt, iface=iface),
                      lfilter=lambda p: BOOTP in p and p[BOOTP].op == 2 and p[BOOTP].xid == xid))


def dhcp(args: argparse.Namespace) -> None:
    mac = get_if_hwaddr(args.iface)
    opt97 = option97(args.model, bytes.fromhex(mac.replace(":", "")), args.serial)
    xid = int.from_bytes(os.urandom(4), "big")
    discover = [("message-type", "discover"), ("param_req_list", PRL), (93, b"\x00\x00"),
                (94, b"\x01\x02\x01"), (97, opt97), ("vendor_class_id", VENDOR)]
    offers = exchange(args.iface, mac, xid, discover, args.wait)
    for r in offers:
        print(json.dumps({"type": "offer", **describe(r)}))
    if not args.request:
        return
    menu = b"Raspberry Pi Boot"
    chosen = [r for r in offers if r[BOOTP].yiaddr != "0.0.0.0"
              and any(isinstance(i, tuple) and i[0] == "vendor_specific" and menu in i[1]
                      for i in r[DHCP].options)]
    if not chosen:
        return
    offer = chosen[0]
    server = next(i[1] for i in offer[DHCP].options if isinstance(i, tuple) and i[0] == "server_id")
    request = [("message-type", "request"), ("param_req_list", PRL), (93, b"\x00\x00"),
               (97, opt97), ("requested_addr", offer[BOOTP].yiaddr), ("server_id", server)]
    for r in exchange(args.iface, mac, xid, request, args.wait):
        print(json.dumps({"type": "ack", **describe(r)}))


def rrq(sock: socket.socket, server: str, name: str) -> None:
    sock.sendto(b"\x00\x01" + name.encode() + b"\x00octet\x00tsize\x000\x00blksize\x001468\x00",
                (server, 69))


def fetch(server: str, name: str, early: bool) -> dict[str, object]:
    """One RRQ the Pi's way; ``early``: abort after the first data block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(3)
    rrq(sock, server, name)
    got = 0
    tsize = None
    blksize = 512
    expect = 1
    while True:
        data, peer = sock.recvfrom(65536)
        op = struct.unpack("!H", data[:2])[0]
        if op == 5:
            return {"file": name, "error": data[4:-1].decode(errors="replace")}
        if op == 6:  # OACK
            fields = data[2:].split(b"\x00")
            pairs = dict(zip(fields[0::2], fields[1::2], strict=False))
            tsize = int(pairs.get(b"tsize", b"-1"))
            blksize = int(pairs.get(b"blksize", b"512"))
            sock.sendto(b"\x00\x04\x00\x00", peer)
            continue
        block = struct.unpack("!H", data[2:4])[0]
        if block == expect & 0xFFFF:
            got += len(data) - 4
            if early:
                sock.sendto(b"\x00\x05\x00\x00Early terminate\x00", peer)
                return {"file": name, "early": True, "tsize": tsize, "blksize": blksize}
            expect += 1
        sock.sendto(b"\x00\x04" + data[2:4], peer)
        if len(data) - 4 < blksize and block == (expect - 1) & 0xFFFF:
            return {"file": name, "bytes": got, "tsize": tsize, "blksize": blksize}


def tftp(args: argparse.Namespace) -> None:
    for name, early in ((f"{args.serial}/start4.elf", True), (f"{args.serial}/start4.elf", False),
                        ("start4.elf", False)):
        try:
            print(json.dumps(fetch(args.server, name, early)))
        except TimeoutError:
            print(json.dumps({"file": name, "error": "timeout"}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("iface")
    ap.add_argument("what", choices=("dhcp", "tftp"))
    ap.add_argument("--serial", default="5b154510")
    ap.add_argument("--model", default="RPi4")
    ap.add_argument("--request", action="store_true")
    ap.add_argument("--server")
    ap.add_argument("--wait", type=float, default=3.0)
    args = ap.parse_args()
    conf.verb = 0
    dhcp(args) if args.what == "dhcp" else tftp(args)


if __name__ == "__main__":
    main()
