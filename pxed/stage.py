"""`pxed stage DIR`: make a TFTP root that pxed's defaults boot from.

The seed tutorial's manual steps, automated: copy the BIOS boot loader (`pxelinux.0`,
`ldlinux.c32` and the menu modules) and iPXE (`undionly.kpxe`, `ipxe.efi`) from wherever this
distribution installs them, put netboot.xyz in place (downloaded, or from a local file on an
offline host), and write `pxelinux.cfg/default` and `boot.ipxe`. pxed's defaults
(`[tftp] root = /srv/tftp`, `[boot] bios = pxelinux.0`, `uefi_x64 = ipxe.efi`,
`ipxe = boot.ipxe`) name exactly these files.

Files pxed stage wrote are recorded with their SHA-256 in `.pxed-stage.json` in the root, so
that a later run updates what it wrote before but never overwrites a file someone edited (or
put there by hand) unless told to with `--force`.

The deciding parts (where a source is, what to do with each file, the menu and the script)
are plain functions; `run()` does the I/O and `main()` is the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import IO

from pxed import chain

DEFAULT_ROOT = Path("/srv/tftp")
NETBOOT_XYZ_URL = "https://boot.netboot.xyz/ipxe/"
"""Where netboot.xyz publishes its iPXE builds (netboot.xyz.lkrn, netboot.xyz.efi)."""
MANIFEST = ".pxed-stage.json"
MENU_PATH = "pxelinux.cfg/default"
SCRIPT_PATH = "boot.ipxe"
NETBOOT_BIOS = "netboot.xyz.lkrn"
NETBOOT_EFI = "netboot.xyz.efi"
KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initrd.img"

# Where distributions install the files (searched in this order; `dpkg-query -L` after them).
PXELINUX_DIRS = (
    "/usr/lib/PXELINUX",  # Debian, Ubuntu (package pxelinux)
    "/usr/share/syslinux",  # Fedora, RHEL, openSUSE
    "/usr/lib/syslinux/bios",  # Arch
    "/usr/lib/syslinux",  # older Debian and Ubuntu
)
SYSLINUX_BIOS_DIRS = (
    "/usr/lib/syslinux/modules/bios",  # Debian, Ubuntu (package syslinux-common)
    "/usr/share/syslinux",  # Fedora, RHEL, openSUSE
    "/usr/lib/syslinux/bios",  # Arch
    "/usr/lib/syslinux",
)
DEBIAN_INSTALLER_DIRS = (
    # Debian's debian-installer-12-netboot-amd64 (the netboot images, also in netboot.tar.gz)
    "/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64",
)
DI_KERNEL = "debian-installer/amd64/linux"
DI_INITRD = "debian-installer/amd64/initrd.gz"
SHIM_DIRS = ("/usr/lib/shim",)  # Debian, Ubuntu (package shim-signed)
GRUB_SIGNED_DIRS = ("/usr/lib/grub/x86_64-efi-signed",)  # Debian, Ubuntu (grub-efi-amd64-signed)
GRUB_ARM64_SIGNED_DIRS = ("/usr/lib/grub/arm64-efi-signed",)  # grub-efi-arm64-signed (arm64)
ARCHES = ("x64", "arm64")
"""What --arch names: x64 (BIOS and UEFI x86-64 PCs, always staged) and arm64."""
IPXE_DIRS = (
    "/usr/lib/ipxe",  # Debian, Ubuntu (package ipxe)
    "/usr/share/ipxe",  # Fedora (ipxe-bootimgs-x86), Arch
    "/boot",  # Debian also installs ipxe.efi here
)


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A file copied into the root from a distribution package."""

    dest: str
    """Path under the root."""
    names: tuple[str, ...]
    """File names to look for, best first (Fedora calls ipxe.efi ipxe-x86_64.efi)."""
    dirs: tuple[str, ...]
    package: str
    """The Debian package that provides it (named when it is missing)."""
    required: bool
    purpose: str


SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec("pxelinux.0", ("pxelinux.0",), PXELINUX_DIRS, "pxelinux", True,
               "BIOS boot loader, the [boot] bios default"),
    SourceSpec("ldlinux.c32", ("ldlinux.c32",), SYSLINUX_BIOS_DIRS, "syslinux-common", True,
               "loaded by pxelinux.0"),
    SourceSpec("menu.c32", ("menu.c32",), SYSLINUX_BIOS_DIRS, "syslinux-common", False,
               "pxelinux menu (a plain boot: prompt without it)"),
    SourceSpec("libutil.c32", ("libutil.c32",), SYSLINUX_BIOS_DIRS, "syslinux-common", False,
               "needed by menu.c32"),
    SourceSpec("undionly.kpxe", ("undionly.kpxe",), IPXE_DIRS, "ipxe", False,
               "iPXE for BIOS machines (set [boot] bios to it to chainload iPXE)"),
    SourceSpec("ipxe.efi", ("ipxe.efi", "ipxe-x86_64.efi", "ipxe-x64.efi"), IPXE_DIRS, "ipxe",
               False, "iPXE for UEFI x86-64 machines, the [boot] uefi_x64 default"),
    SourceSpec(DI_KERNEL, ("linux",), DEBIAN_INSTALLER_DIRS, "debian-installer-12-netboot-amd64",
               False, "Debian 12 installer kernel (profile debian-install)"),
    SourceSpec(DI_INITRD, ("initrd.gz",), DEBIAN_INSTALLER_DIRS,
               "debian-installer-12-netboot-amd64", False,
               "Debian 12 installer initrd (profile debian-install)"),
)


