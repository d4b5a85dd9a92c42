"""`pxed demo`: watch a machine PXE-boot through pxed, with no spare network needed.

It builds an isolated lab (two network namespaces joined by a veth pair, a bridge and a tap
device on the machine side), stages a TFTP root with `pxed stage` and a Linux kernel, starts
pxed in the server namespace, powers on a QEMU machine (BIOS or UEFI, `-accel tcg`) and prints
the boot's timeline as it happens: DHCP offer and ack with the address and boot file, every
file sent with its size and time, the kernel's first line. Then it removes everything it made.
It never touches an interface outside the namespaces it created.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from pxed import qemu, stage
from pxed.qemu import EventLog, Firmware, Machine, Netlab, SerialLog

KERNEL_CACHE = Path("/var/cache/pxed/kernel")
DEMO_MAC = "52:54:00:de:00:01"
DEMO_IP = "198.19.0.50"
POOL = "198.19.1.10-198.19.1.250"
APPEND = "console=ttyS0,115200 panic=-1"


# ---------------------------------------------------------------------------------------------
# The timeline: pxed's events (and the serial console) as lines, formatted without I/O


@dataclass
class Timeline:
    """Turns pxed's log events into timeline lines; collapses pxelinux's menu-file probes."""

    mac: str
    lines: list[str] = field(default_factory=list)
    _probes: list[str] = field(default_factory=list)
    _probe_at: float = 0.0

    @staticmethod
    def stamp(t: float) -> str:
        return f"{t:7.1f} s  "

    def _flush_probes(self) -> None:
        if not self._probes:
            return
        names = self._probes
        shown = ", ".join(n.rsplit("/", 1)[-1] for n in names[:3])
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        self.lines.append(
            f"{self.stamp(self._probe_at)}TFTP         not found: pxelinux.cfg/{shown}{more} "
            "(pxelinux asks for per-machine menus first, then default)"
        )
        self._probes = []

    def event(self, e: dict[str, Any], t: float) -> list[str]:
        """The lines for one event at t seconds after power-on (usually zero or one)."""
        before = len(self.lines)
        name = e.get("event")
        mac = e.get("mac")
        if name in ("dhcp.offer", "dhcp.ack") and mac == self.mac:
            self._flush_probes()
            kind = "offer" if name == "dhcp.offer" else "ack  "
            who = "iPXE" if e.get("ipxe") else f"arch {e.get('arch')}"
            why = {"host": "host entry", "ipxe": "iPXE script", "bios": "BIOS default",
                   "uefi_x64": "UEFI x64 default"}.get(str(e.get("boot_reason")),
                                                       str(e.get("boot_reason")))
            self.lines.append(
                f"{self.stamp(t)}DHCP {kind}   {e.get('ip')} -> {e.get('boot_file')} "
                f"({why}; client is {who})"
            )
        elif name == "dhcp.nak" and mac == self.mac:
            self._flush_probes()
            self.lines.append(f"{self.stamp(t)}DHCP nak     {e.get('ip')}: {e.get('reason')}")
        elif name == "tftp.done" and mac in (self.mac, None):
            self._flush_probes()
            size = int(e.get("size") or e.get("bytes") or 0)
            secs = float(e.get("seconds") or 0.0)
            self.lines.append(
                f"{self.stamp(t)}TFTP         {e.get('file')!s:<22} {stage.human_size(size):>9} "
                f"in {secs:.2f} s (blksize {e.get('blksize')}, window {e.get('windowsize')})"
            )
        elif name == "tftp.declined" and mac in (self.mac, None):
            # EDK2 asks for the size (tsize) first and ends that transfer with ERROR 8.
            self._flush_probes()
            self.lines.append(
                f"{self.stamp(t)}TFTP         {e.get('file')!s:<22} size asked only "
                "(the firmware ends this first transfer itself, then downloads)"
            )
        elif name == "tftp.failed" and mac in (self.mac, None):
            self._flush_probes()
            error = str(e.get("error") or "")
            self.lines.append(f"{self.stamp(t)}TFTP failed  {e.get('file')}: {error}")
        elif name == "tftp.refused":
            file = str(e.get("file") or "")
            if file.startswith("pxelinux.cfg/") and e.get("reason") == "file not found":
                if not self._probes:
                    self._probe_at = t
                self._probes.append(file)
            else:
                self._flush_probes()
                self.lines.append(f"{self.stamp(t)}TFTP refused {file}: {e.get('reason')}")
        elif name in ("dhcp.boot_warning", "pxed.refused"):
            self._flush_probes()
            self.lines.append(f"{self.stamp(t)}pxed says    {e.get('detail') or e.get('problem')}")
        return self.lines[before:]

    def kernel(self, line: str, t: float) -> list[str]:
        self._flush_probes()
        text = f"{self.stamp(t)}kernel       {line}"
        self.lines.append(text)
        return [text]


# ---------------------------------------------------------------------------------------------


def missing_packages(firmware: Firmware) -> list[str]:
    """Debian packages the demo needs that this host lacks."""
    missing = qemu.missing_requirements([firmware])
    needed = [s for s in stage.SOURCES if s.required]
    if firmware is Firmware.UEFI:
        needed += [s for s in stage.SOURCES if s.dest == "ipxe.efi"]
    for spec in needed:
        if stage.find_source(spec, Path.is_file) is None and spec.package not in missing:
            missing.append(spec.package)
    return missing


def demo_config(firmware: Firmware, via: str) -> str:
    """pxed's configuration for the demo: the BIOS machine's host entry picks pxelinux.0."""
    text = '[server]\nmode = "dhcp"\n'
    if firmware is Firmware.BIOS and via == "pxelinux":
        text += (f'\n[[dhcp.host]]\nmac = "{DEMO_MAC}"\nip = "{DEMO_IP}"\n'
                 f'hostname = "demo"\nboot = "pxelinux.0"\n')
    return text


def event_time(e: dict[str, Any], wall0: float) -> float | None:
    """Seconds from wall0 (Unix time) to the event's ISO timestamp, None without one."""
    stamp = e.get("timestamp")
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - wall0


