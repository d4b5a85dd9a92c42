"""Packet capture in a namespace (tcpdump), read with scapy: the ground truth of what was sent.

A client's view of a DHCP exchange comes from a capture on its side of the link, not from
the server's log, so the same check holds for pxed, dnsmasq and Kea.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pxed.lab.dhcp import norm_mac
from pxed.lab.netns import Netns
from pxed.lab.tools import require

DHCP_TYPES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK",
              7: "RELEASE", 8: "INFORM"}


@dataclass(frozen=True)
class DhcpMsg:
    time: float
    msg_type: str
    xid: int
    chaddr: str
    ciaddr: str
    yiaddr: str
    giaddr: str
    src: str
    dst: str
    options: dict[str, Any]


DHCP_FILTER = "udp port 67 or udp port 68"


class Capture:
    """tcpdump writing a pcap inside a namespace (DHCP by default); stop() flushes it.

    The constructor returns once tcpdump has said it listens: nothing sent after is missed.
    """

    def __init__(
        self, ns: Netns, iface: str, path: Path, bpf: str = DHCP_FILTER, snaplen: int = 1500
    ) -> None:
        require("tcpdump")
        self.path = path
        self.stats = ""
        self.proc = ns.popen(
            "tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-B", "16384",
            "-s", str(snaplen), "-Z", "root", "-w", str(path), bpf,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        # tcpdump says "listening on" once the capture is open (maybe after warnings).
        assert self.proc.stderr is not None
        said = []
        for _ in range(10):
            line = self.proc.stderr.readline().decode(errors="replace")
            said.append(line)
            if "listening on" in line or not line:
                break
        if "listening on" not in said[-1]:
            self.proc.kill()
            raise RuntimeError(f"tcpdump did not start: {''.join(said)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        assert self.proc.stderr is not None
        self.stats = self.proc.stderr.read().decode(errors="replace")

    @property
    def kernel_drops(self) -> int:
        m = re.search(r"(\d+) packets? dropped by kernel", self.stats)
        return int(m.group(1)) if m else 0

    def messages(self) -> list[DhcpMsg]:
        return read_dhcp_pcap(self.path)

    def sources(self) -> set[str]:
        """The IPv4 source addresses of everything captured (stops the capture)."""
        if self.proc.poll() is None:
            self.stop()
        from scapy.layers.inet import IP
        from scapy.utils import rdpcap

        return {str(pkt[IP].src) for pkt in rdpcap(str(self.path)) if IP in pkt}


def read_dhcp_pcap(path: Path) -> list[DhcpMsg]:
    from scapy.layers.dhcp import BOOTP, DHCP
    from scapy.layers.inet import IP
    from scapy.utils import rdpcap

    out = []
    for pkt in rdpcap(str(path)):
        if BOOTP not in pkt or DHCP not in pkt:
            continue
        boot = pkt[BOOTP]
        opts: dict[str, Any] = {}
        for opt in pkt[DHCP].options:
            if isinstance(opt, tuple) and len(opt) >= 2:
                opts[str(opt[0])] = opt[1] if len(opt) == 2 else list(opt[1:])
        mtype = opts.get("message-type")
        out.append(DhcpMsg(
            time=float(pkt.time),
            msg_type=DHCP_TYPES.get(int(mtype), str(mtype)) if mtype is not None else "BOOTP",
            xid=int(boot.xid),
            chaddr=norm_mac(bytes(boot.chaddr)),
            ciaddr=str(boot.ciaddr),
            yiaddr=str(boot.yiaddr),
            giaddr=str(boot.giaddr),
            src=str(pkt[IP].src),
            dst=str(pkt[IP].dst),
            options=opts,
        ))
    return out


def acks(msgs: Iterable[DhcpMsg]) -> list[DhcpMsg]:
    return [m for m in msgs if m.msg_type == "ACK"]


def conflicting_acks(msgs: Iterable[DhcpMsg]) -> dict[str, set[str]]:
    """Addresses that were ACKed to more than one MAC."""
    owners: dict[str, set[str]] = {}
    for m in acks(msgs):
        owners.setdefault(m.yiaddr, set()).add(m.chaddr)
    return {ip: macs for ip, macs in owners.items() if len(macs) > 1}


