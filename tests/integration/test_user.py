"""`pxed --user NAME`: started as root, pxed binds every socket, then becomes NAME with only
CAP_NET_BIND_SERVICE and CAP_NET_ADMIN, and goes on serving: real DHCP clients get leases
(the unicast OFFER's ARP entry needs CAP_NET_ADMIN), TFTP fetches work, an interface that
appears later is served on ports 67/69, and a SIGHUP that moves TFTP to another privileged
port is taken.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from pxed.lab import Lab, Netns, wait_for
from pxed.lab.clients import dhclient_once, leased_address, udhcpc_once
from pxed.lab.pxed import CHECKOUT, PxedProcess
from pxed.lab.tftp import make_file, same_file
from pxed.privileges import KEPT, mask, status_capabilities
from tests.integration.test_service import config_text, lan

NOBODY = 65534
KEPT_MASK = mask(KEPT)


def ids(path: Path, key: str) -> list[int]:
    """The four ids (real, effective, saved, filesystem) of a Uid: or Gid: status line."""
    for line in path.read_text().splitlines():
        if line.startswith(f"{key}:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no {key} in {path}")


def fetch(client: Netns, url: str, out: Path) -> None:
    client.run("curl", "-sS", "--max-time", "30", "-o", str(out), url)


def test_user_drops_root_and_keeps_serving(lab: Lab) -> None:
    server, c0, c1 = lan(lab)
    root = lab.tmp / "tftp"
    big = make_file(root / "f.bin", 2_000_000, seed=5)
    (root / "pxelinux.0").write_bytes(b"pxe")
    (root / "ipxe.efi").write_bytes(b"efi")
    extra = '[metrics]\nlisten = "198.19.0.1:9167"\n'
    text = config_text(root, "198.19.0.50", extra).replace(
        'interfaces = ["pxs0"]', 'interfaces = ["pxs0", "pxs1"]'
    )
    pxed = PxedProcess(server, lab.tmp, text, ["--user", "nobody"], log_level="debug")
    pxed.start()
    wait_for(lambda: pxed.events("pxed.user"), timeout=10)
    (user,) = pxed.events("pxed.user")
    assert user["user"] == "nobody" and user["uid"] == NOBODY
    assert user["capabilities"] == ["CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN"]

    status = Path(f"/proc/{pxed.pid}/status")
    assert ids(status, "Uid") == [NOBODY] * 4
    assert ids(status, "Gid") == [NOBODY] * 4
    caps = status_capabilities(pxed.pid)
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapAmb"] == KEPT_MASK, caps
    assert caps["CapBnd"] == KEPT_MASK
    for task in Path(f"/proc/{pxed.pid}/task").iterdir():  # every thread: setuid is per thread
        assert ids(task / "status", "Uid") == [NOBODY] * 4
        assert status_capabilities(f"{pxed.pid}/task/{task.name}")["CapEff"] & ~KEPT_MASK == 0
    for name in ("leases.sqlite3", "control.sock", "pxed.lock"):
        assert (pxed.state_dir / name).stat().st_uid == NOBODY, name
    assert pxed.state_dir.stat().st_uid == NOBODY

    # Leases (both clients ask for unicast replies: the ARP entry is set first) and TFTP.
    assert leased_address(dhclient_once(c0, "eth0", lab.tmp, tag="c0")) == "198.19.0.50"
    other = udhcpc_once(c1)
    assert other is not None and other.startswith("198.19.0.1")
    assert not pxed.events("dhcp.arp_failed")
    fetch(c0, "tftp://198.19.0.1/f.bin", lab.tmp / "f.out")
    assert same_file(big, lab.tmp / "f.out")
    assert "pxed_dhcp_replies_total" in c0.run("curl", "-sS", "http://198.19.0.1:9167/metrics").stdout
    # `pxed leases` (as root) asks the daemon over its socket, now nobody's.
    leases = server.run(
        "env", f"PYTHONPATH={CHECKOUT}", sys.executable, "-P", "-m", "pxed", "leases",
        "--state-dir", str(pxed.state_dir),
    ).stdout  # fmt: skip
    assert "198.19.0.50" in leases

    # An interface made after the drop: its DHCP (67), watcher (68) and TFTP (69) sockets.
    c2 = lab.ns("c2")
    lab.veth(server, "pxs1", c2, "eth0")
    lab.addr(server, "pxs1", "198.19.1.1/24")
    lab.addr(c2, "eth0", "198.19.1.9/24")
    for port in (67, 68, 69):
        wait_for(lambda port=port: f"%pxs1:{port} " in server.run("ss", "-Hlun").stdout,
                 timeout=10)  # fmt: skip
    fetch(c2, "tftp://198.19.1.1/f.bin", lab.tmp / "f2.out")
    assert same_file(big, lab.tmp / "f2.out")

    # SIGHUP: a new reservation and TFTP on another privileged port (its sockets reopened).
    moved = text.replace("198.19.0.50", "198.19.0.60").replace("[tftp]\n", "[tftp]\nport = 169\n")
    pxed.config_path.write_text(moved)
    assert pxed.proc is not None
    pxed.proc.send_signal(signal.SIGHUP)
    gone = ("pxed.reloaded", "pxed.reload_failed", "pxed.reload_refused")
    wait_for(lambda: any(pxed.events(kind) for kind in gone), timeout=10)
    assert not pxed.events("pxed.reload_failed") and not pxed.events("pxed.reload_refused")
    (reloaded,) = pxed.events("pxed.reloaded")
    assert sorted(reloaded["restarted_tftp"]) == ["pxs0", "pxs1"], reloaded
    assert leased_address(dhclient_once(c0, "eth0", lab.tmp, tag="c0")) == "198.19.0.60"
    fetch(c0, "tftp://198.19.0.1:169/f.bin", lab.tmp / "f3.out")
    assert same_file(big, lab.tmp / "f3.out")
    assert ids(status, "Uid") == [NOBODY] * 4
    assert pxed.stop() == 0
    assert not [e for e in pxed.events() if e.get("level") == "error"]


def run_pxed(server: Netns, *args: str) -> subprocess.CompletedProcess[str]:
    return server.run(
        "env", f"PYTHONPATH={CHECKOUT}", sys.executable, "-P", "-m", "pxed", "--no-dhcp",
        "--iface", "pxs0", "--log-format", "json", *args, check=False, timeout=30,
    )  # fmt: skip


def test_unknown_user_is_refused_before_anything_is_bound(lab: Lab) -> None:
    server, _, _ = lan(lab)
    root = lab.tmp / "tftp"
    root.mkdir()
    done = run_pxed(server, "--tftp-root", str(root), "--state-dir", str(lab.tmp / "st"),
                    "--user", "no-such-user-pxed")  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--user no-such-user-pxed: no such user" in lines[0], done.stderr
    assert "tftp.listening" not in done.stderr and not (lab.tmp / "st").exists()


def test_a_state_dir_the_user_cannot_reach_is_refused(lab: Lab) -> None:
    server, _, _ = lan(lab)
    root = lab.tmp / "tftp"
    root.mkdir()
    private = lab.tmp / "private"
    private.mkdir(mode=0o700)  # root's: nobody may not enter it, whoever would own state/
    done = run_pxed(server, "--tftp-root", str(root), "--state-dir", str(private / "state"),
                    "--user", "nobody")  # fmt: skip
    assert done.returncode == 2, done.stderr
    refused = [line for line in done.stderr.splitlines() if "pxed.refused" in line]
    assert len(refused) == 1, done.stderr
    assert f"user nobody may not enter {private}" in refused[0], done.stderr
    assert os.stat(private / "state").st_uid == 0  # refused before anything was handed over
    assert not (private / "state" / "control.sock").exists()  # closed as root: cleaned up
