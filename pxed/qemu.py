"""QEMU machines that PXE-boot through pxed, and the namespace lab they boot in.

Used by `pxed demo`, the end-to-end tests (tests/e2e) and bench/boot:

- `Machine` + `qemu_command()`: a BIOS machine (SeaBIOS with QEMU's e1000 option ROM, which is
  an iPXE build) or a UEFI machine (OVMF, whose own EDK2 PXE client runs: virtio-net with no
  option ROM), serial console to a file, always `-accel tcg`.
- `Netlab`: a server namespace and a machine namespace joined by a veth pair; on the machine
  side a bridge with one tap device per machine. Everything it makes carries a per-run suffix
  and is removed by `close()`. It never touches an interface outside the namespaces it made.
- `SerialLog` and `EventLog`: follow a serial console file and a JSON log stream.
- `find_kernel()` / `fetch_debian_kernel()`: a Linux kernel to boot (the host's, or Debian's
  linux-image-amd64 downloaded with apt-get and unpacked, not installed).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TextIO

QEMU = "qemu-system-x86_64"

# Debian packages behind each tool and firmware file (named when one is missing).
PACKAGES = {
    QEMU: "qemu-system-x86",
    "ip": "iproute2",
    "bios-rom": "ipxe-qemu",
    "ovmf": "ovmf",
    "pxelinux": "pxelinux",
    "syslinux": "syslinux-common",
    "ipxe": "ipxe",
    "apt-get": "apt",
    "dpkg-deb": "dpkg",
}

# OVMF (code, vars) pairs: Debian, Fedora, Arch layouts.
OVMF_PAIRS = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"),
)
# QEMU's e1000 option ROM (iPXE), which SeaBIOS runs to PXE-boot.
BIOS_ROMS = (
    "/usr/lib/ipxe/qemu/efi-e1000.rom",
    "/usr/lib/ipxe/qemu/pxe-e1000.rom",
    "/usr/share/qemu/efi-e1000.rom",
    "/usr/share/qemu/pxe-e1000.rom",
)

KERNEL_MARK = "Linux version"

FATAL_MARKS = ("PXE-E", "Could not boot", "No configuration methods succeeded")
"""Firmware (EDK2's PXE-Exx) or iPXE giving up: a boot that shows one has failed (UEFI
firmware would go on to try IPv6 and HTTP boot for minutes)."""

HINTS = {
    "PXE-E16": "EDK2 took the lease but found no usable offer. An offer carrying option 60 "
    "'PXEClient' without option 43 is a 'BINL' offer to EDK2, which then asks the server on "
    "port 4011 for the boot file and gives up without an answer. Full-DHCP offers should "
    "either leave option 60 out (as dnsmasq's dhcp-boot does) or add option 43 with "
    "PXE_DISCOVERY_CONTROL (sub-option 6) = 8: boot from the offer's file name.",
    "PXE-E53": "the firmware got no boot file name in the offer.",
    "PXE-E36": "the TFTP server answered with an ERROR packet.",
    "PXE-E18": "the firmware timed out waiting for the TFTP server.",
    "No configuration methods succeeded": "iPXE got no DHCP answer it accepted.",
    "Could not boot": "iPXE could not fetch or run what the offer or script named.",
}
"""Serial console text -> what it probably means (shown beside a failed boot)."""


def gave_up(serial_text: str) -> bool:
    return any(mark in serial_text for mark in FATAL_MARKS)


def hints(serial_text: str) -> list[str]:
    return [text for mark, text in HINTS.items() if mark in serial_text]


class Firmware(Enum):
    BIOS = "bios"
    UEFI = "uefi"


@dataclass(frozen=True, slots=True)
class Machine:
    """One virtual machine that boots from the network."""

    name: str
    mac: str
    firmware: Firmware
    memory_mb: int = 512


def find_ovmf() -> tuple[Path, Path] | None:
    for code, vars_ in OVMF_PAIRS:
        if Path(code).is_file() and Path(vars_).is_file():
            return Path(code), Path(vars_)
    return None


def missing_requirements(
    firmware: Sequence[Firmware] = (Firmware.BIOS, Firmware.UEFI),
) -> list[str]:
    """Debian packages this host lacks to boot machines of these kinds (empty: all there)."""
    missing: list[str] = []
    if shutil.which(QEMU) is None:
        missing.append(PACKAGES[QEMU])
    if shutil.which("ip") is None:
        missing.append(PACKAGES["ip"])
    if Firmware.BIOS in firmware and not any(Path(p).is_file() for p in BIOS_ROMS):
        missing.append(PACKAGES["bios-rom"])
    if Firmware.UEFI in firmware and find_ovmf() is None:
        missing.append(PACKAGES["ovmf"])
    return missing


def qemu_command(
    machine: Machine,
    tap: str,
    serial: Path,
    workdir: Path,
    *,
    ovmf: tuple[Path, Path] | None = None,
) -> list[str]:
    """The QEMU command line for one machine on an existing tap device.

    BIOS: QEMU's default e1000 option ROM is iPXE, so the machine asks as iPXE from its first
    DHCPDISCOVER. UEFI: virtio-net-pci with `romfile=` (no option ROM), so that OVMF's own
    EDK2 PXE client runs (client arch 7), as on real UEFI machines; the VARS file is copied
    per machine (OVMF writes its boot entries into it).
    """
    cmd = [
        QEMU,
        "-accel", "tcg",
        "-name", machine.name,
        "-m", str(machine.memory_mb),
        "-display", "none",
        "-monitor", "none",
        "-no-reboot",
        "-boot", "n",
        "-serial", f"file:{serial}",
        "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
    ]
    if machine.firmware is Firmware.UEFI:
        pair = ovmf or find_ovmf()
        if pair is None:
            raise FileNotFoundError("OVMF firmware not found: apt-get install ovmf")
        code, vars_template = pair
        vars_copy = workdir / f"{machine.name}-OVMF_VARS.fd"
        shutil.copyfile(vars_template, vars_copy)
        cmd += [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            "-device", f"virtio-net-pci,netdev=n0,mac={machine.mac},romfile=",
        ]
    else:
        cmd += ["-device", f"e1000,netdev=n0,mac={machine.mac}"]
    return cmd


# ---------------------------------------------------------------------------------------------
# Following a serial console and a JSON log


class SerialLog:
    """A machine's serial console file, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        try:
            return self.path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def line_with(self, needle: str) -> str | None:
        """The first whole line containing needle (without the kernel's [ time] prefix)."""
        for line in self.text().splitlines():
            if needle in line:
                return re.sub(r"^\s*\[\s*[\d.]+\]\s*", "", strip_ansi(line)).strip()
        return None

    def kernel_banner(self) -> str | None:
        """The whole "Linux version ..." line once it is complete on the console."""
        text = self.text()
        at = text.find(KERNEL_MARK)
        if at < 0 or "\n" not in text[at:]:
            return None
        return text[at : text.index("\n", at)].strip()

    def tail(self, n: int = 40) -> str:
        lines = strip_ansi(self.text()).splitlines()
        return "\n".join(lines[-n:])


