"""End-to-end fixtures: QEMU machines booting through pxed in the lab's boot layout.

    server namespace                      machine namespace
    pxed (DHCP + TFTP) on pxs0  <-veth->  uplink -- br0 -- tap0 -- QEMU (-accel tcg)

(pxed.lab.boot.BootLab.) The kernel the machines boot is Debian's linux-image-amd64
(downloaded once with `apt-get download`, only boot/vmlinuz-* unpacked into
tests/.cache/kernel/, never installed). The TFTP root is made by `pxed stage` (the library)
with that kernel as the default entry, the menu on the serial console and `console=ttyS0` on
the kernel line. The installer test boots Debian's network installer instead
(debian-installer-12-netboot-amd64, fetched the same way into tests/.cache/: installer.py).
A failing boot fails with the serial console and pxed's log in the message;
both are also kept under tests/.cache/e2e-logs/<test>/ (gitignored).
"""

from __future__ import annotations

import io
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxed import stage
from pxed.lab import Lab, have
from pxed.lab.boot import POOL, Boot, BootLab
from pxed.lab.kernel import fetch_debian_kernel
from pxed.lab.machines import Machine, missing_requirements
from tests.e2e.installer import DebianInstaller, fetch_debian_installer
from tests.lab import CACHE, keep_dir

KERNEL_APPEND = "console=ttyS0,115200 panic=-1 pxed_e2e=1"
BOOT_TIMEOUT = 180.0
"""Seconds from power-on to "Linux version": 20-40 s is usual under TCG; the rest is for a
loaded CI machine (two cores, other suites running)."""


def require_packages() -> None:
    """Skip, naming the Debian packages, when the host cannot run the machines."""
    missing = missing_requirements()
    if missing:
        pytest.skip(f"needs Debian packages: apt-get install {' '.join(missing)} "
                    "(make deps-debian)")


@pytest.fixture(scope="session")
def kernel() -> Path:
    """Debian's kernel, from the cache or downloaded and unpacked once."""
    if os.geteuid() != 0:
        pytest.skip("QEMU machines on tap devices need root (run the suite as root: make test)")
    try:
        return fetch_debian_kernel(CACHE / "kernel")
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no kernel to boot: {exc}")


@pytest.fixture(scope="session")
def debian_installer() -> DebianInstaller:
    """Debian's netboot installer (text build): ``.kernel`` is .../debian-installer/amd64/linux,
    ``.initrd`` .../debian-installer/amd64/initrd.gz, under tests/.cache/ (downloaded and
    unpacked once, never installed)."""
    if os.geteuid() != 0:
        pytest.skip("QEMU machines on tap devices need root (run the suite as root: make test)")
    try:
        return fetch_debian_installer(CACHE)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no Debian installer to boot: {exc}")


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
    return stage_or_skip(opts, "a root")


def stage_or_skip(opts: stage.StageOptions, what: str) -> Path:
    """``opts.root`` staged by `pxed stage`; the test is skipped, with the stage's own
    lines, when this host cannot stage ``what``."""
    try:
        stage.run(opts, out=io.StringIO())
    except stage.StageError as exc:
        pytest.skip(f"cannot stage {what}: " + "; ".join(exc.problems))
    return opts.root


class E2E(BootLab):
    """The boot layout with the suite's boot timeout."""

    def boot(self, machine: Machine, timeout: float = BOOT_TIMEOUT) -> Boot:
        return super().boot(machine, timeout)


@pytest.fixture
def bootlab(lab: Lab, tftp_root: Path, request: pytest.FixtureRequest) -> Iterator[BootLab]:
    yield E2E(lab, tftp_root, keep_dir(request))


def chain_probes(grub_platform: str) -> set[str]:
    """Names shim (16.1, Debian 12) and GRUB (2.06) ask the server for and boot without:
    shim's revocation and certificate files beside itself, GRUB's module lists under its
    prefix. Another name refused is a file a newer shim or GRUB wants."""
    return {"revocations_sku.efi", "revocations_sbat.efi", "shim_certificate_0.efi",
            *(f"/grub/{grub_platform}/{name}.lst"
              for name in ("command", "fs", "crypto", "terminal"))}  # fmt: skip


def keep_transfer_times(bootlab: BootLab, boot: Boot, mac: str) -> None:
    """Each file's TFTP time beside the serial console (timing belongs in bench/, not in an
    assertion)."""
    done = {str(e["file"]): e for e in bootlab.events("tftp.done", mac=mac)}
    (bootlab.dir / "seconds.txt").write_text(f"power-on to kernel {boot.seconds}\n" + "".join(
        f"{name} {e['seconds']} s blksize {e.get('blksize')} windowsize {e.get('windowsize')}\n"
        for name, e in done.items()))


def in_pool(ip: str) -> bool:
    a = ipaddress.IPv4Address(ip)
    return ipaddress.IPv4Address(POOL[0]) <= a <= ipaddress.IPv4Address(POOL[1])


def staged_size(root: Path, name: str) -> int:
    return (root / name).stat().st_size


def udhcpc_available() -> bool:
    return have("busybox") or shutil.which("udhcpc") is not None