SECURE_BOOT_SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec(chain.SHIM, ("shimx64.efi.signed",), SHIM_DIRS, "shim-signed", True,
               "shim, signed by Microsoft's UEFI CA: the [boot] uefi_x64 default with grub"),
    SourceSpec(chain.GRUB, ("grubnetx64.efi.signed",), GRUB_SIGNED_DIRS,
               "grub-efi-amd64-signed", True,
               "GRUB's signed network image (loaded by shim; reads grub/grub.cfg)"),
)  # fmt: skip
"""Staged with --secure-boot: Debian's signed chain (shim -> GRUB -> Debian's signed kernel)."""

ARM64_SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec(chain.SHIM_ARM64, ("shimaa64.efi.signed",), SHIM_DIRS, "shim-signed:arm64",
               True, "arm64 shim: the [boot] uefi_arm64 default with grub"),
    SourceSpec(chain.GRUB_ARM64, ("grubnetaa64.efi.signed",), GRUB_ARM64_SIGNED_DIRS,
               "grub-efi-arm64-signed:arm64", True,
               "GRUB's signed arm64 network image (loaded by shim; reads grub/grub.cfg)"),
)  # fmt: skip
"""Staged with --arch arm64: the same chain for arm64 UEFI machines (arch 11 and 19), from
Debian's arm64 packages (a foreign architecture on a PC: dpkg --add-architecture arm64)."""


class Action(Enum):
    """What staging does with one file of the root."""

    NEW = "new"
    """Not in the root yet: copy, write or download it."""
    UPDATE = "update"
    """In the root, written by an earlier pxed stage (or --force): replace it."""
    SAME = "unchanged"
    """Already has exactly this content."""
    KEEP = "kept"
    """A download target that is present already: not downloaded again (--force does)."""
    CONFLICT = "conflict"
    """Edited since pxed stage wrote it, or not written by pxed stage: refused without --force."""
    MISSING = "missing"
    """An optional source that this host does not have."""


@dataclass(frozen=True, slots=True)
class KernelEntry:
    """A Linux kernel (and initrd) staged beside netboot.xyz and booted by default."""

    kernel: Path
    initrd: Path | None = None
    append: str = ""
    """Kernel command line (console=ttyS0 for a serial console)."""
    label: str = "Boot Linux"


@dataclass(frozen=True, slots=True)
class StageOptions:
    root: Path = DEFAULT_ROOT
    netboot_xyz: tuple[Path, ...] = ()
    """Local netboot.xyz files (or a directory holding them); no download when given."""
    netboot_xyz_url: str | None = NETBOOT_XYZ_URL
    """Base URL to download netboot.xyz.lkrn and netboot.xyz.efi from; None: no netboot.xyz."""
    kernel: KernelEntry | None = None
    serial: bool = False
    """`SERIAL 0 115200` in the pxelinux menu (the menu on COM1 as well as the screen)."""
    menu_timeout: int = 50
    """Tenths of a second before the menu boots its default entry."""
    search_dirs: tuple[Path, ...] = ()
    """Searched before the distributions' directories."""
    force: bool = False
    dry_run: bool = False
    profiles: Path | None = None
    """Also write the starting ``[[profile]]`` set here (for pxed.toml; not in the root)."""
    secure_boot: bool = False
    """Also stage Debian's signed chain (shim, GRUB, grub/grub.cfg) for Secure Boot PCs."""
    arm64: bool = False
    """Also stage the arm64 chain (shimaa64.efi, grubaa64.efi, grub/grub.cfg)."""
    fetched: frozenset[str] = frozenset()
    """Packages fetched with apt-get download for this run (unpacked in a search dir)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One file of the root and what staging does with it."""

    dest: str
    action: Action
    source: Path | None = None
    """Local file copied in (None for written and downloaded files)."""
    url: str | None = None
    content: bytes | None = None
    """Generated content (menu, script)."""
    digest: str | None = None
    """SHA-256 of the new content when known before writing (not for downloads)."""
    note: str = ""
    package: str | None = None
    origin: str | None = None
    """Where ``source`` came from, when its path says nothing lasting (a temporary unpack)."""


@dataclass
class Report:
    """What `run()` did (or, with dry_run, would do), line by line."""

    root: Path
    steps: list[Step] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    profiles: Path | None = None
    """Where the starting profile set was written."""

    @property
    def ok(self) -> bool:
        return not self.errors


