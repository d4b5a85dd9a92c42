"""`pxed demo`: watch a machine PXE-boot through pxed, with no spare network needed.

It stages a TFTP root with `pxed stage` and a Linux kernel, builds the lab's boot layout
(pxed.lab.boot: a server namespace and a machine namespace with a bridge and a tap), starts
pxed in the server namespace, powers on a QEMU machine (BIOS or UEFI, `-accel tcg`) and prints
the boot's timeline as it happens: DHCP offer and ack with the address and boot file, every
file sent with its size and time, the kernel's first line. Then it removes everything it made.
It never touches an interface outside the namespaces it created.

The demo is a list of scenarios (``SCENARIOS``): a firmware kind and the path it takes.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from pxed import stage
from pxed.lab import Lab
from pxed.lab.boot import POOL, PREFIX, SERVER_IF, SERVER_IP, BootLab
from pxed.lab.kernel import find_kernel
from pxed.lab.machines import Firmware, Machine, hints, missing_requirements, strip_ansi

KERNEL_CACHE = Path("/var/cache/pxed/kernel")
DEMO_MAC = "52:54:00:de:00:01"
DEMO_IP = "198.19.0.50"
APPEND = "console=ttyS0,115200 panic=-1"


@dataclass(frozen=True, slots=True)
class Scenario:
    """One way the demo machine boots."""

    firmware: Firmware
    via: str
    path: str
    """What the timeline says boots (the firmware's chain)."""


SCENARIOS = (
    Scenario(Firmware.BIOS, "pxelinux", "SeaBIOS -> iPXE ROM -> pxelinux.0 (host entry)"),
    Scenario(Firmware.BIOS, "ipxe", "SeaBIOS -> iPXE ROM -> boot.ipxe"),
    Scenario(Firmware.UEFI, "ipxe", "OVMF (EDK2 PXE) -> ipxe.efi -> boot.ipxe"),
)


def scenario(firmware: Firmware, via: str) -> Scenario:
    """The scenario for these choices (UEFI always chains through iPXE)."""
    for s in SCENARIOS:
        if s.firmware is firmware and (s.via == via or firmware is not Firmware.BIOS):
            return s
    raise ValueError(f"no demo scenario for {firmware.value} via {via}")


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
    missing = missing_requirements([firmware])
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
            kernel = find_kernel(KERNEL_CACHE, lambda m: say(f"  kernel: {m}"))
        except (OSError, RuntimeError) as exc:
            say(f"pxed demo: no kernel to boot ({exc}); pass one with --kernel FILE")
            return 1

    lab = Lab(tag="demo", prefix="pxed-demo-", keep=args.keep)
    old_term = signal.signal(signal.SIGTERM, _on_signal)
    try:
        return _run_lab(args, scenario(firmware, args.via), kernel, lab, say)
    except (_Stop, KeyboardInterrupt):
        say("\npxed demo: interrupted")
        return 130
    finally:
        say("pxed demo: tearing down (machine, pxed, namespaces"
            + (")" if args.keep else ", work directory)"))
        lab.close(grace=3.0)
        signal.signal(signal.SIGTERM, old_term)
        if args.keep:
            say(f"pxed demo: logs, serial console and TFTP root kept in {lab.tmp}")


def _run_lab(
    args: argparse.Namespace,
    plan: Scenario,
    kernel: Path,
    lab: Lab,
    say: Callable[[str], None],
) -> int:
    root = lab.tmp / "tftp"
    opts = stage.StageOptions(
        root=root, netboot_xyz_url=None, serial=True, menu_timeout=10,
        kernel=stage.KernelEntry(kernel, None, APPEND, label="Boot the demo kernel"),
    )
    report = stage.run(opts, io.StringIO())
    staged = [s.dest for s in report.steps if s.action is not stage.Action.MISSING]
    say(f"pxed demo: staged {root} with pxed stage: {', '.join(staged)}")
    say(f"           kernel {kernel} ({stage.human_size(kernel.stat().st_size)})")

    boots = BootLab(lab, root)
    say(f"pxed demo: lab up: namespaces {boots.server.name} (pxed on {SERVER_IF} "
        f"{SERVER_IP}/{PREFIX}) and {boots.machines.name} (bridge, tap, QEMU)")
    pxed = boots.pxed(demo_config(plan.firmware, plan.via))
    timeline = Timeline(DEMO_MAC)
    lock = threading.Lock()
    wall0: list[float] = []

    def on_event(e: dict[str, Any]) -> None:
        if not wall0:
            return
        # pxed's own timestamp, not the arrival time: lines may arrive a little late.
        t = event_time(e, wall0[0])
        with lock:
            for line in timeline.event(e, t if t is not None else time.time() - wall0[0]):
                say(line)

    pxed.on_event = on_event
    try:
        boots.start(pxed)
    except RuntimeError as exc:
        say(f"pxed demo: pxed did not start:\n{exc}")
        return 1
    say(f"pxed demo: pxed ready (pxed --iface {SERVER_IF} --range {POOL[0]}-{POOL[1]} "
        "--tftp-root ... --log-format json)")

    machine = Machine("pxed-demo", DEMO_MAC, plan.firmware)
    say("")
    with lock:
        vm = boots.power_on(machine)
        wall0.append(vm.wall)
        say(f"{Timeline.stamp(0.0)}power on     {plan.firmware.value.upper()} machine "
            f"{DEMO_MAC} ({plan.path}; qemu -accel tcg, a boot takes 20-60 s)")
    elapsed = vm.wait_kernel(args.timeout)
    line = vm.serial.kernel_banner()
    if elapsed is not None and line is not None:
        with lock:
            say(timeline.kernel(line, elapsed)[0])
        say("")
        say(f"pxed demo: power-on to kernel in {elapsed:.1f} s; the machine booted through "
            "pxed (DHCP and TFTP).")
        return 0
    waited = time.monotonic() - vm.started
    time.sleep(1.0)
    say("")
    say(f"pxed demo: no kernel after {waited:.0f} s. The machine's serial console ends with:")
    for text in strip_ansi(vm.serial.text()).splitlines()[-15:]:
        say(f"    {text}")
    for hint in hints(vm.serial.text()):
        say(f"hint: {hint}")
    say(f"pxed's log ends with:\n{pxed.tail(8)}")
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
