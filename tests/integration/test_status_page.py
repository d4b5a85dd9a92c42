"""The status page in a real browser (Debian's headless Chromium), open while clients come:
a lease and a PXE client's story appear on it without a reload, a failed file is marked and
named, a hostname a client sent is shown as text and never run as markup, and the metrics
are still served on the same listener."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import time
from typing import Any

import pytest

from pxed.boots.story import Boot, Step
from pxed.boots.timeline import BOOTS_FILE
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


def fifty_stories(now: float) -> list[Boot]:
    """Fifty machines of a rack that booted together a few minutes ago: most loaded, some
    stopped at a missing file, a few still in their kernel download."""
    stories = []
    for i in range(50):
        start = now - 240 + i * 0.7
        boot = Boot(f"52:54:00:00:01:{i:02x}", start, start, ip=f"198.19.2.{i + 10}",
                    hostname=f"rack1-node{i:02d}", arch=0 if i % 3 else 7)  # fmt: skip
        t = start
        boot.add(Step("dhcp", t, t + 0.05, True, "DHCP DISCOVER+OFFER+REQUEST+ACK"))
        for name, seconds in (("pxelinux.0", 0.4), ("ldlinux.c32", 0.6), ("vmlinuz", 6.0)):
            t += 0.3 + (i % 5) * 0.2
            failed = i % 10 == 7 and name == "ldlinux.c32"
            boot.add(Step("tftp", t, t + seconds, not failed, f"{name}",
                          {"file": name, "reason": "not found" if failed else None}))  # fmt: skip
            t += seconds
            if failed:
                boot.outcome = "failed"
                boot.reason = f"{name} was not found under the TFTP root"
                break
        else:
            boot.outcome = "loaded"
        boot.updated = t
        boot.last = boot.steps[-1].label
        boot.finished = True
        stories.append(boot)
    return stories


def test_fifty_machines_are_one_row_each_on_one_page(
    lab: Lab, request: pytest.FixtureRequest
) -> None:
    """The stories a rack left in boots.jsonl are drawn after a restart, one row per
    machine, none overlapping another, every failure marked."""
    server, client = lab.ns("srv"), lab.ns("cl")
    lab.veth(server, "pxs0", client, "eth0")
    lab.addr(server, "pxs0", f"{SERVER_IP}/16")
    workdir = lab.tmp / "pxed"
    state = workdir / "state"
    state.mkdir(parents=True)
    stories = fifty_stories(time.time())
    (state / BOOTS_FILE).write_text("".join(json.dumps(b.to_json()) + "\n" for b in stories))
    config = {
        "server": {"interfaces": ["pxs0"], "mode": "dhcp"},
        "dhcp": {"range": "198.19.1.10-198.19.1.50"},
        "tftp": {"root": str(lab.tmp)},
        "metrics": {"listen": "127.0.0.1:9167"},
    }
    pxed = PxedProcess(server, workdir, config)
    pxed.start()
    with Browser(server, lab.tmp / "browser", height=1200) as page:
        page.open(PAGE)
        page.wait_for("document.querySelectorAll('#chart g.row').length === 50")
        rows: list[dict[str, Any]] = page.evaluate("""[...document.querySelectorAll('#chart g.row')]
            .map(r => { const b = r.getBBox(); return {mac: r.dataset.mac, top: b.y,
                bottom: b.y + b.height, right: b.x + b.width, outcome: r.dataset.outcome,
                marks: r.querySelectorAll('text.mark').length}; })""")
        width = page.evaluate("document.querySelector('#chart svg').viewBox.baseVal.width")
        shots = keep_dir(request)
        shutil.rmtree(shots, ignore_errors=True)
        shots.mkdir(parents=True)
        page.screenshot(shots / "fifty-machines.png")
    assert [r["mac"] for r in rows] == [b.mac for b in stories]  # in the order they started
    for above, below in itertools.pairwise(rows):
        assert above["bottom"] <= below["top"] + 0.5, (above, below)
    assert all(r["right"] <= width for r in rows), (width, rows)
    failed = [r for r in rows if r["outcome"] == "failed"]
    assert len(failed) == 5 and all(r["marks"] == 1 for r in failed), failed
