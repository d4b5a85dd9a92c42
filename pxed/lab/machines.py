"""QEMU machines that boot from the network, their firmware kinds (data), their serial consoles.

A firmware kind is one entry of ``KINDS``: the QEMU binary, the machine type, the network
card (with or without an option ROM), the flash images and the Debian package behind them.
A machine is a name, a MAC and a kind; ``qemu_command`` turns it into a command line on a
tap device, always ``-accel tcg`` (no KVM is assumed), serial console to a file.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pxed.lab.tools import PACKAGES


class Firmware(Enum):
    BIOS = "bios"
    UEFI = "uefi"
    UEFI_HTTP = "uefi-http"
    UEFI_SECURE = "uefi-secure"
    ARM64 = "arm64"


@dataclass(frozen=True, slots=True)
class FirmwareKind:
    """How QEMU runs one kind of machine firmware."""

    title: str
    qemu: str
    """The QEMU binary."""
    nic: str
    """The network card, ``{mac}`` filled in; ``romfile=`` leaves the firmware's own client."""
    package: str
    """The Debian package of the firmware files."""
    machine: tuple[str, ...] = ()
    """Machine type and CPU arguments."""
    roms: tuple[str, ...] = ()
    """Files of which one must exist (the NIC's option ROM QEMU loads by itself)."""
    pflash: tuple[tuple[str, str], ...] = ()
    """(code, vars) flash image pairs, the first present is used; vars is copied per machine."""
    extra: tuple[str, ...] = ()
    client_arch: int = 0
    """What the firmware sends as DHCP option 93 (RFC 4578 / IANA processor architecture)."""


# QEMU's e1000 option ROM (an iPXE build), which SeaBIOS runs to PXE-boot.
_BIOS_ROMS = (
    "/usr/lib/ipxe/qemu/efi-e1000.rom",
    "/usr/lib/ipxe/qemu/pxe-e1000.rom",
    "/usr/share/qemu/efi-e1000.rom",
    "/usr/share/qemu/pxe-e1000.rom",
)
# OVMF (code, vars) pairs: Debian, Fedora, Arch layouts.
_OVMF = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"),
)
_SECURE_FLASH = "driver=cfi.pflash01,property=secure,value=on"
_OWN_CLIENT = "virtio-net-pci,netdev=n0,mac={mac},romfile="

KINDS: dict[Firmware, FirmwareKind] = {
    Firmware.BIOS: FirmwareKind(
        "SeaBIOS -> iPXE ROM", "qemu-system-x86_64", "e1000,netdev=n0,mac={mac}",
        "ipxe-qemu", roms=_BIOS_ROMS,
    ),
    Firmware.UEFI: FirmwareKind(
        "OVMF (EDK2 PXE)", "qemu-system-x86_64", _OWN_CLIENT, "ovmf", pflash=_OVMF,
        client_arch=7,
    ),
    # PXE off, so that OVMF's HTTP boot client runs (it asks with "HTTPClient", arch 16).
    Firmware.UEFI_HTTP: FirmwareKind(
        "OVMF (EDK2 HTTP boot)", "qemu-system-x86_64", _OWN_CLIENT, "ovmf", pflash=_OVMF,
        extra=("-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no",
               "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no"),
        client_arch=16,
    ),
    # Secure Boot with Microsoft's keys enrolled: q35 with SMM, the secure flash.
    Firmware.UEFI_SECURE: FirmwareKind(
        "OVMF Secure Boot (EDK2 PXE)", "qemu-system-x86_64", _OWN_CLIENT, "ovmf",
        machine=("-machine", "q35,smm=on", "-global", _SECURE_FLASH),
        pflash=(("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
                 "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"),),
        client_arch=7,
    ),
    Firmware.ARM64: FirmwareKind(
        "AAVMF (EDK2 PXE, aarch64)", "qemu-system-aarch64", _OWN_CLIENT, "qemu-efi-aarch64",
        machine=("-machine", "virt", "-cpu", "cortex-a57"),
        pflash=(("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"),),
        client_arch=11,
    ),
}  # fmt: skip
"""Every firmware kind the lab boots (a new kind is one entry)."""


@dataclass(frozen=True, slots=True)
class Machine:
    """One virtual machine that boots from the network."""

    name: str
    mac: str
    firmware: Firmware
    memory_mb: int = 512

    @property
    def kind(self) -> FirmwareKind:
        return KINDS[self.firmware]


def find_pflash(kind: FirmwareKind) -> tuple[Path, Path] | None:
    for code, vars_ in kind.pflash:
        if Path(code).is_file() and Path(vars_).is_file():
            return Path(code), Path(vars_)
    return None


def missing_requirements(
    firmware: Sequence[Firmware] = (Firmware.BIOS, Firmware.UEFI),
) -> list[str]:
    """Debian packages this host lacks to boot machines of these kinds (empty: all there)."""
    missing: list[str] = []

    def lack(package: str) -> None:
        if package not in missing:
            missing.append(package)

    if shutil.which("ip") is None:
        lack(PACKAGES["ip"])
    for fw in firmware:
        kind = KINDS[fw]
        if shutil.which(kind.qemu) is None:
            lack(PACKAGES.get(kind.qemu, kind.qemu))
        if kind.roms and not any(Path(p).is_file() for p in kind.roms):
            lack(kind.package)
        if kind.pflash and find_pflash(kind) is None:
            lack(kind.package)
    return missing


def qemu_command(
    machine: Machine,
    tap: str,
    serial: Path,
    workdir: Path,
    *,
    pflash: tuple[Path, Path] | None = None,
) -> list[str]:
    """The QEMU command line for one machine on an existing tap device.

    BIOS: QEMU's default e1000 option ROM is iPXE, so the machine asks as iPXE from its first
    DHCPDISCOVER. UEFI kinds: virtio-net-pci with ``romfile=`` (no option ROM), so that the
    firmware's own EDK2 network client runs, as on real UEFI machines; the VARS file is
    copied per machine (the firmware writes its boot entries into it).
    """
    kind = machine.kind
    cmd = [
        kind.qemu,
        "-accel", "tcg",
        *kind.machine,
        "-name", machine.name,
        "-m", str(machine.memory_mb),
        "-display", "none",
        "-monitor", "none",
        "-no-reboot",
        "-boot", "n",
        "-serial", f"file:{serial}",
        "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
    ]  # fmt: skip
    if kind.pflash:
        pair = pflash or find_pflash(kind)
        if pair is None:
            raise FileNotFoundError(
                f"{kind.title} firmware not found: apt-get install {kind.package}"
            )
        code, vars_template = pair
        vars_copy = workdir / f"{machine.name}-VARS.fd"
        shutil.copyfile(vars_template, vars_copy)
        cmd += [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
        ]  # fmt: skip
    cmd += ["-device", kind.nic.format(mac=machine.mac), *kind.extra]
    return cmd


# ---------------------------------------------------------------------------------------------
# The serial console

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


