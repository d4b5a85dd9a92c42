"""Several interfaces and subnets in one pxed; an interface that is not configured is ignored."""

from __future__ import annotations

import re

from tests.integration.pxedproc import Pxed
from tests.lab import Lab, Netns, require

CONFIG = """
[server]
interfaces = ["pxs0", "pxs1"]
mode = "dhcp"
[dhcp]
range = "198.19.1.10-198.19.1.20"
router = "198.19.0.1"
[[dhcp.subnet]]
interface = "pxs1"
range = "198.18.64.100-198.18.64.110"
router = "198.18.64.1"
[tftp]
enabled = false
"""


def udhcpc(ns: Netns) -> str | None:
    """One lease attempt with busybox udhcpc; the address it got, or None."""
    res = ns.run(
        "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "3", "-T", "1",
        "-s", "/bin/true", check=False, timeout=60,
    )  # fmt: skip
    m = re.search(r"lease of (\S+) obtained from (\S+)", res.stdout + res.stderr)
    return m.group(1) if m else None


def test_each_interface_serves_its_own_subnet(lab: Lab) -> None:
    require("busybox")
    server = lab.ns("srv")
    clients = []
    for n, (cidr) in enumerate(("198.19.0.1/16", "198.18.64.1/24", "198.18.65.1/24")):
        client = lab.ns(f"c{n}")
        lab.veth(server, f"pxs{n}", client, "eth0")
        lab.addr(server, f"pxs{n}", cidr)
        clients.append(client)
    cfg = lab.tmp / "pxed.toml"
    cfg.write_text(CONFIG)
    pxed = Pxed(server, lab.tmp, "--config", str(cfg))
    ready = pxed.wait_ready()
    assert sorted(ready["subnets"]) == ["198.18.64.0/24", "198.19.0.0/16"]

    assert udhcpc(clients[0]) == "198.19.1.10", pxed.log()
    assert udhcpc(clients[1]) == "198.18.64.100", pxed.log()
    # pxs2 has an address but is not in [server] interfaces: nobody answers there.
    assert udhcpc(clients[2]) is None, pxed.log()
    acks = pxed.events("dhcp.ack")
    assert sorted(e["ip"] for e in acks) == ["198.18.64.100", "198.19.1.10"]
