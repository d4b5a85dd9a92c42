"""A Secure Boot PC boots through Debian's signed chain from a root `pxed stage --secure-boot`
made, with pxed's default [boot] settings; the same PC given iPXE's unsigned build refuses it.

    OVMF (Secure Boot on, Microsoft's keys enrolled; q35, SMM) -> DHCP (pxed: shimx64.efi)
    -> shimx64.efi -> grubx64.efi (Debian's signed network GRUB) -> grub/grub.cfg
    -> vmlinuz (Debian's signed kernel, verified through shim) -> "Linux version"

shim-signed and grub-efi-amd64-signed are fetched by the stage itself (apt-get download,
unpacked, never installed) when this host has not installed them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pxed import chain, stage
from pxed.lab import Lab, wait_for
from pxed.lab.boot import BootLab
from pxed.lab.machines import Firmware, Machine
from tests.e2e.conftest import (
    E2E,
    KERNEL_APPEND,
    chain_probes,
    keep_transfer_times,
    require_packages,
    stage_or_skip,
    staged_size,
)
from tests.lab import keep_dir

MAC = "52:54:00:e2:e0:50"
REFUSED_MAC = "52:54:00:e2:e0:51"
OPTIONAL_PROBES = chain_probes("x86_64-efi")


@pytest.fixture(scope="session")
def secure_root(kernel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_packages()
    root = tmp_path_factory.mktemp("secure-root")
    opts = stage.StageOptions(root=root, netboot_xyz_url=None, secure_boot=True,
                              kernel=stage.KernelEntry(kernel, None, KERNEL_APPEND),
                              menu_timeout=10)  # fmt: skip
    stage_or_skip(opts, "the signed chain")
    return root


@pytest.fixture
def secure_lab(lab: Lab, secure_root: Path, request: pytest.FixtureRequest) -> Iterator[BootLab]:
    yield E2E(lab, secure_root, keep_dir(request))


def test_secure_boot_pc_boots_shim_grub_and_the_signed_kernel(secure_lab: BootLab) -> None:
    bootlab = secure_lab
    bootlab.start_pxed()
    boot = bootlab.boot(Machine("secure", MAC, Firmware.UEFI_SECURE))
    why = boot.explain()
    assert boot.ok, f"no 'Linux version' on the serial console{why}"
    (ack, *_) = boot.acks()
    assert ack["arch"] == 7 and ack["boot_file"] == chain.SHIM, f"{ack}{why}"
    files = boot.files()
    for name in (chain.SHIM, chain.GRUB, chain.GRUB_CFG, "vmlinuz"):
        assert files.get(name) == staged_size(bootlab.root, name), f"{name}: {files}{why}"
    # Not iPXE: the firmware's own client, then shim and GRUB over TFTP.
    assert "ipxe.efi" not in files and not any(a.get("ipxe") for a in boot.acks()), why
    # What each stage asks for beyond those, and may go without: shim 16's revocation and
    # certificate files beside itself, GRUB's module lists under its prefix. Another name
    # here is a file a newer shim or GRUB wants: the stage should know of it.
    asked = {str(e["file"]) for e in bootlab.events("tftp.refused", mac=MAC)}
    # And the staged grub.cfg's own question: a menu rendered for this machine? (None here.)
    asked.discard(f"/grub/grub.cfg-01-{MAC.replace(':', '-')}")
    assert asked <= OPTIONAL_PROBES, f"asked for more: {sorted(asked - OPTIONAL_PROBES)}{why}"
    keep_transfer_times(bootlab, boot, MAC)


def test_secure_boot_pc_refuses_unsigned_ipxe(secure_lab: BootLab) -> None:
    """The same firmware given iPXE's unsigned build: the file is sent, the firmware will not
    run it (so the test above proves Secure Boot was on)."""
    bootlab = secure_lab
    bootlab.start_pxed('[boot]\nuefi_x64 = "ipxe.efi"\n')
    vm = bootlab.power_on(Machine("unsigned", REFUSED_MAC, Firmware.UEFI_SECURE))
    try:
        sent = lambda: bootlab.files_sent(REFUSED_MAC).get("ipxe.efi")  # noqa: E731
        wait_for(sent, 180, alive=vm.alive)
        # Time for iPXE to start and ask DHCP again, had the firmware run it.
        wait_for(lambda: any(a.get("ipxe") for a in bootlab.events("dhcp.ack", mac=REFUSED_MAC)),
                 20, alive=vm.alive)  # fmt: skip
    finally:
        vm.off()
    why = f"\n{vm.serial.tail(40)}\n{bootlab.tail(40)}"
    assert sent() == staged_size(bootlab.root, "ipxe.efi"), f"ipxe.efi was not sent{why}"
    assert not any(a.get("ipxe") for a in bootlab.events("dhcp.ack", mac=REFUSED_MAC)), (
        f"the firmware ran unsigned iPXE: Secure Boot was off{why}")
    serial = vm.serial.text()
    assert "Access Denied" in serial and "iPXE initialising" not in serial, why


PROFILE_MAC = "52:54:00:e2:e0:52"


def test_secure_boot_pc_boots_the_grub_menu_its_profile_renders(secure_lab: BootLab) -> None:
    """A machine with a profile, through the same chain: the staged grub/grub.cfg asks for
    its own grub/grub.cfg-01-<mac>, which pxed renders from the profile's GRUB template, and
    the kernel gets the profile's arguments."""
    bootlab = secure_lab
    bootlab.start_pxed(f"""
[[profile]]
name = "signed"
kernel = "vmlinuz"
cmdline = "{KERNEL_APPEND} pxed.profile={{{{ profile }}}} pxed.mac={{{{ mac_dashes }}}}"
match = {{ mac = ["{PROFILE_MAC}"] }}
""")
    boot = bootlab.boot(Machine("secure-profile", PROFILE_MAC, Firmware.UEFI_SECURE))
    why = boot.explain()
    assert boot.ok, f"no 'Linux version' on the serial console{why}"
    dashes = PROFILE_MAC.replace(":", "-")
    line = boot.serial.line_with("Command line:") or ""
    assert f"pxed.profile=signed pxed.mac={dashes}" in line, f"not the rendered menu{why}"
    files = boot.files()
    assert f"grub/grub.cfg-01-{dashes}" in files, f"{files}{why}"
    assert files.get("vmlinuz") == staged_size(bootlab.root, "vmlinuz"), f"{files}{why}"
