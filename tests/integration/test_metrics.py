"""The metrics endpoint after a lease, a forged request for another server, TFTP fetches (one
served, one refused, one left to time out), scraped as Prometheus scrapes it."""

from __future__ import annotations

import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pxed.lab import Lab, require, wait_for
from pxed.lab.clients import dhclient_once, leased_address
from pxed.lab.pxed import PxedProcess
from pxed.lab.tftp import make_file

SERVER_IP = "198.19.0.1"
HOSTILE = Path(__file__).parent / "clients" / "hostile.py"
# An RRQ, the first DATA read, then gone without an ACK: the transfer runs until it times out.
STALL = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(b"\\x00\\x01pxelinux.0\\x00octet\\x00", (sys.argv[1], 69))
print(s.recvfrom(1024)[0][:4].hex())
"""
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(pxed: PxedProcess) -> Samples:
    res = pxed.ns.run("curl", "-sS", "--max-time", "10", "http://127.0.0.1:9167/metrics")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(res.stdout)
        for s in family.samples
    }


def sample(got: Samples, name: str, **labels: str) -> float:
    """A sample that must be exposed (KeyError otherwise: a series at 0 is shown too)."""
    return got[(name, tuple(sorted(labels.items())))]


def test_metrics_after_a_lease_and_a_fetch(lab: Lab) -> None:
    require("curl")
    server, client = lab.ns("srv"), lab.ns("cl")
    lab.veth(server, "pxs0", client, "eth0")
    lab.addr(server, "pxs0", f"{SERVER_IP}/16")
    root = lab.tmp / "root"
    make_file(root / "pxelinux.0", 300_000)
    config = {
        "server": {"interfaces": ["pxs0"], "mode": "dhcp"},
        "dhcp": {"range": "198.19.1.10-198.19.1.50"},
        # A client gone quiet is given up after about 1 + 2 + 4 + 4 s: longer than two
        # refreshes of the gauges (REFRESH), so that one of them sees it running.
        "tftp": {"root": str(root), "default_timeout": 1, "retries": 3},
        "boots": {"quiet": 1},
        "metrics": {"listen": "127.0.0.1:9167"},
    }
    # quiet: log level warning, where no decision and no drop is logged (drops are DEBUG
    # events, not even made); they are counted all the same.
    pxed = PxedProcess(server, lab.tmp / "pxed", config, quiet=True)
    pxed.start()
    ip = leased_address(dhclient_once(client, "eth0", lab.tmp, script=None))
    # A REQUEST taking another server's offer: not for us, dropped as such.
    forged = client.run(sys.executable, str(HOSTILE), "eth0", "send", "request",
                        "--chaddr", "02:66:66:66:66:66", "--requested", "198.19.1.77",
                        "--server-id", "198.19.0.254", "--wait", "0.5", timeout=120)  # fmt: skip
    assert '"type"' not in forged.stdout, forged.stdout
    client.run("curl", "-sS", "--max-time", "30", "-o", str(lab.tmp / "got"),
               f"tftp://{SERVER_IP}/pxelinux.0")  # fmt: skip
    assert (lab.tmp / "got").stat().st_size == 300_000
    missing = client.run("curl", "-sS", "--max-time", "30", "-o", str(lab.tmp / "nope"),
                         f"tftp://{SERVER_IP}/missing.cfg", check=False)  # fmt: skip
    assert missing.returncode != 0
    stalled = client.run(sys.executable, "-c", STALL, SERVER_IP)
    assert stalled.stdout.strip() == "00030001", stalled.stdout  # DATA block 1

    def active() -> float:
        return sample(scrape(pxed), "pxed_tftp_active")

    assert wait_for(lambda: active() == 1, 10), pxed.log()
    assert wait_for(lambda: active() == 0, 30), pxed.log()
    failed = ("pxed_boots_total", (("outcome", "failed"),))
    assert wait_for(lambda: scrape(pxed).get(failed, 0) >= 1, 15), pxed.log()
    got = scrape(pxed)
    subnet = "198.19.0.0/16"
    assert sample(got, "pxed_leases", subnet=subnet, state="active") == 1
    assert sample(got, "pxed_dhcp_replies_total", type="ack") >= 1
    assert sample(got, "pxed_dhcp_replies_total", type="offer") >= 1
    assert sample(got, "pxed_dhcp_received_total", type="DISCOVER") >= 1
    assert sample(got, "pxed_dhcp_received_total", type="REQUEST") >= 2  # dhclient's, forged
    assert sample(got, "pxed_dhcp_received_total", type="DECLINE") == 0
    assert sample(got, "pxed_dhcp_drops_total", reason="other_server") == 1
    assert sample(got, "pxed_dhcp_drops_total", reason="not_holder") == 0
    assert sample(got, "pxed_tftp_transfers_total", outcome="ok") == 1
    assert sample(got, "pxed_tftp_transfers_total", outcome="timeout") == 1
    assert sample(got, "pxed_tftp_transfers_total", outcome="refused") == 1
    assert sample(got, "pxed_tftp_refusals_total", reason="not_found") == 1
    assert sample(got, "pxed_tftp_refusals_total", reason="access_violation") == 0
    assert sample(got, "pxed_tftp_bytes_total") == 300_000  # the stalled client ACKed nothing
    # Failed boots are WARNINGs, in the log at this level: as many as counted.
    finished = pxed.events("boots.finished")
    assert sample(got, "pxed_boots_total", outcome="failed") == len(finished), finished
    assert all(e["outcome"] == "failed" for e in finished), finished
    assert ip.startswith("198.19.1.")
