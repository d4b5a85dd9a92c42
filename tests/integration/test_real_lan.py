"""The layouts of real LANs: a served subnet on a secondary address, several subnets on one
interface, a relayed subnet, and addresses and interfaces that change while pxed runs.

Every address pxed hands out (server identifier, next-server) must be one its TFTP server
answers on, and each transfer's packets must leave from the address the client asked: the
tests check the source address of the DATA packets in a capture, not only the bytes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from pxed.lab import Lab, Netns, require, wait_for
from pxed.lab.capture import Capture
from pxed.lab.clients import dhclient_once, leased_address
from pxed.lab.pxed import PxedProcess

PROBE = Path(__file__).parent / "clients" / "pxe_probe.py"


def make_root(lab: Lab) -> tuple[Path, bytes]:
    root = lab.tmp / "tftp"
    root.mkdir()
    payload = os.urandom(200_000)
    (root / "pxelinux.0").write_bytes(payload)
    (root / "ipxe.efi").write_bytes(b"efi")
    return root, payload


def start_pxed(
    lab: Lab, server: Netns, root: Path, dhcp: str, interfaces: tuple[str, ...] = ("pxs0",)
) -> PxedProcess:
    """pxed in full DHCP mode on ``interfaces``, serving ``root``; ``dhcp`` is the TOML of
    its subnets and hosts."""
    cfg = lab.tmp / "pxed.toml"
    cfg.write_text(
        f"[server]\ninterfaces = {json.dumps(list(interfaces))}\nmode = \"dhcp\"\n"
        f"{dhcp}\n[tftp]\nroot = \"{root}\"\n"
    )
    return PxedProcess(server, lab.tmp, args=["--config", str(cfg)])


def pxe_discover(client: Netns, iface: str = "eth0", *args: str) -> list[dict[str, Any]]:
    res = client.run(sys.executable, str(PROBE), iface, *args, timeout=60)
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def udp_to(lab: Lab, ns: Netns, ip: str) -> Capture:
    """tcpdump in the client's namespace: which addresses send UDP to the client."""
    return Capture(ns, "eth0", lab.tmp / f"to-{ip}.pcap", bpf=f"udp and dst host {ip}")


def curl_tftp(ns: Netns, server: str, name: str, out: Path) -> None:
    require("curl")
    ns.run("curl", "-s", "--max-time", "30", "-o", str(out), f"tftp://{server}/{name}", timeout=60)


def tftp_hpa(ns: Netns, server: str, name: str, out: Path) -> None:
    require("tftp")
    ns.run("tftp", "-m", "binary", server, "-c", "get", name, str(out), timeout=60)


# ------------------------------------------------------------------ secondary address


def test_served_subnet_on_a_secondary_address(lab: Lab) -> None:
    """The issue's layout: management address first, the provisioning subnet second."""
    server, client = lab.ns("srv"), lab.ns("cl")
    lab.veth(server, "pxs0", client, "eth0")
    lab.addr(server, "pxs0", "198.18.0.1/24")  # the kernel's primary address
    lab.addr(server, "pxs0", "198.19.0.1/16")
    root, payload = make_root(lab)
    pxed = start_pxed(
        lab,
        server,
        root,
        """
[dhcp]
range = "198.19.1.10-198.19.1.20"
""",
    )
    ready = pxed.start()
    assert ready["addresses"]["pxs0"]["dhcp"] == ["198.19.0.1"], ready
    assert set(ready["addresses"]["pxs0"]["tftp"]) == {"198.18.0.1", "198.19.0.1"}
    sockets = server.run("ss", "-Hlun", "sport = :69").stdout
    assert "0.0.0.0%pxs0:69" in sockets, sockets

    (offer,) = pxe_discover(client, "eth0", "--arch", "0")
    assert offer["yiaddr"].startswith("198.19.1."), offer
    assert offer["siaddr"] == "198.19.0.1" and offer["options"]["server_id"] == "198.19.0.1"
    # The broadcast leaves from that address too, not from the interface's primary one.
    assert offer["src"] == "198.19.0.1", offer

    # dhclient takes a real lease; then the next-server it was told answers, from itself.
    leases = dhclient_once(client, "eth0", lab.tmp, script=None)
    assert "option dhcp-server-identifier 198.19.0.1;" in leases, leases
    ip = leased_address(leases)
    cap = udp_to(lab, client, ip)
    curl_tftp(client, "198.19.0.1", "pxelinux.0", lab.tmp / "curl.out")
    tftp_hpa(client, "198.19.0.1", "pxelinux.0", lab.tmp / "hpa.out")
    assert cap.sources() == {"198.19.0.1"}
    assert (lab.tmp / "curl.out").read_bytes() == payload
    assert (lab.tmp / "hpa.out").read_bytes() == payload


