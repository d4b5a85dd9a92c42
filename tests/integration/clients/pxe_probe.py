"""A PXE-firmware-like client built with scapy (an independent DHCP implementation).

Run inside a client namespace: broadcasts a DHCPDISCOVER with option 60 "PXEClient" and
option 93, prints every reply as one JSON line, then, when told a proxy address, configures
nothing but sends the firmware's port-4011 REQUEST from the given address and prints the ACK.

    python pxe_probe.py IFACE [--arch 0] [--ipxe] [--proxy 198.19.0.5 --ciaddr 198.19.2.7]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time

from scapy.all import BOOTP, DHCP, IP, UDP, Ether, conf, get_if_hwaddr, sendp, sniff


def opts_of(pkt: object) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in pkt[DHCP].options:  # type: ignore[index]
        if isinstance(item, tuple) and len(item) >= 2:
            value = item[1]
            out[str(item[0])] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("iface")
    ap.add_argument("--arch", type=int, default=0)
    ap.add_argument("--ipxe", action="store_true")
    ap.add_argument("--proxy")
    ap.add_argument("--ciaddr")
    ap.add_argument("--wait", type=float, default=3.0)
    args = ap.parse_args()
    conf.verb = 0
    mac = get_if_hwaddr(args.iface)
    chaddr = bytes.fromhex(mac.replace(":", ""))
    xid = int.from_bytes(os.urandom(4), "big")
    vendor = f"PXEClient:Arch:{args.arch:05d}:UNDI:002001"
    options: list[object] = [
        ("message-type", "discover"),
        ("vendor_class_id", vendor.encode()),
        (93, args.arch.to_bytes(2, "big")),
        ("param_req_list", [1, 3, 43, 60, 66, 67]),
    ]
    if args.ipxe:
        options.append(("user_class", b"iPXE"))
    options.append("end")
    if args.proxy:
        # The firmware's second step: it has an address now and asks the proxy on 4011.
        req = [
            ("message-type", "request"),
            ("vendor_class_id", vendor.encode()),
            (93, args.arch.to_bytes(2, "big")),
            "end",
        ]
        pkt = BOOTP(op=1, xid=xid, chaddr=chaddr, ciaddr=args.ciaddr) / DHCP(options=req)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.ciaddr, 68))
        sock.settimeout(args.wait)
        sock.sendto(bytes(pkt), (args.proxy, 4011))
        try:
            data, src = sock.recvfrom(2048)
        except TimeoutError:
            print(json.dumps({"timeout": True}))
            return
        reply = BOOTP(data)
        print(
            json.dumps(
                {
                    "src": src[0],
                    "sport": src[1],
                    "yiaddr": reply.yiaddr,
                    "siaddr": reply.siaddr,
                    "ciaddr": reply.ciaddr,
                    "file": reply.file.rstrip(b"\0").decode(),
                    "options": opts_of(reply),
                }
            )
        )
        return
    pkt = (
        Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(op=1, xid=xid, chaddr=chaddr, flags=0x8000)
        / DHCP(options=options)
    )
    replies = sniff(
        iface=args.iface,
        filter="udp and dst port 68",
        timeout=args.wait,
        started_callback=lambda: sendp(pkt, iface=args.iface),
        lfilter=lambda p: BOOTP in p and p[BOOTP].op == 2 and p[BOOTP].xid == xid,
    )
    for r in replies:
        print(
            json.dumps(
                {
                    "src": r[IP].src,
                    "yiaddr": r[BOOTP].yiaddr,
                    "siaddr": r[BOOTP].siaddr,
                    "file": r[BOOTP].file.rstrip(b"\0").decode(errors="replace"),
                    "options": opts_of(r),
                }
            )
        )
    time.sleep(0)


if __name__ == "__main__":
    main()
