"""The lease hook with a real client: dhclient's lease and release run it; a hanging hook
delays no reply."""

from __future__ import annotations

from pathlib import Path

from pxed.lab import Lab, Netns, wait_for
from pxed.lab.clients import Dhclient, dhclient_once, leased_address
from pxed.lab.pxed import PxedProcess

SERVER_IP = "198.19.0.1"


def segment(lab: Lab) -> tuple[Netns, Netns]:
    server, client = lab.ns("srv"), lab.ns("cl")
    lab.veth(server, "pxs0", client, "eth0")
    lab.addr(server, "pxs0", f"{SERVER_IP}/16")
    return server, client


def start(
    lab: Lab, server: Netns, hook: Path, timeout: str = "10s", lease_time: str = "12h"
) -> PxedProcess:
    config = {
        "server": {"interfaces": ["pxs0"], "mode": "dhcp"},
        "dhcp": {"range": "198.19.1.10-198.19.1.50", "lease_time": lease_time},
        "tftp": {"enabled": False},
        "hooks": {"lease": str(hook), "timeout": timeout},
    }
    pxed = PxedProcess(server, lab.tmp / "pxed", config)
    pxed.start()
    return pxed


def hook_script(lab: Lab, body: str) -> Path:
    path = lab.tmp / "lease-hook"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_lease_and_release_run_the_hook_as_dnsmasq_runs_its_script(lab: Lab) -> None:
    server, client = segment(lab)
    calls = lab.tmp / "calls"
    hook = hook_script(lab, f'echo "$1 $2 $3 mac=$PXED_MAC lease=$PXED_LEASE_TIME" >> {calls}\n')
    pxed = start(lab, server, hook)
    mac = client.run("cat", "/sys/class/net/eth0/address").stdout.strip()
    dhclient = Dhclient(client, "eth0", lab.tmp / "dhclient")
    dhclient.start()
    bound = dhclient.wait_reason(["BOUND"])
    ip = bound["new_ip_address"]
    dhclient.release()
    assert wait_for(lambda: calls.exists() and len(calls.read_text().splitlines()) >= 2, 10), (
        pxed.log()
    )
    add, delete = calls.read_text().splitlines()[:2]
    assert add.startswith(f"add {mac} {ip} mac={mac} lease="), add
    assert int(add.rsplit("lease=", 1)[1]) > 0
    assert delete == f"del {mac} {ip} mac={mac} lease=", delete


def test_a_hanging_hook_delays_no_reply(lab: Lab) -> None:
    server, client = segment(lab)
    hook = hook_script(lab, "sleep 60\n")
    pxed = start(lab, server, hook, timeout="20s")
    first = leased_address(dhclient_once(client, "eth0", lab.tmp, "first"))
    client.run("ip", "link", "set", "eth0", "address", "02:00:5e:10:00:77")
    second = leased_address(dhclient_once(client, "eth0", lab.tmp, "second"))
    assert first != second
    # Both ACKs went out while the first client's hook was still hanging: its timeout comes
    # after them in pxed's log.
    assert wait_for(lambda: pxed.events("hooks.timeout"), 30), pxed.log()
    kinds = [e["event"] for e in pxed.events() if e.get("event") in ("dhcp.ack", "hooks.timeout")]
    assert kinds[:3] == ["dhcp.ack", "dhcp.ack", "hooks.timeout"], kinds


def test_a_lease_that_runs_out_runs_the_hook_with_del(lab: Lab) -> None:
    server, client = segment(lab)
    calls = lab.tmp / "calls"
    hook = hook_script(lab, f'echo "$1 $2 $3 $PXED_REASON" >> {calls}\n')
    pxed = start(lab, server, hook, lease_time="10s")
    ip = leased_address(dhclient_once(client, "eth0", lab.tmp))  # then gone, no release
    mac = client.run("cat", "/sys/class/net/eth0/address").stdout.strip()
    assert wait_for(lambda: pxed.events("dhcp.expired"), 30), pxed.log()
    (expired,) = pxed.events("dhcp.expired")
    assert expired["mac"] == mac and expired["ip"] == ip
    assert wait_for(lambda: calls.exists() and len(calls.read_text().splitlines()) >= 2, 10)
    assert calls.read_text().splitlines()[:2] == [f"add {mac} {ip} ", f"del {mac} {ip} expired"]
