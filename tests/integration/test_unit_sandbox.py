"""pxed works inside what systemd/pxed.service allows it.

systemd is not PID 1 here, so the unit cannot be started; this runs pxed the way the unit
does as far as a test can: an unprivileged user holding only the unit's capabilities
(setpriv, ambient like AmbientCapabilities=, no new privileges), under strace, while a
client gets a lease (an OFFER unicast through an ARP entry), fetches a file by TFTP and
the configuration is reloaded. Every system call pxed made must be in the unit's
SystemCallFilter=, every socket of a family RestrictAddressFamilies= allows.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from functools import cache
from pathlib import Path

from pxed.lab import Lab, require, wait_for
from pxed.lab.clients import dhclient_once, leased_address
from pxed.lab.pxed import PxedProcess
from pxed.lab.tftp import make_file, same_file
from tests.integration.test_service import config_text, lan

UNIT = Path(__file__).parents[2] / "systemd" / "pxed.service"
NOBODY = 65534


def unit_values(key: str) -> list[str]:
    """Every word of every ``key=`` line of the unit's [Service] section."""
    words: list[str] = []
    for line in UNIT.read_text().splitlines():
        if line.startswith(f"{key}="):
            words += line.split("=", 1)[1].split()
    return words


@cache
def syscall_group(name: str) -> frozenset[str]:
    """The system calls of a systemd group (``@system-service``), nested groups expanded."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True
    ).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        word = line.strip().split(" ")[0]
        if not word:
            break  # the group's own block ends at the first blank line
        if word.startswith("#"):
            continue
        calls |= syscall_group(word) if word.startswith("@") else {word}
    return frozenset(calls)


def allowed_syscalls() -> set[str]:
    """SystemCallFilter= as systemd applies it: the first line allows, ``~`` lines take away."""
    allowed: set[str] = set()
    for line in UNIT.read_text().splitlines():
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.split("=", 1)[1]
        deny = value.startswith("~")
        names = value.lstrip("~").split()
        calls = set().union(*(syscall_group(n) if n.startswith("@") else {n} for n in names))
        allowed = allowed - calls if deny else allowed | calls
    return allowed


class Sandboxed(PxedProcess):
    """pxed as nobody with the unit's capabilities, every system call traced to ``trace``."""

    @property
    def trace(self) -> Path:
        return self.workdir / "strace.out"

    def command(self) -> list[str]:
        caps = ",".join("+" + c.removeprefix("CAP_").lower()
                        for c in unit_values("AmbientCapabilities"))  # fmt: skip
        return [
            "strace", "-f", "-qq", "-o", str(self.trace),
            "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set=-all,{caps}",
            "--no-new-privs", *super().command(),
        ]  # fmt: skip

    @property
    def daemon_pid(self) -> int:
        """pxed's own pid: strace's child (setpriv execs it)."""
        return int(Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()[0])


def traced_calls(trace: Path, python: str) -> tuple[set[str], set[str], str]:
    """The system calls and socket families pxed made (after setpriv exec'd it), and the
    trace from there."""
    text = trace.read_text()
    start = text.index(f'execve("{python}"')
    text = text[text.index("\n", start) + 1 :]
    calls = set(re.findall(r"^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)(?:\(| resumed)", text, re.M))
    families = set(re.findall(r"\bsocket\((AF_\w+)", text))
    return calls, families, text


def test_pxed_serves_within_the_units_sandbox(lab: Lab) -> None:
    require("strace")
    require("setpriv")
    require("systemd-analyze")
    server, c0, c1 = lan(lab)
    root = lab.tmp / "tftp"
    big = make_file(root / "f.bin", 300_000, seed=3)
    (root / "pxelinux.0").write_bytes(b"pxe")
    (root / "ipxe.efi").write_bytes(b"efi")
    hook = '[hooks]\nlease = "/bin/true"\n[metrics]\nlisten = "198.19.0.1:9167"\n'
    pxed = Sandboxed(server, lab.tmp, config_text(root, "198.19.0.50", hook))
    pxed.state_dir.mkdir(parents=True)
    os.chown(pxed.state_dir, NOBODY, NOBODY)  # StateDirectory= does this for the unit
    pxed.start()

    assert leased_address(dhclient_once(c1, "eth0", lab.tmp, tag="c1")).startswith("198.19.0.1")
    c0.run("curl", "-sS", "--max-time", "30", "-o", str(lab.tmp / "f.out"),
           "tftp://198.19.0.1/f.bin")  # fmt: skip
    assert same_file(big, lab.tmp / "f.out")
    assert "pxed_" in c0.run("curl", "-sS", "http://198.19.0.1:9167/metrics").stdout
    pxed.config_path.write_text(config_text(root, "198.19.0.60", hook))
    os.kill(pxed.daemon_pid, signal.SIGHUP)
    wait_for(lambda: pxed.events("pxed.reloaded"), timeout=10)
    assert leased_address(dhclient_once(c0, "eth0", lab.tmp, tag="c0")) == "198.19.0.60"
    os.kill(pxed.daemon_pid, signal.SIGTERM)
    assert pxed.proc is not None and pxed.proc.wait(30) == 0
    if pxed.output is not None:
        pxed.output.join()
    assert not [e for e in pxed.events() if e.get("level") == "error"]

    calls, families, text = traced_calls(pxed.trace, pxed.python)
    assert calls - allowed_syscalls() == set()
    assert families <= {f for f in unit_values("RestrictAddressFamilies")}, families
    # The reason CAP_NET_ADMIN is in the unit: the unicast OFFER's ARP entry.
    assert re.search(r"ioctl\(\d+, SIOCSARP, .*\) = 0", text)
    assert "EPERM" not in text
