"""An arm64 UEFI machine boots from a root `pxed stage --arch arm64` made beside the x64
files, with pxed's default [boot] settings and a [[profile]] matching arch uefi_arm64:

    AAVMF (EDK2 PXE, arch 11; qemu-system-aarch64 -machine virt, TCG) -> DHCP (pxed:
    shimaa64.efi) -> shimaa64.efi -> grubaa64.efi (Debian's signed arm64 network GRUB)
    -> grub/grub.cfg (shared with x64 GRUB) -> grub/grub.cfg-01-<mac> (rendered from the
    profile) -> arm64/vmlinuz (Debian's linux-image-arm64) -> "Linux version"

The arm64 packages (shim-signed, grub-efi-arm64-signed, linux-image-arm64) are a foreign
architecture on this host: make deps-debian adds it (dpkg --add-architecture arm64).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxed import chain, stage
from pxed.lab import Lab
from pxed.lab.boot import BootLab
from pxed.lab.kernel import fetch_debian_kernel
from pxed.lab.machines import Firmware, Machine, missing_requirements
from tests.e2e.conftest import (
    E2E,
    KERNEL_APPEND,
    chain_probes,
    keep_transfer_times,
    stage_or_skip,
    staged_size,
)
from tests.lab import CACHE, keep_dir

MAC = "52:54:00:e2:e0:64"
ARM64_KERNEL = "arm64/vmlinuz"
ARM64_APPEND = "console=ttyAMA0 panic=-1 pxed_e2e=1"
OPTIONAL_PROBES = chain_probes("arm64-efi")


@pytest.fixture(scope="session")
def arm64_root(kernel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = missing_requirements((Firmware.ARM64,))
    if missing:
        pytest.skip(f"needs Debian packages: apt-get install {' '.join(missing)} "
                    "(make deps-debian)")
    try:
        arm64_kernel = fetch_debian_kernel(CACHE / "kernel-arm64", arch="arm64")
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no arm64 kernel to boot: {exc}")
    root = tmp_path_factory.mktemp("arm64-root")
    # x64 and arm64 side by side: the x64 kernel is the menus' entry, as for a PC.
    opts = stage.StageOptions(root=root, netboot_xyz_url=None, arm64=True,
                              kernel=stage.KernelEntry(kernel, None, KERNEL_APPEND),
                              menu_timeout=10)  # fmt: skip
    stage_or_skip(opts, "the arm64 chain")
    (root / ARM64_KERNEL).parent.mkdir(exist_ok=True)
    shutil.copyfile(arm64_kernel, root / ARM64_KERNEL)
    return root


@pytest.fixture
def arm64_lab(lab: Lab, arm64_root: Path, request: pytest.FixtureRequest) -> Iterator[BootLab]:
    yield E2E(lab, arm64_root, keep_dir(request))


def test_arm64_uefi_machine_boots_shim_grub_and_its_profiles_kernel(arm64_lab: BootLab) -> None:
    bootlab = arm64_lab
    bootlab.start_pxed(f"""
[[profile]]
name = "arm64"
kernel = "{ARM64_KERNEL}"
cmdline = "{ARM64_APPEND} pxed.profile={{{{ profile }}}}"
match = {{ arch = ["uefi_arm64"] }}
""")
    boot = bootlab.boot(Machine("arm64", MAC, Firmware.ARM64, memory_mb=1024))
    why = boot.explain()
    assert boot.ok, f"no 'Linux version' on the serial console{why}"
    (ack, *_) = boot.acks()
    assert ack["arch"] == 11 and ack["boot_file"] == chain.SHIM_ARM64, f"{ack}{why}"
    dashes = MAC.replace(":", "-")
    files = boot.files()
    for name in (chain.SHIM_ARM64, chain.GRUB_ARM64, chain.GRUB_CFG, ARM64_KERNEL):
        assert files.get(name) == staged_size(bootlab.root, name), f"{name}: {files}{why}"
    assert f"grub/grub.cfg-01-{dashes}" in files, f"not the rendered menu: {files}{why}"
    # Nothing of the x64 side: not its shim or GRUB, not its kernel.
    assert not {chain.SHIM, chain.GRUB, "vmlinuz", "ipxe.efi"} & set(files), f"{files}{why}"
    # arm64 kernels print it as "Kernel command line:" (x86: "Command line:").
    line = boot.serial.line_with("Kernel command line:") or ""
    assert "pxed.profile=arm64" in line, f"not the profile's kernel line{why}"
    asked = {str(e["file"]) for e in bootlab.events("tftp.refused", mac=MAC)}
    assert asked <= OPTIONAL_PROBES, f"asked for more: {sorted(asked - OPTIONAL_PROBES)}{why}"
    keep_transfer_times(bootlab, boot, MAC)
