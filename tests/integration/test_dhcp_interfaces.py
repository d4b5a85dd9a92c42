"""Several interfaces and subnets in one pxed; an interface that is not configured is ignored."""

from __future__ import annotations

from pxed.lab import Lab, require
from pxed.lab.clients import udhcpc_once
from pxed.lab.pxed import PxedProcess

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
    pxed = PxedProcess(server, lab.tmp, args=["--config", str(cfg)])
    ready = pxed.start()
    assert sorted(ready["subnets"]) == ["198.18.64.0/24", "198.19.0.0/16"]

    assert udhcpc_once(clients[0]) == "198.19.1.10", pxed.log()
    assert udhcpc_once(clients[1]) == "198.18.64.100", pxed.log()
    # pxs2 has an address but is not in [server] interfaces: nobody answers there.
    assert udhcpc_once(clients[2]) is None, pxed.log()
    acks = pxed.events("dhcp.ack")
    assert sorted(e["ip"] for e in acks) == ["198.18.64.100", "198.19.1.10"]
