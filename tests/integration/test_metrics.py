"""The metrics endpoint after a lease and a TFTP fetch, scraped as Prometheus scrapes it."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from pxed.lab import Lab, require, wait_for
from pxed.lab.clients import dhclient_once, leased_address
from pxed.lab.pxed import PxedProcess
from pxed.lab.tftp import make_file

SERVER_IP = "198.19.0.1"


def scrape(pxed: PxedProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    res = pxed.ns.run("curl", "-sS", "--max-time", "10", "http://127.0.0.1:9167/metrics")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(res.stdout)
        for s in family.samples
    }


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
        "tftp": {"root": str(root)},
        "metrics": {"listen": "127.0.0.1:9167"},
    }
    # quiet: log level warning, where no decision is logged; they are counted all the same.
    pxed = PxedProcess(server, lab.tmp / "pxed", config, quiet=True)
    pxed.start()
    ip = leased_address(dhclient_once(client, "eth0", lab.tmp, script=None))
    client.run("curl", "-sS", "--max-time", "30", "-o", str(lab.tmp / "got"),
               f"tftp://{SERVER_IP}/pxelinux.0")  # fmt: skip
    assert (lab.tmp / "got").stat().st_size == 300_000
    subnet = (("state", "active"), ("subnet", "198.19.0.0/16"))
    assert wait_for(lambda: scrape(pxed).get(("pxed_leases", subnet), 0) >= 1, 15), pxed.log()
    got = scrape(pxed)
    assert got[("pxed_dhcp_replies_total", (("type", "ack"),))] >= 1
    assert got[("pxed_dhcp_replies_total", (("type", "offer"),))] >= 1
    assert got[("pxed_tftp_transfers_total", (("outcome", "ok"),))] == 1
    assert got[("pxed_tftp_bytes_total", ())] == 300_000
    assert ip.startswith("198.19.1.")
