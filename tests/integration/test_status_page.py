"""The status page in a real browser (Debian's headless Chromium), open while clients come:
a lease and a PXE client's story appear on it without a reload, a failed file is marked and
named, a hostname a client sent is shown as text and never run as markup, and the metrics
are still served on the same listener."""

from __future__ import annotations

import json
import re
import shutil
from typing import Any

import pytest

from pxed.lab import Lab, require
from pxed.lab.browser import Browser
from pxed.lab.pxed import PxedProcess
from pxed.lab.tftp import make_file
from tests.lab import keep_dir

SERVER_IP = "198.19.0.1"
PAGE = "http://127.0.0.1:9167/"
MAC = "02:00:5e:10:00:07"
# What a hostile or broken client may put in option 12: drawn as text, it is harmless.
HOSTNAME = "<img/src=x/onerror=document.title=1>node7"  # no spaces: udhcpc splits there


def udhcpc(client: Any, *extra: str) -> str:
    res = client.run(
        "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "3", "-T", "1",
        "-s", "/bin/true", *extra, check=False, timeout=60,
    )  # fmt: skip
    found = re.search(r"lease of (\S+) obtained", res.stdout + res.stderr)
    assert found, res
    return found.group(1)


def test_the_status_page_follows_leases_and_boots_live(
    lab: Lab, request: pytest.FixtureRequest
) -> None:
    require("curl", "busybox")
    server, client = lab.ns("srv"), lab.ns("cl")
    lab.veth(server, "pxs0", client, "eth0")
    lab.addr(server, "pxs0", f"{SERVER_IP}/16")
    client.run("ip", "link", "set", "eth0", "address", MAC)
    root = lab.tmp / "root"
    make_file(root / "pxelinux.0", 200_000)
    config = {
        "server": {"interfaces": ["pxs0"], "mode": "dhcp"},
        "dhcp": {"range": "198.19.1.10-198.19.1.50"},
        "tftp": {"root": str(root)},
        "boot": {"bios": "pxelinux.0"},
        "boots": {"quiet": "2s"},
        "metrics": {"listen": "127.0.0.1:9167"},
    }
    pxed = PxedProcess(server, lab.tmp / "pxed", config)
    pxed.start()
    with Browser(server, lab.tmp / "browser") as page:
        page.open(PAGE)
        page.wait_for("document.getElementById('live').textContent === 'live'")
        assert page.evaluate("document.querySelectorAll('#leases tbody tr').length") == 0
        loads = sum(e.get("method") == "Page.loadEventFired" for e in page.events)

        # A PXE client (BIOS) takes an address and its boot file, then asks for a file that
        # is not there: all of it reaches the open page over its event stream.
        ip = udhcpc(client, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000",
                    "-x", "hostname:" + HOSTNAME)  # fmt: skip
        client.run("ip", "addr", "add", f"{ip}/16", "dev", "eth0")
        client.run("curl", "-sS", "--max-time", "30", "-o", str(lab.tmp / "p0"),
                   f"tftp://{SERVER_IP}/pxelinux.0")  # fmt: skip
        client.run("curl", "-sS", "--max-time", "10", "-o", str(lab.tmp / "l"),
                   f"tftp://{SERVER_IP}/ldlinux.c32", check=False)  # fmt: skip

        row = f"#leases tbody tr[data-mac='{MAC}']"
        page.wait_for(f"document.querySelector(\"{row}\") !== null", 15)
        cells = page.evaluate(f"[...document.querySelector(\"{row}\").cells]"
                              ".map(c => c.textContent)")
        assert cells[0] == ip and cells[1] == MAC and cells[3] == "active", cells
        boot = f"#chart g.row[data-mac='{MAC}']"
        page.wait_for(f"document.querySelector(\"{boot}\")?.dataset.outcome === 'failed'", 20)
        story: dict[str, Any] = page.evaluate(f"""(() => {{
            const row = document.querySelector("{boot}");
            return {{ip: row.dataset.ip,
                     kinds: [...row.querySelectorAll('rect.seg')].map(s => s.dataset.kind),
                     failed: row.querySelectorAll('rect.seg.failed').length,
                     marks: row.querySelectorAll('text.mark').length,
                     reason: row.querySelector('.reason')?.textContent ?? ''}};
        }})()""")
        assert story["ip"] == ip, story
        assert story["kinds"][0] == "dhcp" and story["kinds"].count("tftp") >= 2, story
        assert story["failed"] >= 1 and story["marks"] >= 1, story
        assert "not found" in story["reason"] or "ldlinux.c32" in story["reason"], story
        # Live, not reloaded: the same document took every update.
        assert sum(e.get("method") == "Page.loadEventFired" for e in page.events) == loads
        assert int(page.evaluate("document.body.dataset.updates")) >= 2

        # The client's hostname is on the page as the characters it sent, not as an element.
        hostname = page.evaluate(f"document.querySelector(\"{row}\").cells[2].textContent")
        assert hostname == HOSTNAME, hostname
        assert page.evaluate("document.querySelectorAll('img').length") == 0
        assert page.evaluate("document.title") == "pxed"
        shots = keep_dir(request)  # the screenshot stays: tests/.cache/e2e-logs/<test>/
        shutil.rmtree(shots, ignore_errors=True)
        shots.mkdir(parents=True)
        page.screenshot(shots / "status-page.png")

    # The same listener still answers Prometheus, and the JSON the page reads is whole.
    metrics = server.run("curl", "-sS", "--max-time", "10", PAGE + "metrics").stdout
    assert "pxed_tftp_transfers_total" in metrics
    status = json.loads(server.run("curl", "-sS", "--max-time", "10", PAGE + "api/status").stdout)
    assert [x["mac"] for x in status["leases"]] == [MAC]
    assert status["boots"][-1]["outcome"] == "failed"
