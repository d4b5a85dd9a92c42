"""`pxed leases` against a real daemon: the lease dhclient just got is listed while pxed runs
(reading beside the writer, SQLite WAL) and after it stopped, as a table and as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pxed.lab import Lab
from pxed.lab.clients import dhclient_once, leased_address
from pxed.lab.dhcp import CLIENT_IF, DhcpNet, make_dhcp_net
from pxed.lab.pxed import PxedProcess, pythonpath
from pxed.lab.tools import require


@pytest.fixture
def net(lab: Lab) -> Iterator[DhcpNet]:
    # pxed itself, whatever PXED_TEST_DHCP_SERVER says: the command reads pxed's own store.
    the_net = make_dhcp_net(lab, server="pxed")
    try:
        yield the_net
    finally:
        the_net.close()


def pxed_leases(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, from the checkout under test (as PxedProcess runs it)."""
    return subprocess.run(
        [sys.executable, "-P", "-m", "pxed", "leases", "--state-dir", str(state_dir), *args],
        env=pythonpath(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def listed(state_dir: Path) -> list[dict[str, Any]]:
    res = pxed_leases(state_dir, "--json")
    assert res.returncode == 0, res.stderr
    found: list[dict[str, Any]] = json.loads(res.stdout)
    return found


def test_leases_lists_dhclients_lease_running_and_stopped(net: DhcpNet) -> None:
    server = net.server()
    assert isinstance(server, PxedProcess)
    server.start()
    ip = leased_address(dhclient_once(net.client_ns, CLIENT_IF, net.tmp))
    assert net.setup.in_pool(ip)

    # While pxed runs (and holds the database open for writing).
    assert server.running
    rows = listed(server.state_dir)
    assert [(r["ip"], r["mac"], r["state"]) for r in rows] == [(ip, net.client_mac, "active")]
    assert 0 < rows[0]["expires_in"] <= net.setup.lease_time
    # dhclient is an OS client: no option 93 sent, no boot file given, and the row says so.
    assert (rows[0]["arch"], rows[0]["boot_file"]) == (None, None)
    table = pxed_leases(server.state_dir)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("1 lease(s) from the running pxed:") and lines[1].split()[:4] == [
        "IP",
        "MAC",
        "HOSTNAME",
        "STATE",
    ]
    assert lines[2].split()[:2] == [ip, net.client_mac] and "active" in lines[2]

    # After it stopped: the same lease, from the database alone.
    assert server.stop() == 0, server.tail()
    after = listed(server.state_dir)
    assert [(r["ip"], r["mac"], r["state"]) for r in after] == [(ip, net.client_mac, "active")]
    assert after[0]["expires_epoch"] == rows[0]["expires_epoch"]
    said = pxed_leases(server.state_dir).stdout.splitlines()[0]
    assert said.startswith(f"1 lease(s) in {server.db_path} (pxed is not running):"), said


def test_leases_shows_a_pxe_clients_arch_and_boot_file(net: DhcpNet) -> None:
    """A client that says it is x86-64 UEFI PXE firmware (options 60 and 93, as udhcpc can
    send them): its row carries arch 7 and the boot file its ACK named."""
    require("busybox")
    server = net.server()
    server.start()
    res = net.client_ns.run(
        "busybox", "udhcpc", "-i", CLIENT_IF, "-n", "-q", "-f", "-t", "3", "-T", "1",
        "-s", "/bin/true", "-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007",
        check=False, timeout=60,
    )  # fmt: skip
    assert "obtained" in res.stdout + res.stderr, res
    (row,) = listed(server.state_dir)
    assert (row["mac"], row["arch"], row["boot_file"]) == (net.client_mac, 7, "ipxe.efi"), row