def test_two_secondary_subnets_each_get_their_own_server_address(lab: Lab) -> None:
    server = lab.ns("srv")
    sw = lab.ns("sw")
    lab.bridge(sw, "br0")
    lab.veth(server, "pxs0", sw, "p-srv")
    sw.run("ip", "link", "set", "p-srv", "master", "br0")
    clients = []
    for n, mac in enumerate(("52:54:00:a0:00:01", "52:54:00:a1:00:01")):
        c = lab.ns(f"c{n}")
        lab.veth(c, "eth0", sw, f"p-c{n}")
        c.run("ip", "link", "set", "eth0", "address", mac)
        sw.run("ip", "link", "set", f"p-c{n}", "master", "br0")
        clients.append(c)
    lab.addr(server, "pxs0", "198.18.0.1/24")
    lab.addr(server, "pxs0", "198.19.10.1/24")
    lab.addr(server, "pxs0", "198.19.11.1/24")
    root, payload = make_root(lab)
    pxed = start_pxed(
        lab,
        server,
        root,
        """
[[dhcp.subnet]]
range = "198.19.10.100-198.19.10.150"
[[dhcp.subnet]]
range = "198.19.11.100-198.19.11.150"
[[dhcp.host]]
mac = "52:54:00:a0:00:01"
ip = "198.19.10.50"
[[dhcp.host]]
mac = "52:54:00:a1:00:01"
ip = "198.19.11.50"
""",
    )
    ready = pxed.start()
    assert sorted(ready["addresses"]["pxs0"]["dhcp"]) == ["198.19.10.1", "198.19.11.1"]
    for n, c in enumerate(clients):
        net = f"198.19.{10 + n}"
        (offer,) = pxe_discover(c, "eth0", "--arch", "0")
        assert offer["yiaddr"] == f"{net}.50", offer
        assert offer["siaddr"] == f"{net}.1" and offer["options"]["server_id"] == f"{net}.1"
        assert offer["src"] == f"{net}.1", offer
        lab.addr(c, "eth0", f"{net}.50/24")
        cap = udp_to(lab, c, f"{net}.50")
        curl_tftp(c, offer["siaddr"], "pxelinux.0", lab.tmp / f"c{n}.out")
        assert cap.sources() == {f"{net}.1"}
        assert (lab.tmp / f"c{n}.out").read_bytes() == payload


# ------------------------------------------------------------------ relayed subnet


RELAYED_SUBNET = """
[[dhcp.subnet]]
network = "198.18.5.0/24"
range = "198.18.5.100-198.18.5.150"
router = "198.18.5.1"
"""


def relayed(lab: Lab, root: Path, dhcp: str = RELAYED_SUBNET) -> tuple[PxedProcess, Netns]:
    """pxed (primary address on another network, 198.18.4.1 the one the relay reaches)
    serving 198.18.5.0/24 through a dnsmasq relay; returns pxed, started, and the client."""
    require("dnsmasq", "dhclient")
    server, relay, client = lab.ns("srv"), lab.ns("rl"), lab.ns("cl")
    lab.veth(server, "pxs0", relay, "up0")
    lab.veth(relay, "down0", client, "eth0")
    lab.addr(server, "pxs0", "198.18.0.1/24")
    lab.addr(server, "pxs0", "198.18.4.1/24")
    lab.addr(relay, "up0", "198.18.4.2/24")
    lab.addr(relay, "down0", "198.18.5.1/24")
    relay.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    server.run("ip", "route", "add", "198.18.5.0/24", "via", "198.18.4.2")
    pxed = start_pxed(lab, server, root, dhcp)
    pxed.start()
    relay.popen(
        "dnsmasq", "--no-daemon", "--port=0", "--bind-interfaces", "--interface=down0",
        "--dhcp-relay=198.18.5.1,198.18.4.1", "--log-dhcp",
    )  # fmt: skip
    return pxed, client


