"""The control socket and `pxed boots` against a real daemon and real clients.

- The socket is owner-only and answers status, leases (the lease dhclient just got), stats,
  reload, unknown and malformed requests the way Kea's channel does; `lease-delete` frees a
  lease at once and the release is on disk after pxed stopped.
- A client that says it is BIOS PXE firmware (udhcpc with options 60 and 93) gets its boot
  file and fetches it with tftp-hpa, then asks for a file that is not there: `pxed boots MAC`
  tells that story, live and (finished, from the state directory) after pxed stopped, names
  the missing file as the reason, and the `[hooks] boot` program got the finished story.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pxed.control import request
from pxed.lab import Lab, wait_for
from pxed.lab.clients import dhclient_once, leased_address
from pxed.lab.dhcp import CLIENT_IF, DhcpNet, make_dhcp_net, pxed_dhcp_config
from pxed.lab.pxed import PxedProcess, pythonpath
from pxed.lab.tftp import client_command
from pxed.lab.tools import require

PXE_MAC = "02:00:5e:10:00:01"


@pytest.fixture
def net(lab: Lab) -> Iterator[DhcpNet]:
    the_net = make_dhcp_net(lab, server="pxed", client_mac=PXE_MAC)
    try:
        yield the_net
    finally:
        the_net.close()


def pxed_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-P", "-m", "pxed", *args], env=pythonpath(),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_control_socket_answers_and_deletes_a_lease(net: DhcpNet) -> None:
    server = net.server()
    assert isinstance(server, PxedProcess)
    server.start()
    ip = leased_address(dhclient_once(net.client_ns, CLIENT_IF, net.tmp))
    sock = server.state_dir / "control.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600, "owner-only"

    status = request(sock, "status")
    assert status["result"] == 0 and status["arguments"]["mode"] == "dhcp", status
    leases = request(sock, "leases", mac=PXE_MAC)["arguments"]["leases"]
    assert [(r["ip"], r["state"]) for r in leases] == [(ip, "active")]
    stats = request(sock, "stats")["arguments"]
    assert stats["dhcp"].get("dhcp.ack", 0) >= 1, stats
    assert stats["dhcp"]["received"].get("REQUEST", 0) >= 1, stats
    assert request(sock, "nonsense")["result"] == 3
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(sock))
        raw.sendall(b"{not json\n")
        assert json.loads(raw.makefile().readline())["result"] == 1
    reloaded = request(sock, "reload", timeout=30)
    assert reloaded["result"] == 0, reloaded
    assert wait_for(lambda: server.events("pxed.reloaded"), 5), server.tail()

    gone = request(sock, "lease-delete", ip=ip)
    assert gone["result"] == 0 and gone["arguments"]["leases"] == [ip], gone
    assert request(sock, "lease-delete", ip=ip)["result"] == 1, "nothing left to delete"
    shown = json.loads(pxed_cli("leases", "--json", "--state-dir", str(server.state_dir)).stdout)
    assert [(r["ip"], r["state"]) for r in shown] == [(ip, "released")]
    assert server.stop() == 0, server.tail()
    assert not sock.exists(), "the socket goes with the daemon"
    after = json.loads(pxed_cli("leases", "--json", "--state-dir", str(server.state_dir)).stdout)
    assert [(r["ip"], r["state"]) for r in after] == [(ip, "released")], "written to disk"


HOOK = """#!/bin/sh
env | grep '^PXED_BOOT_OUTCOME\\|^PXED_MAC\\|^PXED_BOOT_REASON\\|^PXED_BOOT_FILES' > "$0.out.tmp"
echo "args=$*" >> "$0.out.tmp"
mv "$0.out.tmp" "$0.out"
"""


def test_pxed_boots_tells_a_pxe_clients_story_and_names_the_missing_file(net: DhcpNet) -> None:
    require("busybox")
    require("tftp")
    workdir = net.tmp / "pxed"
    root = workdir / "tftp"
    root.mkdir(parents=True)
    (root / "pxelinux.0").write_bytes(os.urandom(40_000))
    hook = net.tmp / "boot-hook.sh"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    config: dict[str, Any] = pxed_dhcp_config(net.setup, "pxs0", workdir)
    config["boot"] = {"bios": "pxelinux.0"}
    config["boots"] = {"quiet": "2s"}
    config["hooks"] = {"boot": str(hook)}
    server = PxedProcess(net.server_ns, workdir, config)
    server.start()
    res = net.client_ns.run(
        "busybox", "udhcpc", "-i", CLIENT_IF, "-n", "-q", "-f", "-t", "3", "-T", "1",
        "-s", "/bin/true", "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000",
        check=False, timeout=60,
    )  # fmt: skip
    found = re.search(r"lease of (\S+) obtained", res.stdout + res.stderr)
    assert found, res
    # udhcpc ran with no script: the address is put on the link here, as its script would.
    net.client_ns.run("ip", "addr", "add", f"{found.group(1)}/{net.setup.prefix}", "dev", CLIENT_IF)

    # --follow, started before the files are asked for: it must see the story change.
    follow = subprocess.Popen(
        [sys.executable, "-P", "-m", "pxed", "boots", PXE_MAC, "--follow", "--json",
         "--state-dir", str(server.state_dir)],
        env=pythonpath(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    followed: list[dict[str, Any]] = []

    def read() -> None:
        assert follow.stdout is not None
        for line in follow.stdout:
            followed.append(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(1.0)
    server_ip = net.setup.server_ip
    got = net.client_ns.run(*client_command("tftp-hpa", "pxelinux.0", net.tmp / "p0",
                                            server=server_ip), check=False, timeout=60)  # fmt: skip
    assert (net.tmp / "p0").exists() and (net.tmp / "p0").stat().st_size == 40_000, (
        f"{got}\n{server.tail()}")
    net.client_ns.run(*client_command("tftp-hpa", "ldlinux.c32", net.tmp / "l",
                                      server=server_ip), check=False, timeout=60)  # fmt: skip

    def story() -> dict[str, Any]:
        out = pxed_cli("boots", PXE_MAC, "--json", "--state-dir", str(server.state_dir))
        assert out.returncode == 0, out.stderr
        stories: list[dict[str, Any]] = json.loads(out.stdout)
        return stories[-1] if stories else {}

    assert wait_for(lambda: story().get("outcome") == "failed", 10), story()
    boot = story()
    kinds = [(s["kind"], s["detail"].get("file")) for s in boot["steps"]]
    assert kinds == [("dhcp", None), ("tftp", "pxelinux.0"), ("tftp", "ldlinux.c32")], kinds
    dhcp = boot["steps"][0]["detail"]
    assert dhcp["messages"] == ["OFFER", "ACK"] and dhcp["boot_file"] == "pxelinux.0"
    assert dhcp["rule"] == "bios" and dhcp["arch"] == 0
    assert boot["steps"][1]["ok"] and boot["steps"][1]["detail"]["bytes"] == 40_000
    assert boot["reason"] == "ldlinux.c32 was not found under the TFTP root", boot
    text = pxed_cli("boots", PXE_MAC, "--state-dir", str(server.state_dir)).stdout
    assert "why:  ldlinux.c32 was not found under the TFTP root" in text, text

    # Quiet for [boots] quiet: finished, the hook told, and kept after pxed stops.
    out = Path(str(hook) + ".out")
    assert wait_for(out.exists, 15), server.tail()
    told = out.read_text()
    assert "PXED_BOOT_OUTCOME=failed" in told and f"PXED_MAC={PXE_MAC}" in told, told
    assert "PXED_BOOT_FILES=pxelinux.0" in told and f"args=boot failed {PXE_MAC}" in told, told
    follow.terminate()
    follow.wait(10)
    reader.join(5)
    files = [{s["detail"].get("file") for s in b["steps"]} for b in followed]
    assert any("ldlinux.c32" in f for f in files), followed
    assert server.stop() == 0, server.tail()
    stopped = pxed_cli("boots", "--json", "--state-dir", str(server.state_dir))
    kept = json.loads(stopped.stdout)
    assert [b["mac"] for b in kept] == [PXE_MAC] and kept[0]["finished"], kept
    assert "pxed is not running" in pxed_cli("boots", "--state-dir",
                                            str(server.state_dir)).stdout  # fmt: skip