class StageError(Exception):
    """Staging cannot go on; carries every problem found, one per line."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


# ---------------------------------------------------------------------------------------------
# Pure parts


def decide(existing: str | None, new: str | None, recorded: str | None, force: bool) -> Action:
    """What to do with one file, from SHA-256 digests.

    existing: the file in the root now (None: absent); new: what staging would put there
    (None: not known before downloading); recorded: what pxed stage wrote last time.
    """
    if existing is None:
        return Action.NEW
    if new is None:
        return Action.UPDATE if force else Action.KEEP
    if existing == new:
        return Action.SAME
    if force or (recorded is not None and existing == recorded):
        return Action.UPDATE
    return Action.CONFLICT


def find_source(
    spec: SourceSpec,
    exists: Callable[[Path], bool],
    extra_dirs: Sequence[Path] = (),
    package_files: Callable[[str], Sequence[str]] | None = None,
) -> Path | None:
    """Where this host has the file: extra dirs, then the known directories, then the package.

    package_files(package) lists a package's files (`dpkg-query -L`), for layouts not known
    here; among its matches, BIOS modules are preferred over EFI ones of the same name.
    """
    dirs = [*extra_dirs, *(Path(d) for d in spec.dirs)]
    for name in spec.names:
        for d in dirs:
            candidate = d / name
            if exists(candidate):
                return candidate
    if package_files is not None:
        listed = [Path(p) for p in package_files(spec.package)]
        for name in spec.names:
            matches = [p for p in listed if p.name == name and exists(p)]
            matches.sort(key=lambda p: ("efi" in str(p.parent).lower(), len(str(p))))
            if matches:
                return matches[0]
    return None


@dataclass(frozen=True, slots=True)
class BootMenu:
    """What the menu and the iPXE script offer (derived from what the root will hold)."""

    netboot_bios: bool = False
    """netboot.xyz.lkrn is in the root."""
    netboot_efi: bool = False
    """netboot.xyz.efi is in the root."""
    kernel: str | None = None
    """Kernel file name under the root."""
    initrd: str | None = None
    append: str = ""
    kernel_label: str = "Boot Linux"
    ui_menu: bool = True
    """menu.c32 (and libutil.c32) are in the root."""
    serial: bool = False
    timeout: int = 50
    arm64: bool = False
    """grub/grub.cfg is read by arm64 GRUB too: x86 entries only where $grub_cpu is x86_64."""


HEADER = "Written by pxed stage. Edit freely: pxed stage will not overwrite edits without --force."


def render_pxelinux_menu(menu: BootMenu) -> str:
    """pxelinux.cfg/default: a menu whose default is the kernel if any, else netboot.xyz."""
    lines = [f"# {HEADER}"]
    if menu.serial:
        lines.append("SERIAL 0 115200")
    if menu.ui_menu:
        lines += ["UI menu.c32", "MENU TITLE pxed network boot"]
    else:
        lines.append("PROMPT 1")
    default = "linux" if menu.kernel else ("netbootxyz" if menu.netboot_bios else "local")
    lines += [f"TIMEOUT {menu.timeout}", f"DEFAULT {default}", ""]
    if menu.kernel:
        lines += ["LABEL linux", f"  MENU LABEL {menu.kernel_label}", f"  KERNEL {menu.kernel}"]
        if menu.initrd:
            lines.append(f"  INITRD {menu.initrd}")
        if menu.append:
            lines.append(f"  APPEND {menu.append}")
        lines.append("")
    if menu.netboot_bios:
        lines += ["LABEL netbootxyz", "  MENU LABEL Boot netboot.xyz", f"  KERNEL {NETBOOT_BIOS}",
                  ""]
    lines += ["LABEL local", "  MENU LABEL Boot from local disk", "  LOCALBOOT 0", ""]
    return "\n".join(lines)


def render_boot_ipxe(menu: BootMenu) -> str:
    """boot.ipxe: what iPXE clients (user class "iPXE") run. Relative names load from where
    the script came from: over HTTP when pxed serves it there ([http] listen), else TFTP."""
    lines = ["#!ipxe", f"# {HEADER}", "echo pxed: iPXE on ${platform}, ${netX/mac} is ${netX/ip}"]
    if menu.kernel:
        args = menu.append
        if menu.initrd:
            # EFI-stub kernels loaded by iPXE find their initrd through initrd= on the line.
            args = f"initrd={menu.initrd} {args}".strip()
        lines.append(f"kernel {menu.kernel} {args}".rstrip())
        if menu.initrd:
            lines.append(f"initrd {menu.initrd}")
        lines += ["boot", ""]
        return "\n".join(lines)
    if menu.netboot_efi:
        lines.append(f"iseq ${{platform}} efi && chain --autofree {NETBOOT_EFI} ||")
    if menu.netboot_bios:
        lines.append(f"iseq ${{platform}} pcbios && chain --autofree {NETBOOT_BIOS} ||")
    lines += ["echo pxed: nothing staged for ${platform} (see pxed stage --help)", "exit 1", ""]
    return "\n".join(lines)


def render_grub_cfg(menu: BootMenu) -> str:
    """grub/grub.cfg: what the signed network GRUB shows (Secure Boot PCs, through shim).

    A machine with a profile gets its own menu first: pxed renders
    grub/grub.cfg-01-<mac> for it (the name GRUB's own network lookup uses); Debian's
    image only sources grub.cfg, so this file asks for that name itself. Names without a
    device load from the server GRUB came from."""
    lines = [
        f"# {HEADER}",
        f"set timeout={max(0, menu.timeout // 10)}",
        "# This machine's own menu when pxed renders one (a [[profile]] for it).",
        "regexp --set=1:m1 --set=2:m2 --set=3:m3 --set=4:m4 --set=5:m5 --set=6:m6 "
        "'^(..):(..):(..):(..):(..):(..)$' \"$net_default_mac\"",
        # Not `[ -e ... ]`: GRUB answers that from a directory listing, which TFTP has not;
        # configfile of a name the server does not have fails, and the menu below follows.
        'configfile "$prefix/grub.cfg-01-$m1-$m2-$m3-$m4-$m5-$m6"',
        "",
        f"set default={'linux' if menu.kernel and not menu.arm64 else 'local'}",
    ]
    if menu.arm64:
        # One file for both GRUBs (the same built-in prefix): x86 kernels are not for arm64.
        lines += ['if [ "$grub_cpu" = "x86_64" ]; then',
                  f"  set default={'linux' if menu.kernel else 'local'}"]  # fmt: skip
    if menu.kernel:
        lines += [f'menuentry "{menu.kernel_label}" --id linux {{',
                  f"  linux /{menu.kernel} {menu.append}".rstrip()]  # fmt: skip
        if menu.initrd:
            lines.append(f"  initrd /{menu.initrd}")
        lines.append("}")
    if menu.netboot_efi:
        # netboot.xyz's EFI build is not signed: firmware with Secure Boot on refuses it.
        lines += ['menuentry "Boot netboot.xyz (Secure Boot off)" --id netbootxyz {',
                  f"  chainloader /{NETBOOT_EFI}", "}"]  # fmt: skip
    if menu.arm64:
        lines.append("fi")
    lines += ['menuentry "Boot from local disk" --id local {', "  exit", "}", ""]
    return "\n".join(lines)


def render_profiles(netboot_bios: bool, debian_installer: bool) -> str:
    """A starting set of ``[[profile]]`` tables for what the root holds, for pxed.toml."""
    lines = [
        f"# {HEADER}",
        "# Profiles for what pxed stage put in the root; add them to pxed.toml and give a",
        "# machine one with [[dhcp.host]] profile = NAME, a match, or",
        "# pxed host MAC --next NAME (once, then the local disk). Built in: profile local.",
        "",
    ]
    if debian_installer:
        lines += [
            "[[profile]]",
            'name = "debian-install"',
            f'kernel = "{DI_KERNEL}"',
            f'initrd = ["{DI_INITRD}"]',
            "# The installer fetches its preseed (pxed/<mac>/preseed.cfg, rendered for the",
            "# machine) and asks nothing it answers; templates = { preseed = FILE } for yours.",
            'cmdline = "auto=true priority=critical url={{ preseed_url }} '
            'hostname={{ hostname }} domain={{ domain }} ---"',
            'vars = { domain = "lan", mirror = "deb.debian.org" }',
            "",
        ]
    if netboot_bios:
        lines += [
            "[[profile]]",
            'name = "netboot-xyz"',
            f'kernel = "{NETBOOT_BIOS}"   # BIOS machines: an iPXE image booted as a kernel',
            "",
        ]
    return "\n".join(lines)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str | None:
    """Digest of a regular file, None when there is none."""
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def netboot_files(given: Iterable[Path]) -> dict[str, Path]:
    """Map local netboot.xyz files (or directories holding them) onto their names in the root.

    A file ending in .efi is the UEFI build; any other file the BIOS (.lkrn) build.
    """
    out: dict[str, Path] = {}
    for path in given:
        if path.is_dir():
            for name in (NETBOOT_BIOS, NETBOOT_EFI):
                if (path / name).is_file():
                    out[name] = path / name
        elif path.suffix.lower() == ".efi":
            out[NETBOOT_EFI] = path
        else:
            out[NETBOOT_BIOS] = path
    return out


# ---------------------------------------------------------------------------------------------
# Planning (reads the host and the root, writes nothing)


def load_manifest(root: Path) -> dict[str, str]:
    """dest -> SHA-256 of what pxed stage last wrote there."""
    try:
        data = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    files = data.get("files", {}) if isinstance(data, dict) else {}
    out: dict[str, str] = {}
    if isinstance(files, dict):
        for dest, entry in files.items():
            if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
                out[str(dest)] = entry["sha256"]
    return out


def dpkg_files(package: str) -> list[str]:
    """Files of an installed Debian package (empty when dpkg is absent or it is not installed)."""
    if shutil.which("dpkg-query") is None:
        return []
    try:
        res = subprocess.run(
            ["dpkg-query", "-L", package], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return res.stdout.splitlines() if res.returncode == 0 else []


def is_arm64_kernel(path: Path) -> bool:
    """An arm64 Linux Image (its header's magic "ARM\\x64" at byte 56)."""
    try:
        with path.open("rb") as f:
            f.seek(56)
            return f.read(4) == b"ARM\x64"
    except OSError:
        return False


def extra_sources(opts: StageOptions) -> list[SourceSpec]:
    """The signed chains these options add to the BIOS and x64 loaders."""
    return [*(SECURE_BOOT_SOURCES if opts.secure_boot else ()),
            *(ARM64_SOURCES if opts.arm64 else ())]  # fmt: skip


def plan(
    opts: StageOptions,
    package_files: Callable[[str], Sequence[str]] | None = dpkg_files,
    sources: Sequence[SourceSpec] = SOURCES,
) -> tuple[list[Step], list[str]]:
    """Every file of the root with its action, and the problems that stop staging."""
    root = opts.root
    recorded = load_manifest(root)
    steps: list[Step] = []
    problems: list[str] = []

    def local(dest: str, source: Path, note: str = "", package: str | None = None) -> Step:
        new = sha256_file(source)
        existing = sha256_file(root / dest)
        action = decide(existing, new, recorded.get(dest), opts.force)
        return Step(dest, action, source=source, digest=new, note=note, package=package)

    wanted = [*sources, *extra_sources(opts)]
    for spec in wanted:
        src = find_source(spec, Path.is_file, opts.search_dirs, package_files)
        if src is None:
            hint = f"apt-get install {spec.package}"
            if spec.required:
                looked = ", ".join([*(str(d) for d in opts.search_dirs), *spec.dirs])
                problems.append(
                    f"{spec.dest}: not found on this host (looked in {looked}); it is in the "
                    f"Debian package {spec.package}: {hint}"
                )
            steps.append(Step(spec.dest, Action.MISSING, note=f"{spec.purpose}; {hint}",
                              package=spec.package))
            continue
        step = local(spec.dest, src, spec.purpose, spec.package)
        if spec.package in opts.fetched:
            step = replace(step, origin=f"package {spec.package} (apt-get download)")
        steps.append(step)

    # netboot.xyz: local files when given (offline hosts), else a download.
    if opts.netboot_xyz:
        given = netboot_files(opts.netboot_xyz)
        for path in opts.netboot_xyz:
            if not path.exists():
                problems.append(f"--netboot-xyz {path}: no such file or directory")
        if not given and all(p.exists() for p in opts.netboot_xyz):
            problems.append(
                f"--netboot-xyz: no {NETBOOT_BIOS} or {NETBOOT_EFI} in "
                + ", ".join(str(p) for p in opts.netboot_xyz)
            )
        for name, path in given.items():
            if path.is_file():
                steps.append(local(name, path, "netboot.xyz (local file)"))
    elif opts.netboot_xyz_url:
        base = opts.netboot_xyz_url if opts.netboot_xyz_url.endswith("/") else (
            opts.netboot_xyz_url + "/")
        for name in (NETBOOT_BIOS, NETBOOT_EFI):
            existing = sha256_file(root / name)
            action = decide(existing, None, recorded.get(name), opts.force)
            steps.append(Step(name, action, url=base + name, note="netboot.xyz"))

    if opts.kernel is not None:
        k = opts.kernel
        if not k.kernel.is_file():
            problems.append(f"--kernel {k.kernel}: no such file")
        elif is_arm64_kernel(k.kernel):
            problems.append(f"--kernel {k.kernel}: an arm64 kernel, and the menus' kernel "
                            "entry is for x86 PCs; copy it into the root (arm64/vmlinuz) and "
                            "name it in a [[profile]] for the arm64 machines")  # fmt: skip
        else:
            steps.append(local(KERNEL_NAME, k.kernel, "Linux kernel"))
        if k.initrd is not None:
            if not k.initrd.is_file():
                problems.append(f"--initrd {k.initrd}: no such file")
            else:
                steps.append(local(INITRD_NAME, k.initrd, "initrd"))

    # The menu and the script offer what the root will hold after staging.
    def present(dest: str) -> bool:
        for s in steps:
            if s.dest == dest:
                return s.action is not Action.MISSING
        return (root / dest).is_file()

    menu = BootMenu(
        netboot_bios=present(NETBOOT_BIOS),
        netboot_efi=present(NETBOOT_EFI),
        kernel=KERNEL_NAME if opts.kernel is not None else None,
        initrd=INITRD_NAME if opts.kernel is not None and opts.kernel.initrd else None,
        append=opts.kernel.append if opts.kernel is not None else "",
        kernel_label=opts.kernel.label if opts.kernel is not None else "Boot Linux",
        ui_menu=present("menu.c32") and present("libutil.c32"),
        serial=opts.serial,
        timeout=opts.menu_timeout,
        arm64=opts.arm64,
    )
    written = [
        (MENU_PATH, render_pxelinux_menu(menu), "pxelinux menu"),
        (SCRIPT_PATH, render_boot_ipxe(menu), "iPXE script"),
    ]
    if opts.secure_boot or opts.arm64:
        written.append((chain.GRUB_CFG, render_grub_cfg(menu), "GRUB menu (signed chain)"))
    for dest, text, what in written:
        data = text.encode()
        new = sha256_bytes(data)
        action = decide(sha256_file(root / dest), new, recorded.get(dest), opts.force)
        steps.append(Step(dest, action, content=data, digest=new, note=what))

    for s in steps:
        if s.action is Action.CONFLICT:
            why = ("edited since pxed stage wrote it" if s.dest in recorded
                   else "not written by pxed stage")
            problems.append(
                f"{root / s.dest}: {why}; not overwritten (pass --force to replace it)"
            )
    if root.exists() and not root.is_dir():
        problems.append(f"{root}: exists and is not a directory")
    if opts.profiles is not None:
        where = opts.profiles.resolve()
        if where.is_relative_to(root.resolve()):
            # Everything under the root is served to anyone who asks; profiles' vars may
            # hold what an install needs (a password hash).
            problems.append(f"--profiles {opts.profiles}: under the root, which is served; "
                            "put it beside pxed.toml")  # fmt: skip
        elif where.exists() and not opts.force:
            problems.append(f"--profiles {opts.profiles}: exists; not overwritten "
                            "(pass --force to replace it)")  # fmt: skip
    return steps, problems


def profiles_text(steps: Sequence[Step], root: Path) -> str:
    """The starting profile set for what the root holds after ``steps``."""

    def present(dest: str) -> bool:
        for s in steps:
            if s.dest == dest:
                return s.action is not Action.MISSING
        return (root / dest).is_file()

    return render_profiles(present(NETBOOT_BIOS), present(DI_KERNEL) and present(DI_INITRD))


# ---------------------------------------------------------------------------------------------
# Doing it


def human_size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    if n < 1_000_000:
        return f"{n / 1000:.1f} kB"
    return f"{n / 1_000_000:.1f} MB"


class Progress:
    """A one-line progress bar on a terminal; a single line at the end otherwise."""

    def __init__(self, name: str, total: int | None, stream: IO[str], width: int = 30) -> None:
        self.name = name
        self.total = total
        self.stream = stream
        self.width = width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last = -1

    def line(self, done: int) -> str:
        if self.total:
            frac = min(1.0, done / self.total)
            filled = int(frac * self.width)
            bar = "=" * filled + (">" if filled < self.width else "") + " " * (
                self.width - filled - 1)
            return (f"  {self.name:<18} [{bar[: self.width]}] {frac * 100:3.0f}%  "
                    f"{human_size(done)} / {human_size(self.total)}")
        return f"  {self.name:<18} {human_size(done)}"

    def update(self, done: int) -> None:
        if not self.tty:
            return
        step = done * 100 // self.total if self.total else done >> 16
        if step != self._last:
            self._last = step
            self.stream.write("\r" + self.line(done))
            self.stream.flush()

    def finish(self, done: int) -> None:
        if self.tty:
            self.stream.write("\r" + self.line(done) + "\n")
            self.stream.flush()


def download(url: str, dest: Path, name: str, stream: IO[str], timeout: float = 30.0) -> int:
    """Fetch url into dest whole (removed again on any failure); returns its size."""
    req = urllib.request.Request(url, headers={"User-Agent": "pxed-stage"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp, dest.open("wb") as out:
            length = resp.headers.get("Content-Length") if resp.headers is not None else None
            total = int(length) if length and str(length).isdigit() else None
            bar = Progress(name, total, stream)
            done = 0
            while True:
                chunk = resp.read(1 << 16)
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                bar.update(done)
            bar.finish(done)
        if total is not None and done != total:
            raise OSError(f"short download: {done} of {total} bytes")
        return done
    except BaseException:
        with contextlib.suppress(OSError):
            dest.unlink()
        raise


def _write_atomic(dest: Path, data: bytes | None, source: Path | None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            if data is not None:
                out.write(data)
            elif source is not None:
                with source.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _save_manifest(root: Path, entries: Mapping[str, dict[str, str]]) -> None:
    data = {"written_by": "pxed stage", "version": 1, "files": dict(sorted(entries.items()))}
    _write_atomic(root / MANIFEST, (json.dumps(data, indent=1) + "\n").encode(), None)


VERB = {
    Action.NEW: "added",
    Action.UPDATE: "updated",
    Action.SAME: "unchanged",
    Action.KEEP: "kept",
    Action.CONFLICT: "refused",
    Action.MISSING: "missing",
}


def describe(step: Step, root: Path, size: int | None = None, dry_run: bool = False) -> str:
    """One line per file: what happened (or would), how big, from where."""
    verb = VERB[step.action]
    if dry_run and step.action in (Action.NEW, Action.UPDATE):
        verb = "would add" if step.action is Action.NEW else "would update"
    if step.action in (Action.NEW, Action.UPDATE) and step.url and not dry_run:
        verb = "downloaded"
    size_text = human_size(size) if size is not None else ""
    if step.origin is not None:
        origin = f"from {step.origin}"
    elif step.source is not None:
        origin = f"from {step.source}"
    elif step.url is not None:
        origin = f"from {step.url}"
        if step.action is Action.KEEP:
            origin = "present already, not downloaded again (--force downloads it)"
    elif step.content is not None:
        origin = f"({step.note})"
    else:
        origin = ""
    if step.action is Action.MISSING:
        origin = f"optional, not on this host: {step.note}"
    return f"  {verb:<12} {step.dest:<22} {size_text:>9}  {origin}".rstrip()


def unpack_packages(packages: Sequence[str], dest: Path, stream: IO[str]) -> None:
    """``apt-get download`` each package into ``dest`` and unpack it there (dpkg-deb -x):
    its files, never installed (a signed shim or GRUB installed on this host would go into
    its own boot loader). Raises StageError naming what failed."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise StageError([f"{tool} not found: cannot fetch {', '.join(packages)}; put the "
                              "files in a directory and pass --search-dir DIR"])  # fmt: skip
    debs = dest / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for package in packages:
        stream.write(f"  fetching {package} (apt-get download; not installed)\n")
        stream.flush()
        try:
            res = subprocess.run(["apt-get", "download", package], cwd=debs,
                                 capture_output=True, text=True, timeout=600)  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            raise StageError([f"apt-get download {package}: {exc}"]) from exc
        name, _, arch = package.partition(":")
        found = sorted(debs.glob(f"{name}_*.deb"))
        if res.returncode != 0 or not found:
            why = res.stderr.strip().splitlines()[-1:] or ["no .deb written"]
            lines = [f"apt-get download {package} failed: {why[0]}"]
            if arch:
                lines.append(f"a foreign architecture: dpkg --add-architecture {arch} && "
                             "apt-get update, then stage again")  # fmt: skip
            raise StageError([*lines,
                              "offline? put its files in a directory and pass --search-dir DIR"])
        unpack = subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(dest)],
                                capture_output=True, text=True, timeout=600)  # fmt: skip
        if unpack.returncode != 0:
            raise StageError([f"dpkg-deb -x {found[-1].name}: {unpack.stderr.strip()}"])


def _fetched(opts: StageOptions, package_files: Callable[[str], Sequence[str]] | None,
             tmp: Path, stream: IO[str]) -> StageOptions:  # fmt: skip
    """``opts`` with the signed chains' packages unpacked under ``tmp`` and searched, when
    --secure-boot or --arch arm64 asks for files this host does not have."""
    missing = [spec for spec in extra_sources(opts)
               if find_source(spec, Path.is_file, opts.search_dirs, package_files) is None]
    if not missing:
        return opts
    packages = sorted({spec.package for spec in missing})
    unpack_packages(packages, tmp, stream)
    dirs = tuple(tmp / d.lstrip("/") for spec in missing for d in spec.dirs)
    return replace(opts, search_dirs=(*opts.search_dirs, *dirs),
                   fetched=opts.fetched | frozenset(packages))  # fmt: skip


def run(
    opts: StageOptions,
    out: IO[str] | None = None,
    package_files: Callable[[str], Sequence[str]] | None = dpkg_files,
    sources: Sequence[SourceSpec] = SOURCES,
) -> Report:
    """Stage the root; raises StageError (nothing written) when a source or a file is in the way.

    Downloads happen first, so that an offline host fails before anything changes.
    """
    stream = out if out is not None else sys.stdout
    with tempfile.TemporaryDirectory(prefix="pxed-stage-") as tmp:
        return _run(_fetched(opts, package_files, Path(tmp), stream), stream, package_files,
                    sources)  # fmt: skip


def _run(
    opts: StageOptions,
    stream: IO[str],
    package_files: Callable[[str], Sequence[str]] | None,
    sources: Sequence[SourceSpec],
) -> Report:
    steps, problems = plan(opts, package_files, sources)
    report = Report(opts.root, steps)
    if problems:
        raise StageError(problems)
    root = opts.root
    if opts.dry_run:
        for s in steps:
            size = s.source.stat().st_size if s.source is not None else (
                len(s.content) if s.content is not None else None)
            report.done.append(describe(s, root, size, dry_run=True))
        return report

    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, str]] = {}
    try:
        old = json.loads((root / MANIFEST).read_text()).get("files", {})
        if isinstance(old, dict):
            entries = {k: v for k, v in old.items() if isinstance(v, dict)}
    except (OSError, ValueError, AttributeError):
        entries = {}

    # Downloads first, into .part files: an offline host fails before anything changes.
    sizes: dict[str, int] = {}
    parts: dict[str, Path] = {}
    for s in steps:
        if s.url is None or s.action not in (Action.NEW, Action.UPDATE):
            continue
        part = root / f"{s.dest}.part"
        stream.write(f"  downloading {s.url}\n")
        stream.flush()
        try:
            sizes[s.dest] = download(s.url, part, s.dest, stream)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            for other in parts.values():
                with contextlib.suppress(OSError):
                    other.unlink()
            if created:
                with contextlib.suppress(OSError):
                    root.rmdir()
            raise StageError([
                f"{s.dest}: cannot download {s.url}: {reason}",
                "offline? download netboot.xyz elsewhere and pass --netboot-xyz FILE "
                "(repeat it for the .lkrn and the .efi), or stage without it: --no-netboot-xyz",
            ]) from exc
        parts[s.dest] = part

    for s in steps:
        path = root / s.dest
        if s.dest in parts:
            parts[s.dest].chmod(0o644)
            os.replace(parts[s.dest], path)
            digest = sha256_file(path)
            assert digest is not None
            entries[s.dest] = {"sha256": digest, "source": s.url or ""}
        elif s.action in (Action.NEW, Action.UPDATE):
            _write_atomic(path, s.content, s.source)
            sizes[s.dest] = path.stat().st_size
        elif s.action in (Action.SAME, Action.KEEP) and path.is_file():
            sizes[s.dest] = path.stat().st_size
        if s.digest is not None and s.action in (Action.NEW, Action.UPDATE, Action.SAME):
            entries[s.dest] = {
                "sha256": s.digest,
                "source": s.origin or (str(s.source) if s.source is not None else "generated"),
            }
        report.done.append(describe(s, root, sizes.get(s.dest)))
    _save_manifest(root, entries)
    if opts.profiles is not None:
        _write_atomic(opts.profiles, profiles_text(steps, root).encode(), None)
        report.profiles = opts.profiles
        report.done.append(f"  {'written':<12} {opts.profiles}  (profiles for pxed.toml)")

    missing = [s for s in steps if s.action is Action.MISSING]
    for s in missing:
        report.notes.append(f"{s.dest} not staged: install it with apt-get install {s.package}")
    return report


def summary_lines(report: Report) -> list[str]:
    """What to do next, after a successful stage."""
    root = report.root
    flag = "" if root.resolve() == DEFAULT_ROOT else f" --tftp-root {root}"
    staged = {s.dest for s in report.steps if s.action is not Action.MISSING}
    lines = [f"staged {root}"]
    if chain.SHIM_ARM64 in staged and chain.GRUB_ARM64 in staged:
        lines.append(f"UEFI arm64 machines get {chain.SHIM_ARM64} (then {chain.GRUB_ARM64}, "
                     f"{chain.GRUB_CFG}; give them a kernel with a [[profile]])")
    if chain.SHIM in staged and chain.GRUB in staged:
        lines.append(f"UEFI x64 machines get {chain.SHIM} (then {chain.GRUB}, {chain.GRUB_CFG}),"
                     " with Secure Boot on or off")  # fmt: skip
    elif "ipxe.efi" not in staged:
        lines.append("UEFI machines get no boot file until ipxe.efi is staged (package ipxe)")
    lines.append(f"serve it:  pxed --iface IFACE{flag}")
    if report.profiles is not None:
        lines.append(f"profiles:  {report.profiles} (add them to your pxed.toml)")
    return lines


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pxed stage",
        description=(
            "Create a TFTP root that pxed's defaults boot from: pxelinux.0 and ldlinux.c32 "
            "(menu.c32), iPXE's undionly.kpxe and ipxe.efi, netboot.xyz, "
            "pxelinux.cfg/default (menu 'Boot netboot.xyz') and boot.ipxe. Files edited "
            "since pxed stage wrote them are never overwritten without --force."
        ),
    )
    p.add_argument("root", nargs="?", type=Path, default=DEFAULT_ROOT, metavar="DIR",
                   help=f"the TFTP root to create or update (default {DEFAULT_ROOT})")
    p.add_argument("--netboot-xyz", action="append", type=Path, default=[], metavar="FILE",
                   help="a local netboot.xyz.lkrn or netboot.xyz.efi (or a directory holding "
                        "them), for offline hosts; repeatable; nothing is downloaded")
    p.add_argument("--netboot-xyz-url", default=NETBOOT_XYZ_URL, metavar="URL",
                   help=f"where to download netboot.xyz from (default {NETBOOT_XYZ_URL})")
    p.add_argument("--no-netboot-xyz", action="store_true",
                   help="stage without netboot.xyz")
    p.add_argument("--kernel", type=Path, metavar="FILE",
                   help="also stage this Linux kernel as vmlinuz, the menu's default entry")
    p.add_argument("--initrd", type=Path, metavar="FILE", help="its initrd (as initrd.img)")
    p.add_argument("--append", default="", metavar="ARGS", help="its command line")
    p.add_argument("--serial", action="store_true",
                   help="show the pxelinux menu on the serial console (SERIAL 0 115200) too")
    p.add_argument("--search-dir", action="append", type=Path, default=[], metavar="DIR",
                   help="look for pxelinux.0, *.c32 and iPXE here first (repeatable)")
    p.add_argument("--profiles", metavar="FILE", type=Path,
                   help="also write a starting [[profile]] set for pxed.toml to FILE "
                        "(netboot.xyz; the Debian installer when its netboot package, "
                        "debian-installer-12-netboot-amd64, is installed), outside the root")
    p.add_argument("--secure-boot", action="store_true",
                   help="also stage Debian's signed chain for Secure Boot PCs: shimx64.efi "
                        "(shim-signed), grubx64.efi (grub-efi-amd64-signed's network image) "
                        "and grub/grub.cfg; taken from the installed packages, else fetched "
                        "with apt-get download and unpacked (never installed)")
    p.add_argument("--arch", action="append", choices=ARCHES, default=[],
                   help="also stage for this architecture (repeatable; x64, BIOS and UEFI "
                        "PCs, always is): arm64 stages Debian's signed arm64 chain, "
                        "shimaa64.efi and grubaa64.efi (shim-signed and "
                        "grub-efi-arm64-signed for arm64), beside the x64 files; the same "
                        "grub/grub.cfg serves both")
    p.add_argument("--force", action="store_true",
                   help="overwrite files edited since (or not written by) pxed stage")
    p.add_argument("--dry-run", "-n", action="store_true", help="say what would be done")
    return p


def options_from_args(args: argparse.Namespace) -> StageOptions:
    kernel = None
    if args.kernel is not None:
        kernel = KernelEntry(args.kernel, args.initrd, args.append)
    return StageOptions(
        root=args.root,
        netboot_xyz=tuple(args.netboot_xyz),
        netboot_xyz_url=None if args.no_netboot_xyz else args.netboot_xyz_url,
        kernel=kernel,
        serial=args.serial,
        search_dirs=tuple(args.search_dir),
        force=args.force,
        dry_run=args.dry_run,
        profiles=args.profiles,
        secure_boot=args.secure_boot,
        arm64="arm64" in args.arch,
    )


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    stream = out if out is not None else sys.stdout
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.initrd is not None and args.kernel is None:
        print("pxed stage: --initrd needs --kernel", file=sys.stderr)
        return 2
    opts = options_from_args(args)
    stream.write(f"pxed stage: {'planning' if opts.dry_run else 'staging'} {opts.root}\n")
    try:
        report = run(opts, stream)
    except StageError as exc:
        for line in exc.problems:
            print(f"pxed stage: {line}", file=sys.stderr)
        print("pxed stage: nothing was changed", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pxed stage: {exc}", file=sys.stderr)
        return 1
    for line in report.done:
        stream.write(line + "\n")
    for note in report.notes:
        stream.write(f"note: {note}\n")
    if not opts.dry_run:
        for line in summary_lines(report):
            stream.write(line + "\n")
    return 0