def relayed_offer(pxed: PxedProcess, client: Netns, *args: str) -> dict[str, Any]:
    """The first offer to the relayed client's PXE DISCOVER (the relay may start late);
    the client then takes the address and a default route through the relay."""
    replies: list[dict[str, Any]] = []
    wait_for(lambda: bool(replies.extend(pxe_discover(client, "eth0", *args)) or replies),
             timeout=30, interval=0.5)  # fmt: skip
    assert replies, pxed.log()
    offer = replies[0]
    assert offer["yiaddr"].startswith("198.18.5."), offer
    client.run("ip", "addr", "add", f"{offer['yiaddr']}/24", "dev", "eth0")
    client.run("ip", "route", "add", "default", "via", "198.18.5.1")
    return offer


def test_relayed_client_is_told_the_address_the_relay_reached(lab: Lab) -> None:
    """pxed's primary address is on another network; the relay talks to its secondary."""
    root, payload = make_root(lab)
    pxed, client = relayed(lab, root)
    offer = relayed_offer(pxed, client, "--arch", "0")
    assert offer["options"]["server_id"] == "198.18.4.1", offer
    assert offer["siaddr"] == "198.18.4.1", offer
    # The relayed client reaches that next-server through the router, and the DATA comes
    # back from it.
    cap = udp_to(lab, client, offer["yiaddr"])
    curl_tftp(client, offer["siaddr"], "pxelinux.0", lab.tmp / "relayed.out")
    assert cap.sources() == {"198.18.4.1"}
    assert (lab.tmp / "relayed.out").read_bytes() == payload


def test_relayed_ipxe_gets_its_rendered_profile_script(lab: Lab) -> None:
    """Through the relay, iPXE is offered its machine's own script as a URL on the address
    the relay reached; the script, fetched over HTTP and over TFTP across the router (pxed
    never sees the machine's MAC on its own link: the name carries it), names that address
    and the address pxed offered the machine."""
    root, _ = make_root(lab)
    (root / "inst").mkdir()
    (root / "inst" / "linux").write_bytes(b"kernel")
    (root / "inst" / "initrd.gz").write_bytes(b"initrd")
    profile = """
[http]
listen = "0.0.0.0:8080"

[[profile]]
name = "inst"
kernel = "inst/linux"
initrd = ["inst/initrd.gz"]
cmdline = "ip={{ ip }} srv={{ server }} url={{ preseed_url }}"
default = true
"""
    pxed, client = relayed(lab, root, RELAYED_SUBNET + profile)
    out = client.run("ip", "-j", "link", "show", "eth0").stdout
    dashes = str(json.loads(out)[0]["address"]).lower().replace(":", "-")
    offer = relayed_offer(pxed, client, "--arch", "0", "--ipxe")
    base = f"http://198.18.4.1:8080/pxed/{dashes}/"
    assert offer["file"] == base + "boot.ipxe", offer
    require("curl")
    script = client.run("curl", "-sS", "--max-time", "20", base + "boot.ipxe", timeout=30).stdout
    assert "kernel http://198.18.4.1:8080/inst/linux initrd=initrd.gz" in script, script
    assert "initrd http://198.18.4.1:8080/inst/initrd.gz" in script, script
    assert f"ip={offer['yiaddr']} srv=198.18.4.1 url={base}preseed.cfg" in script, script
    # Over TFTP from the same address: the same script (its URLs are HTTP's while [http] is on).
    curl_tftp(client, "198.18.4.1", f"pxed/{dashes}/boot.ipxe", lab.tmp / "script.tftp")
    tftp_script = (lab.tmp / "script.tftp").read_text()
    assert tftp_script == script, tftp_script


# ------------------------------------------------------------------ changes while running


