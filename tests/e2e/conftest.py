"""End-to-end lab: QEMU machines PXE-booting through pxed inside the test's namespaces.

    server namespace                      machine namespace
    pxed (DHCP + TFTP) on pxs0  <-veth->  uplink -- br0 -- tap0 -- QEMU (-accel tcg)

The kernel the machines boot is Debian's linux-image-amd64 (downloaded once with
`apt-get download`, only boot/vmlinuz-* unpacked into tests/.cache/kernel/, never installed).
The TFTP root is made by `pxed stage` (the library) with that kernel as the default entry,
the menu on the serial console and `console=ttyS0` on the kernel line.

A failing boot fails with the serial console and pxed's log in the message; both files are
also kept under tests/.cache/e2e-logs/<test>/ (gitignored) for reading afterwards.
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pxed import qemu, stage
from pxed.qemu import EventLog, Machine, SerialLog, wait_until
from tests.lab import Lab, Netns, have

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "tests" / ".cache"
KERNEL_CACHE = CACHE / "kernel"
LOG_KEEP = CACHE / "e2e-logs"

SERVER_IF = "pxs0"
SERVER_IP = "198.19.0.1"
PREFIX = 16
POOL = ("198.19.1.10", "198.19.1.250")
KERNEL_APPEND = "console=ttyS0,115200 panic=-1 pxed_e2e=1"
BOOT_TIMEOUT = 180.0
"""Seconds from power-on to "Linux version": 20-40 s is usual under TCG; the rest is for a
loaded CI machine (two cores, other suites running)."""



def require_packages() -> None:
    """Skip, naming the Debian packages, when the host cannot run the machines."""
    missing = qemu.missing_requirements()
    if missing:
        pytest.skip(f"needs Debian packages: apt-get install {' '.join(missing)} "
                    "(make deps-debian)")


@pytest.fixture(scope="session")
def kernel() -> Path:
    """Debian's kernel, from the cache or downloaded and unpacked once."""
    if os.geteuid() != 0:
        pytest.skip("QEMU machines on tap devices need root (run the suite as root: make test)")
    try:
        return qemu.fetch_debian_kernel(KERNEL_CACHE)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no kernel to boot: {exc}")