_ANSI = re.compile(r"\x1b\[[0-9;?=]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\r")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


class EventLog:
    """Reads a process's output on a thread: JSON lines become events, every line is kept.

    on_event(event) is called on the reader thread for each JSON event as it arrives.
    """

    def __init__(
        self,
        stream: Any,
        copy_to: Path | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._copy_to = copy_to
        self._on_event = on_event
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: Any) -> None:
        out = self._copy_to.open("a") if self._copy_to is not None else None
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace").rstrip("\n")
                if out is not None:
                    out.write(line + "\n")
                    out.flush()
                event: dict[str, Any] | None = None
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        parsed = json.loads(line)
                        if isinstance(parsed, dict):
                            event = parsed
                with self._lock:
                    self.lines.append(line)
                    if event is not None:
                        self.events.append(event)
                if event is not None and self._on_event is not None:
                    self._on_event(event)
        finally:
            if out is not None:
                out.close()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def named(self, name: str, **match: Any) -> list[dict[str, Any]]:
        """Events called name whose fields equal every given value."""
        return [
            e for e in self.snapshot()
            if e.get("event") == name and all(e.get(k) == v for k, v in match.items())
        ]

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.1,
    alive: Callable[[], bool] | None = None,
) -> bool:
    """Poll predicate until true; False on timeout or when alive() turns false."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if alive is not None and not alive():
            return predicate()
        time.sleep(interval)
    return predicate()


# ---------------------------------------------------------------------------------------------
# The namespace lab (for the demo and the benchmark; the tests use tests/lab.py's Lab)


def _ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")


@dataclass
class Netlab:
    """Server namespace <-veth-> machine namespace (bridge + taps), removed on close().

    Addresses: the server side gets server_cidr (198.18.0.0/15 only); machines get theirs from
    the DHCP server under test.
    """

    tag: str = "demo"
    server_cidr: str = "198.19.0.1/16"
    server_if: str = "pxs0"
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    namespaces: list[str] = field(default_factory=list)
    taps: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def server_ns(self) -> str:
        return f"pxs{self.tag}-{self.suffix}"

    @property
    def machine_ns(self) -> str:
        return f"pxm{self.tag}-{self.suffix}"

    @property
    def server_ip(self) -> str:
        return self.server_cidr.split("/")[0]

    def up(self) -> None:
        for ns in (self.server_ns, self.machine_ns):
            _ip("netns", "add", ns)
            self.namespaces.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        # Both veth ends are created inside the server namespace and one is moved: no
        # interface of this lab ever exists, even briefly, in the caller's namespace.
        _ip("-n", self.server_ns, "link", "add", self.server_if, "type", "veth",
            "peer", "name", "uplink", "netns", self.machine_ns)
        _ip("-n", self.server_ns, "addr", "add", self.server_cidr, "dev", self.server_if)
        _ip("-n", self.server_ns, "link", "set", self.server_if, "up")
        _ip("-n", self.machine_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.machine_ns, "link", "set", "br0", "up")
        _ip("-n", self.machine_ns, "link", "set", "uplink", "master", "br0")
        _ip("-n", self.machine_ns, "link", "set", "uplink", "up")

    def tap(self) -> str:
        """A new tap device on the machines' bridge."""
        name = f"tap{len(self.taps)}"
        _ip("-n", self.machine_ns, "tuntap", "add", name, "mode", "tap")
        _ip("-n", self.machine_ns, "link", "set", name, "master", "br0")
        _ip("-n", self.machine_ns, "link", "set", name, "up")
        self.taps.append(name)
        return name

    def popen(self, ns: str, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.STDOUT)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *cmd], start_new_session=True, **kwargs
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            stop(proc)
        self.procs.clear()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces.clear()

    def __enter__(self) -> Netlab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stop(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """SIGTERM the process group (it was started in its own session), SIGKILL after grace."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


# ---------------------------------------------------------------------------------------------
# A kernel to boot


def host_kernel() -> Path | None:
    """This host's own kernel image when it is readable (most Debian-like hosts have one)."""
    boot = Path("/boot")
    candidates = [boot / f"vmlinuz-{os.uname().release}"]
    with contextlib.suppress(OSError):
        candidates += sorted(boot.glob("vmlinuz-*"), reverse=True)
    for path in candidates:
        with contextlib.suppress(OSError):
            if path.is_file() and os.access(path, os.R_OK) and path.stat().st_size > 1_000_000:
                return path
    return None


def cached_kernel(cache: Path) -> Path | None:
    found = sorted(cache.glob("vmlinuz-*")) if cache.is_dir() else []
    return found[-1] if found else None


def fetch_debian_kernel(
    cache: Path, log: Callable[[str], None] = lambda _: None, timeout: float = 600
) -> Path:
    """Debian's linux-image-amd64 kernel, downloaded with apt-get and unpacked into cache.

    Only boot/vmlinuz-* is extracted from the package (it is not installed). A kernel already
    in the cache is used as is. Needs apt-get and dpkg-deb (a Debian-like host); runs
    `apt-get update` once when the package lists are missing.
    """
    have = cached_kernel(cache)
    if have is not None:
        return have
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "tar"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(
                f"{tool} not found: the kernel is fetched from Debian's linux-image-amd64 "
                "package; on other hosts pass a kernel file instead"
            )
    cache.mkdir(parents=True, exist_ok=True)

    def package_name() -> str | None:
        res = subprocess.run(["apt-cache", "depends", "linux-image-amd64"],
                             capture_output=True, text=True, timeout=60)
        for line in res.stdout.splitlines():
            m = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
            if m:
                return m.group(1)
        return None

    pkg = package_name()
    if pkg is None:
        log("apt-get update (package lists are missing)")
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=timeout)
        pkg = package_name()
    if pkg is None:
        raise RuntimeError("apt-cache knows no linux-image-amd64 (is a Debian mirror configured?)")
    with tempfile.TemporaryDirectory(prefix="pxed-kernel-", dir=cache) as tmp:
        log(f"apt-get download {pkg}")
        res = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True,
                             text=True, timeout=timeout)
        debs = list(Path(tmp).glob("*.deb"))
        if res.returncode != 0 or not debs:
            raise RuntimeError(f"apt-get download {pkg} failed: {res.stderr.strip()}")
        log(f"unpacking boot/vmlinuz-* from {debs[0].name}")
        dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])],
                                stdout=subprocess.PIPE)
        tar = subprocess.run(["tar", "-x", "-C", tmp, "--wildcards", "./boot/vmlinuz-*"],
                             stdin=dpkg.stdout, capture_output=True, timeout=timeout)
        if dpkg.stdout is not None:
            dpkg.stdout.close()
        dpkg.wait(timeout=timeout)
        kernels = sorted((Path(tmp) / "boot").glob("vmlinuz-*"))
        if tar.returncode != 0 or not kernels:
            raise RuntimeError(f"no boot/vmlinuz-* in {debs[0].name}: {tar.stderr!r}")
        dest = cache / kernels[-1].name
        shutil.move(str(kernels[-1]), dest)
    return dest


def find_kernel(cache: Path, log: Callable[[str], None] = lambda _: None) -> Path:
    """A kernel to boot: one cached before, the host's own, else Debian's (downloaded)."""
    return cached_kernel(cache) or host_kernel() or fetch_debian_kernel(cache, log)


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def print_line(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()