class _Stop(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    firmware = Firmware(args.firmware)

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    if os.geteuid() != 0:
        say("pxed demo needs root: it makes network namespaces and a tap device "
            "(sudo pxed demo)")
        return 1
    missing = missing_packages(firmware)
    if missing:
        say(f"pxed demo needs these Debian packages: apt-get install {' '.join(missing)}")
        return 1

    if args.kernel is not None:
        kernel = args.kernel
        if not kernel.is_file():
            say(f"pxed demo: --kernel {kernel}: no such file")
            return 1
    else:
        try:
            kernel = qemu.find_kernel(KERNEL_CACHE, lambda m: say(f"  kernel: {m}"))
        except (OSError, RuntimeError) as exc:
            say(f"pxed demo: no kernel to boot ({exc}); pass one with --kernel FILE")
            return 1

    work = Path(tempfile.mkdtemp(prefix="pxed-demo-"))
    lab = Netlab(tag="demo")
    old_term = signal.signal(signal.SIGTERM, _on_signal)
    try:
        return _run_lab(args, firmware, kernel, work, lab, say)
    except (_Stop, KeyboardInterrupt):
        say("\npxed demo: interrupted")
        return 130
    finally:
        say("pxed demo: tearing down (machine, pxed, namespaces"
            + (")" if args.keep else ", work directory)"))
        lab.close()
        signal.signal(signal.SIGTERM, old_term)
        if args.keep:
            say(f"pxed demo: logs, serial console and TFTP root kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run_lab(
    args: argparse.Namespace,
    firmware: Firmware,
    kernel: Path,
    work: Path,
    lab: Netlab,
    say: Callable[[str], None],
) -> int:
    root = work / "tftp"
    opts = stage.StageOptions(
        root=root, netboot_xyz_url=None, serial=True, menu_timeout=10,
        kernel=stage.KernelEntry(kernel, None, APPEND, label="Boot the demo kernel"),
    )
    report = stage.run(opts, io.StringIO())
    staged = [s.dest for s in report.steps if s.action is not stage.Action.MISSING]
    say(f"pxed demo: staged {root} with pxed stage: {', '.join(staged)}")
    say(f"           kernel {kernel} ({stage.human_size(kernel.stat().st_size)})")

    lab.up()
    say(f"pxed demo: lab up: namespaces {lab.server_ns} (pxed on {lab.server_if} "
        f"{lab.server_cidr}) and {lab.machine_ns} (bridge, tap, QEMU)")
    config = work / "pxed.toml"
    config.write_text(demo_config(firmware, args.via))
    cmd = [
        sys.executable, "-m", "pxed", "--config", str(config), "--iface", lab.server_if,
        "--range", POOL, "--tftp-root", str(root), "--state-dir", str(work / "state"),
        "--log-format", "json",
    ]
    timeline = Timeline(DEMO_MAC)
    lock = threading.Lock()
    t0: list[float] = []
    wall0: list[float] = []

    def on_event(e: dict[str, Any]) -> None:
        if not t0:
            return
        # pxed's own timestamp, not the arrival time: lines may arrive a little late.
        t = event_time(e, wall0[0]) if wall0 else None
        with lock:
            for line in timeline.event(e, t if t is not None else time.monotonic() - t0[0]):
                say(line)

    pxed = lab.popen(lab.server_ns, cmd)
    events = EventLog(pxed.stdout, work / "pxed.log", on_event)
    if not qemu.wait_until(lambda: bool(events.named("pxed.ready")), 30,
                           alive=lambda: pxed.poll() is None):
        say("pxed demo: pxed did not start:\n" + events.text())
        return 1
    say(f"pxed demo: pxed ready ({' '.join(cmd[1:4])} ... --log-format json)")

    machine = Machine("pxed-demo", DEMO_MAC, firmware)
    tap = lab.tap()
    serial = SerialLog(work / "serial.log")
    qcmd = qemu.qemu_command(machine, tap, serial.path, work)
    path = {"bios": "SeaBIOS -> iPXE ROM", "uefi": "OVMF (EDK2 PXE)"}[firmware.value]
    say("")
    with lock:
        t0.append(time.monotonic())
        wall0.append(time.time())
        say(f"{Timeline.stamp(0.0)}power on     {firmware.value.upper()} machine {DEMO_MAC} "
            f"({path}; qemu -accel tcg, a boot takes 20-60 s)")
    with (work / "qemu.log").open("wb") as qemu_log:
        vm = lab.popen(lab.machine_ns, qcmd, stdout=subprocess.DEVNULL, stderr=qemu_log)

    qemu.wait_until(
        lambda: serial.kernel_banner() is not None or qemu.gave_up(serial.text()),
        args.timeout, alive=lambda: vm.poll() is None,
    )
    elapsed = time.monotonic() - t0[0]
    line = serial.kernel_banner()
    if line is not None:
        with lock:
            say(timeline.kernel(line, elapsed)[0])
        say("")
        say(f"pxed demo: power-on to kernel in {elapsed:.1f} s; the machine booted through "
            "pxed (DHCP and TFTP).")
        return 0
    time.sleep(1.0)
    say("")
    say(f"pxed demo: no kernel after {elapsed:.0f} s. The machine's serial console ends with:")
    for text in qemu.strip_ansi(serial.text()).splitlines()[-15:]:
        say(f"    {text}")
    for hint in qemu.hints(serial.text()):
        say(f"hint: {hint}")
    say(f"pxed's log ends with:\n{chr(10).join(events.text().splitlines()[-8:])}")
    return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pxed demo",
        description=(
            "Boot a QEMU machine through pxed in an isolated namespace lab and print the "
            "boot's timeline (DHCP, each TFTP file, the kernel's first line), then remove "
            "everything. Needs root and qemu-system-x86, ipxe-qemu, ovmf, pxelinux, "
            "syslinux-common, ipxe. Touches no interface outside the namespaces it makes."
        ),
    )
    p.add_argument("--firmware", choices=["bios", "uefi"], default="bios",
                   help="bios: SeaBIOS + QEMU's iPXE ROM (default); uefi: OVMF's own PXE "
                        "client, then ipxe.efi")
    p.add_argument("--via", choices=["pxelinux", "ipxe"], default="pxelinux",
                   help="BIOS only: pxelinux.0 and its menu (a host entry, default) or the "
                        "iPXE script boot.ipxe")
    p.add_argument("--kernel", type=Path, metavar="FILE",
                   help="kernel to boot (default: the host's, else Debian's linux-image-amd64 "
                        f"fetched with apt-get into {KERNEL_CACHE})")
    p.add_argument("--timeout", type=float, default=240.0, metavar="SECONDS",
                   help="give up after this long without a kernel (default 240)")
    p.add_argument("--keep", action="store_true",
                   help="keep the work directory (pxed log, serial console, TFTP root)")
    return p


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return run(args, out if out is not None else sys.stdout)