@pytest.fixture(scope="session")
def tftp_root(kernel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root made by `pxed stage`, with the kernel as the menu's and boot.ipxe's default."""
    require_packages()
    root = tmp_path_factory.mktemp("tftp-root")
    opts = stage.StageOptions(
        root=root,
        netboot_xyz_url=None,
        kernel=stage.KernelEntry(kernel, None, KERNEL_APPEND),
        serial=True,
        menu_timeout=10,
    )
    try:
        stage.run(opts, out=io.StringIO())
    except stage.StageError as exc:
        pytest.skip("cannot stage a root: " + "; ".join(exc.problems))
    return root


# ---------------------------------------------------------------------------------------------


@dataclass
class Boot:
    """One machine's boot: its serial console and what pxed logged about it."""

    machine: Machine
    serial: SerialLog
    seconds: float | None
    """Power-on to "Linux version", None when it never came."""
    lab: BootLab

    @property
    def ok(self) -> bool:
        return self.seconds is not None

    def acks(self) -> list[dict[str, Any]]:
        return self.lab.pxed_events("dhcp.ack", mac=self.machine.mac)

    def files(self) -> dict[str, int]:
        """Files sent to this machine in full: name -> size."""
        return self.lab.files_sent(self.machine.mac)

    def explain(self) -> str:
        """What a failed assertion shows: the serial console and pxed's log."""
        return (
            f"\n--- {self.machine.name} ({self.machine.firmware.value}, {self.machine.mac}) "
            f"serial console, last lines ---\n{self.serial.tail(60)}\n"
            f"--- pxed log, last lines ---\n{self.lab.pxed_tail(60)}\n"
            + "".join(f"hint: {h}\n" for h in qemu.hints(self.serial.text()))
            + f"(full logs kept in {self.lab.keep_dir})"
        )


@dataclass
class BootLab:
    """pxed in a server namespace; machines on a bridge in a machine namespace."""

    lab: Lab
    root: Path
    keep_dir: Path
    server: Netns = field(init=False)
    machines_ns: Netns = field(init=False)
    pxed: EventLog | None = None
    taps: int = 0

    def __post_init__(self) -> None:
        self.server = self.lab.ns("srv")
        self.machines_ns = self.lab.ns("vm")
        self.lab.veth(self.server, SERVER_IF, self.machines_ns, "uplink")
        self.lab.addr(self.server, SERVER_IF, f"{SERVER_IP}/{PREFIX}")
        self.lab.bridge(self.machines_ns, "br0", ["uplink"])
        self.keep_dir.mkdir(parents=True, exist_ok=True)
        for old in self.keep_dir.iterdir():
            if old.is_file():
                old.unlink()

    # -- pxed
    def start_pxed(self, config: str = "", extra: tuple[str, ...] = ()) -> None:
        cfg = self.lab.tmp / "pxed.toml"
        cfg.write_text(config)
        cmd = [
            sys.executable, "-m", "pxed", "--config", str(cfg),
            "--iface", SERVER_IF, "--mode", "dhcp", "--range", f"{POOL[0]}-{POOL[1]}",
            "--tftp-root", str(self.root), "--state-dir", str(self.lab.tmp / "state"),
            "--log-format", "json", *extra,
        ]
        proc = self.server.popen(*cmd)
        self.pxed = EventLog(proc.stdout, self.keep_dir / "pxed.log")
        ready = wait_until(lambda: bool(self.pxed_events("pxed.ready")), 30,
                           alive=lambda: proc.poll() is None)
        assert ready, f"pxed did not start:\n{self.pxed_tail(40)}"

    def pxed_events(self, name: str, **match: Any) -> list[dict[str, Any]]:
        assert self.pxed is not None
        return self.pxed.named(name, **match)

    def pxed_tail(self, n: int) -> str:
        if self.pxed is None:
            return "(pxed not started)"
        return "\n".join(self.pxed.text().splitlines()[-n:])

    def files_sent(self, mac: str) -> dict[str, int]:
        """Files pxed sent to mac in full (tftp.done): name -> bytes acknowledged."""
        return {
            str(e["file"]): int(e["bytes"] if "bytes" in e else e.get("size", 0))
            for e in self.pxed_events("tftp.done", mac=mac)
        }

    # -- machines
    def boot(self, machine: Machine, timeout: float = BOOT_TIMEOUT) -> Boot:
        """Power the machine on, wait for "Linux version" on its serial console, power off."""
        tap = f"tap{self.taps}"
        self.taps += 1
        self.machines_ns.run("ip", "tuntap", "add", tap, "mode", "tap")
        self.machines_ns.run("ip", "link", "set", tap, "master", "br0")
        self.machines_ns.run("ip", "link", "set", tap, "up")
        serial = SerialLog(self.keep_dir / f"{machine.name}.serial.log")
        cmd = qemu.qemu_command(machine, tap, serial.path, self.lab.tmp)
        (self.keep_dir / f"{machine.name}.cmd").write_text(" ".join(cmd) + "\n")
        started = time.monotonic()
        with (self.keep_dir / f"{machine.name}.qemu.log").open("wb") as qemu_log:
            proc = self.machines_ns.popen(*cmd, stdout=subprocess.DEVNULL, stderr=qemu_log)
        came = wait_until(
            lambda: _kernel_line(serial) is not None or _fatal(serial), timeout,
            alive=lambda: proc.poll() is None,
        ) and _kernel_line(serial) is not None
        seconds = time.monotonic() - started if came else None
        if came:  # the rest of the banner line and the command line, for the asserts
            wait_until(lambda: "Command line:" in serial.text(), 10,
                       alive=lambda: proc.poll() is None)
        qemu.stop(proc)
        return Boot(machine, serial, seconds, self)


def _kernel_line(serial: SerialLog) -> str | None:
    return serial.kernel_banner()


def _fatal(serial: SerialLog) -> bool:
    return qemu.gave_up(serial.text())


@pytest.fixture
def bootlab(lab: Lab, tftp_root: Path, request: pytest.FixtureRequest) -> Iterator[BootLab]:
    keep = LOG_KEEP / re.sub(r"[^\w.-]", "_", request.node.name)
    yield BootLab(lab, tftp_root, keep)


def in_pool(ip: str) -> bool:
    a = ipaddress.IPv4Address(ip)
    return ipaddress.IPv4Address(POOL[0]) <= a <= ipaddress.IPv4Address(POOL[1])


def staged_size(root: Path, name: str) -> int:
    return (root / name).stat().st_size


def udhcpc_available() -> bool:
    return have("busybox") or shutil.which("udhcpc") is not None
