"""A machine boots its profile, rendered for it, once; then pxed sends it to its local disk.

QEMU (SeaBIOS + iPXE ROM) with pxed's own DHCP and [http] on: the machine is marked with
`pxed host MAC --next kern` before power-on; iPXE gets its own script
(pxed/<mac>/boot.ipxe), whose kernel line carries the profile's rendered arguments (seen on
the serial console). Once the profile's final file is sent, pxed says so and, powered on
again, the machine gets the local-disk script and no kernel.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from pxed.lab import wait_for
from pxed.lab.boot import BootLab
from pxed.lab.machines import Firmware, Machine
from pxed.lab.pxed import PxedProcess, pythonpath
from tests.e2e.conftest import staged_size

MAC = "52:54:00:e2:e0:30"
DASHES = MAC.replace(":", "-")
ARGS = "pxed.profile={{ profile }} pxed.host={{ hostname }}"
CONFIG = f"""
[http]
listen = "0.0.0.0:8080"

[[dhcp.host]]
mac = "{MAC}"
hostname = "prof1"

[[profile]]
name = "kern"
kernel = "vmlinuz"
cmdline = "console=ttyS0,115200 panic=-1 {ARGS}"
"""


def host(server: PxedProcess, *args: str) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-P", "-m", "pxed", "host", MAC, *args, "--json",
                          "--state-dir", str(server.state_dir)],
                         env=pythonpath(), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res
    shown: dict[str, Any] = json.loads(res.stdout)
    return shown


def http_files(bootlab: BootLab) -> list[str]:
    return [str(e["file"]) for e in bootlab.events("http.done") if e.get("mac") == MAC]


def test_a_boot_once_machine_boots_its_profile_then_its_disk(bootlab: BootLab) -> None:
    server = bootlab.start_pxed(CONFIG)
    assert isinstance(server, PxedProcess)
    assert host(server, "--next", "kern")["next_boot"] == "kern"
    boot = bootlab.boot(Machine("profile-once", MAC, Firmware.BIOS))
    why = boot.explain()
    assert boot.ok, f"no 'Linux version' on the serial console{why}"
    line = boot.serial.line_with("Command line:") or ""
    assert "pxed.profile=kern pxed.host=prof1" in line, f"not the rendered script{why}"
    ipxe_acks = [a for a in boot.acks() if a.get("ipxe")]
    assert ipxe_acks and ipxe_acks[-1]["profile"] == "kern", why
    assert ipxe_acks[-1]["boot_file"] == f"pxed/{DASHES}/boot.ipxe", why
    assert http_files(bootlab) == [f"pxed/{DASHES}/boot.ipxe", "vmlinuz"], why
    got = {e["file"]: e["bytes"] for e in bootlab.events("http.done") if e.get("mac") == MAC}
    assert got["vmlinuz"] == staged_size(bootlab.root, "vmlinuz"), why
    assert wait_for(lambda: bootlab.events("profile.once_done", mac=MAC), 10), why
    assert host(server)["next_boot"] == "local"

    # Powered on again: iPXE asks for its script once more and is told to boot the disk.
    again = bootlab.power_on(Machine("profile-local", MAC, Firmware.BIOS))
    try:
        wait_for(lambda: len(http_files(bootlab)) >= 3, 120, alive=again.alive)
        # Long enough for a kernel request, had the script named one.
        wait_for(lambda: again.serial.kernel_banner() is not None, 10, alive=again.alive)
    finally:
        again.off()
    why = f"\n{again.serial.tail(30)}\n{bootlab.tail(40)}"
    assert http_files(bootlab)[2:] == [f"pxed/{DASHES}/boot.ipxe"], why
    assert again.serial.kernel_banner() is None, f"booted a kernel again{why}"


PXELINUX_MAC = "52:54:00:e2:e0:31"
PXELINUX_CONFIG = f"""
[[dhcp.host]]
mac = "{PXELINUX_MAC}"
hostname = "prof2"
boot = "pxelinux.0"

[[profile]]
name = "menu"
kernel = "vmlinuz"
cmdline = "console=ttyS0,115200 panic=-1 {ARGS}"
match = {{ mac = ["{PXELINUX_MAC}"] }}
"""


def test_pxelinux_reads_the_menu_its_profile_renders(bootlab: BootLab) -> None:
    """A host entry sends the machine to PXELINUX; its profile (chosen by MAC) renders the
    pxelinux.cfg/01-<mac> PXELINUX asks for first, so the staged default menu is never
    read, and the kernel gets the profile's arguments. No [http]: all of it over TFTP."""
    bootlab.start_pxed(PXELINUX_CONFIG)
    boot = bootlab.boot(Machine("profile-pxelinux", PXELINUX_MAC, Firmware.BIOS))
    why = boot.explain()
    assert boot.ok, f"no 'Linux version' on the serial console{why}"
    line = boot.serial.line_with("Command line:") or ""
    assert "pxed.profile=menu pxed.host=prof2" in line, f"not the rendered menu{why}"
    files = boot.files()
    menu = f"pxelinux.cfg/01-{PXELINUX_MAC.replace(':', '-')}"
    assert menu in files and "pxelinux.cfg/default" not in files, f"{files}{why}"
    assert files["vmlinuz"] == staged_size(bootlab.root, "vmlinuz"), why
