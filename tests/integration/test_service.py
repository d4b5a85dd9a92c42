"""pxed as a service: SIGHUP reloads the configuration, SIGTERM stops gracefully.

Real processes in namespaces the tests make: pxed on one side of a bridge, dhclient and
curl on the other. What must hold across a reload: leases (the SQLite store and a renewing
client), a large TFTP transfer running through it, the old configuration when the new one
is broken. Across SIGTERM: exit 0 within the grace period, the transfer finished or told.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from pxed.lab import Lab, Netns, require, wait_for
from pxed.lab.clients import dhclient_once, leased_address
from pxed.lab.pxed import CHECKOUT, PxedProcess
from pxed.lab.tftp import make_file, same_file

RESERVED_MAC = "52:54:00:5e:00:01"
OTHER_MAC = "52:54:00:5e:00:02"
BIG = 100 * 1024 * 1024


def lan(lab: Lab) -> tuple[Netns, Netns, Netns]:
    """server (pxs0 198.19.0.1/24) - bridge - c0 (the reserved host, 198.19.0.9 for TFTP)
    and c1 (another client)."""
    server, sw = lab.ns("srv"), lab.ns("sw")
    lab.bridge(sw, "br0")
    lab.veth(server, "pxs0", sw, "p-srv")
    sw.run("ip", "link", "set", "p-srv", "master", "br0")
    clients = []
    for n, mac in enumerate((RESERVED_MAC, OTHER_MAC)):
        c = lab.ns(f"c{n}")
        lab.veth(c, "eth0", sw, f"p-c{n}")
        c.run("ip", "link", "set", "eth0", "address", mac)
        sw.run("ip", "link", "set", f"p-c{n}", "master", "br0")
        clients.append(c)
    lab.addr(server, "pxs0", "198.19.0.1/24")
    lab.addr(clients[0], "eth0", "198.19.0.9/24")
    return server, clients[0], clients[1]


def config_text(root: Path, reserved_ip: str, extra: str = "") -> str:
    return (
        '[server]\ninterfaces = ["pxs0"]\nmode = "dhcp"\nstop_grace = 2\n'
        '[dhcp]\nrange = "198.19.0.100-198.19.0.150"\n'
        f'[[dhcp.host]]\nmac = "{RESERVED_MAC}"\nip = "{reserved_ip}"\n'
        f'[tftp]\nroot = "{root}"\n{extra}'
    )


def start(lab: Lab, server: Netns, root: Path, reserved_ip: str) -> PxedProcess:
    (root / "pxelinux.0").write_bytes(b"pxe")
    (root / "ipxe.efi").write_bytes(b"efi")
    pxed = PxedProcess(server, lab.tmp, config_text(root, reserved_ip))
    pxed.start()
    return pxed


def big_fetch(client: Netns, out: Path, rate: str) -> subprocess.Popen[bytes]:
    """curl fetching big.bin in the background, slowed down so that it is surely running
    when the test signals pxed."""
    require("curl")
    return client.popen(
        "curl", "-sS", "--max-time", "120", "--limit-rate", rate, "-o", str(out),
        "tftp://198.19.0.1/big.bin",
    )  # fmt: skip


def wait_started(out: Path) -> None:
    wait_for(lambda: out.exists() and out.stat().st_size > 1 << 20, timeout=30)


def active_leases(db: Path) -> dict[str, str]:
    """MAC -> address of the store's active leases (read beside the running daemon: WAL)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT mac, ip FROM leases_readable WHERE state = 'active'")
        return {mac: ip for mac, ip in rows}


def test_sighup_takes_a_new_reservation_and_keeps_leases_and_a_running_transfer(
    lab: Lab,
) -> None:
    server, c0, c1 = lan(lab)
    root = lab.tmp / "tftp"
    big = make_file(root / "big.bin", BIG, seed=7)
    pxed = start(lab, server, root, "198.19.0.50")
    assert pxed.proc is not None

    other = leased_address(dhclient_once(c1, "eth0", lab.tmp, tag="c1"))
    first = leased_address(dhclient_once(c0, "eth0", lab.tmp, tag="c0"))
    assert first == "198.19.0.50"

    out = lab.tmp / "big.out"
    curl = big_fetch(c0, out, "25M")  # about 4 s
    wait_started(out)
    pxed.config_path.write_text(config_text(root, "198.19.0.60"))
    pxed.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: pxed.events("pxed.reloaded"), timeout=10)
    (reloaded,) = pxed.events("pxed.reloaded")
    assert reloaded["changed"] == ["hosts"], reloaded
    assert reloaded["restarted_dhcp"] == [] and reloaded["restarted_tftp"] == []
    assert curl.poll() is None, "the transfer ended before the reload: make it slower"

    # The reservation took effect: the host asking for its old address again (dhclient with
    # its lease file) is NAKed and then gets the new one.
    assert leased_address(dhclient_once(c0, "eth0", lab.tmp, tag="c0")) == "198.19.0.60"
    assert pxed.events("dhcp.nak")
    # The other client's lease survived: in the store, and its renewal keeps the address.
    assert active_leases(pxed.db_path)[OTHER_MAC] == other
    assert leased_address(dhclient_once(c1, "eth0", lab.tmp, tag="c1")) == other

    assert curl.wait(120) == 0, curl.stdout.read() if curl.stdout else ""
    assert same_file(big, out)
    (done,) = pxed.events("tftp.done")
    assert done["file"] == "big.bin"
    assert pxed.stop() == 0