def test_addresses_and_interfaces_that_come_and_go_are_followed(lab: Lab) -> None:
    server, client = lab.ns("srv"), lab.ns("cl")
    lab.veth(server, "pxs0", client, "eth0")
    lab.addr(server, "pxs0", "198.18.0.1/24")
    lab.addr(client, "eth0", "198.19.20.9/24")
    lab.addr(client, "eth0", "198.18.0.9/24")
    root, payload = make_root(lab)
    pxed = start_pxed(
        lab,
        server,
        root,
        """
[[dhcp.subnet]]
range = "198.18.0.100-198.18.0.150"
[[dhcp.subnet]]
network = "198.19.20.0/24"
range = "198.19.20.100-198.19.20.150"
""",
        ("pxs0", "pxlate"),
    )
    ready = pxed.start()
    assert ready["addresses"]["pxlate"]["state"] == "missing"
    waiting = [e for e in pxed.events("pxed.interface") if e["interface"] == "pxlate"]
    assert waiting and waiting[0]["change"] == "waiting" and waiting[0]["level"] == "warning"

    # An address added while pxed runs is served (TFTP answers on it, DHCP uses it) soon.
    server.run("ip", "addr", "add", "198.19.20.1/24", "dev", "pxs0")
    assert wait_for(
        lambda: any(e.get("address") == "198.19.20.1/24" for e in pxed.events("pxed.interface")),
        timeout=2,
    ), pxed.log()
    (added,) = [e for e in pxed.events("pxed.interface") if e.get("address") == "198.19.20.1/24"]
    assert added["change"] == "address-added" and added["serving"] == "dhcp+tftp"
    cap = udp_to(lab, client, "198.19.20.9")
    curl_tftp(client, "198.19.20.1", "pxelinux.0", lab.tmp / "added.out")
    assert cap.sources() == {"198.19.20.1"}
    assert (lab.tmp / "added.out").read_bytes() == payload

    # Removed: no longer used (a DHCP client on the segment is told the other address).
    server.run("ip", "addr", "del", "198.19.20.1/24", "dev", "pxs0")
    assert wait_for(
        lambda: pxed.events("pxed.addresses")
        and pxed.events("pxed.addresses")[-1]["interfaces"]["pxs0"]["tftp"] == ["198.18.0.1"],
        timeout=2,
    ), pxed.log()
    (offer,) = pxe_discover(client, "eth0", "--arch", "0")
    assert offer["options"]["server_id"] == "198.18.0.1", offer

    # Link down and up: still serving.
    server.run("ip", "link", "set", "pxs0", "down")
    assert wait_for(lambda: any(e["change"] == "link-down" for e in pxed.events("pxed.interface")))
    server.run("ip", "link", "set", "pxs0", "up")
    assert wait_for(lambda: any(e["change"] == "link-up" for e in pxed.events("pxed.interface")))
    client.run("ip", "link", "set", "eth0", "up")
    wait_for(lambda: "state UP" in client.run("ip", "link", "show", "eth0").stdout, timeout=5)
    curl_tftp(client, "198.18.0.1", "pxelinux.0", lab.tmp / "relinked.out")
    assert (lab.tmp / "relinked.out").read_bytes() == payload
    (offer,) = pxe_discover(client, "eth0", "--arch", "0")
    assert offer["yiaddr"].startswith("198.18.0.1"), offer

    # An interface that did not exist at start-up is served once it appears.
    late = lab.ns("late")
    lab.veth(server, "pxlate", late, "eth0")
    lab.addr(server, "pxlate", "198.18.9.1/24")
    assert wait_for(
        lambda: pxed.events("pxed.addresses")
        and pxed.events("pxed.addresses")[-1]["interfaces"]["pxlate"]["tftp"] == ["198.18.9.1"],
        timeout=3,
    ), pxed.log()
    lab.addr(late, "eth0", "198.18.9.9/24")
    curl_tftp(late, "198.18.9.1", "pxelinux.0", lab.tmp / "late.out")
    assert (lab.tmp / "late.out").read_bytes() == payload
    assert pxed.proc.poll() is None


def test_interface_that_gets_its_address_late_has_its_subnet_derived(lab: Lab) -> None:
    """`pxed --iface br0` started before the bridge has its address (or exists at all)."""
    server, client = lab.ns("srv"), lab.ns("cl")
    root, _payload = make_root(lab)
    pxed = PxedProcess(
        server, lab.tmp, args=["--iface", "pxs0", "--mode", "dhcp", "--tftp-root", str(root)]
    )
    ready = pxed.start()
    assert ready["subnets"] == [] and ready["addresses"]["pxs0"]["state"] == "missing"
    lab.veth(server, "pxs0", client, "eth0")
    lab.addr(server, "pxs0", "198.18.30.1/24")
    assert wait_for(lambda: pxed.events("pxed.subnet"), timeout=3), pxed.log()
    (sub,) = pxed.events("pxed.subnet")
    assert sub["subnet"] == "198.18.30.0/24" and sub["pool"] == "198.18.30.128-198.18.30.254"
    (offer,) = pxe_discover(client, "eth0", "--arch", "0")
    assert offer["yiaddr"] == "198.18.30.128" and offer["siaddr"] == "198.18.30.1", offer


def test_check_names_a_missing_interface_as_a_warning(lab: Lab) -> None:
    server = lab.ns("srv")
    res = server.run(
        sys.executable, "-m", "pxed", "check", "--iface", "nosuch0", "--no-tftp", check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "warning: [server] interfaces: no interface named 'nosuch0' yet" in res.stdout