def test_sighup_with_a_broken_file_keeps_the_old_configuration(lab: Lab) -> None:
    server, c0, _ = lan(lab)
    root = lab.tmp / "tftp"
    root.mkdir()
    pxed = start(lab, server, root, "198.19.0.50")
    assert pxed.proc is not None
    broken = config_text(root, "198.19.9.60", extra='max_blksize = "big"\n')
    pxed.config_path.write_text(broken)
    check = server.run(
        "env", f"PYTHONPATH={CHECKOUT}", sys.executable, "-P", "-m", "pxed", "check",
        "--config", str(pxed.config_path), check=False,
    )  # fmt: skip
    assert check.returncode == 1
    expected = [line.split(": ", 1)[1] for line in check.stderr.splitlines()]
    assert len(expected) == 2, check.stderr

    pxed.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(pxed.events("pxed.reload_refused")) > len(expected), timeout=10)
    refused = pxed.events("pxed.reload_refused")
    assert [e["problem"] for e in refused if "problem" in e] == expected
    assert not pxed.events("pxed.reloaded")
    # Still the configuration it started with: the reserved host gets its old address.
    assert leased_address(dhclient_once(c0, "eth0", lab.tmp, tag="c0")) == "198.19.0.50"
    assert pxed.proc.poll() is None
    assert pxed.stop() == 0


def test_sigterm_during_a_transfer_exits_0_within_the_grace_period(lab: Lab) -> None:
    server, c0, c1 = lan(lab)
    root = lab.tmp / "tftp"
    make_file(root / "big.bin", BIG, seed=8)
    pxed = start(lab, server, root, "198.19.0.50")
    assert pxed.proc is not None
    other = leased_address(dhclient_once(c1, "eth0", lab.tmp, tag="c1"))

    out = lab.tmp / "big.out"
    curl = big_fetch(c0, out, "5M")  # 20 s: longer than stop_grace (2 s)
    wait_started(out)
    began = time.monotonic()
    code = pxed.stop(timeout=15)
    took = time.monotonic() - began
    assert code == 0, pxed.tail()
    assert took < 2 + 2, took  # the grace period and a little for the rest of the stop
    # The transfer did not finish in 2 s at 5 MB/s: the client was told, it did not hang.
    assert curl.wait(30) != 0
    assert not same_file(root / "big.bin", out)
    stopping = pxed.events("pxed.stopping")
    assert stopping[0]["transfers"] == 1 and stopping[-1]["transfers_cut"] == 1, stopping
    assert pxed.events("pxed.stopped")
    assert active_leases(pxed.db_path)[OTHER_MAC] == other


def test_sighup_with_a_new_tftp_port_reopens_tftp_only(lab: Lab) -> None:
    server, c0, _ = lan(lab)
    root = lab.tmp / "tftp"
    small = make_file(root / "small.bin", 5000, seed=9)
    pxed = start(lab, server, root, "198.19.0.50")
    assert pxed.proc is not None
    pxed.config_path.write_text(config_text(root, "198.19.0.50", extra="port = 1069\n"))
    pxed.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: pxed.events("pxed.reloaded"), timeout=10)
    (reloaded,) = pxed.events("pxed.reloaded")
    assert reloaded["changed"] == ["tftp.port"]
    assert reloaded["restarted_tftp"] == ["pxs0"] and reloaded["restarted_dhcp"] == []
    assert server.udp_port_bound(1069) and not server.udp_port_bound(69)
    out = lab.tmp / "small.out"
    c0.run("curl", "-sS", "--max-time", "30", "-o", str(out), "tftp://198.19.0.1:1069/small.bin")
    assert same_file(small, out)
    # DHCP kept its socket and answers as before.
    assert leased_address(dhclient_once(c0, "eth0", lab.tmp, tag="c0")) == "198.19.0.50"
    assert pxed.stop() == 0
