"""Real firmware PXE-boots a Linux kernel through pxed (QEMU, -accel tcg).

1. BIOS: SeaBIOS -> QEMU's iPXE option ROM -> DHCP -> pxelinux.0 (the machine's host entry)
   -> ldlinux.c32 -> pxelinux.cfg/default (menu.c32) -> vmlinuz -> "Linux version".
   A second BIOS machine without a host entry takes the iPXE path: boot.ipxe -> vmlinuz.
   The status page is open in headless Chromium during the first boot: its row comes live.
2. UEFI: OVMF's own EDK2 PXE client (arch 7; virtio-net without option ROM) -> ipxe.efi ->
   iPXE asks again with user class "iPXE" -> boot.ipxe -> vmlinuz -> "Linux version".
3. Boot file selection with a plain DHCP client (busybox udhcpc): a reserved MAC gets its own
   file whatever it says it is; an unknown architecture gets the default (BIOS) file.

Each boot asserts on the serial console and on pxed's own log events (the lease, the files
sent with their sizes) and fails with both attached.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest

from pxed.lab import wait_for
from pxed.lab.boot import POOL, SERVER_IP, BootLab
from pxed.lab.browser import Browser
from pxed.lab.machines import Firmware, Machine
from tests.e2e.conftest import in_pool, staged_size, udhcpc_available

RESERVED_BIOS_MAC = "52:54:00:e2:e0:01"
RESERVED_IP = "198.19.0.50"
PLAIN_BIOS_MAC = "52:54:00:e2:e0:02"
UEFI_MAC = "52:54:00:e2:e0:03"
UEFI_HTTP_MAC = "52:54:00:e2:e0:04"

HOSTS = f"""
[[dhcp.host]]
mac = "{RESERVED_BIOS_MAC}"
ip = "{RESERVED_IP}"
hostname = "bios-pxelinux"
boot = "pxelinux.0"
"""

PXELINUX_FILES = ("pxelinux.0", "ldlinux.c32", "pxelinux.cfg/default", "menu.c32",
                  "libutil.c32", "vmlinuz")


def assert_files(boot_files: dict[str, int], root: Path, names: tuple[str, ...], why: str) -> None:
    for name in names:
        assert name in boot_files, f"{name} was not sent in full ({why})"
        assert boot_files[name] == staged_size(root, name), (
            f"{name}: {boot_files[name]} bytes sent, {staged_size(root, name)} staged ({why})"
        )


STATUS_PAGE = "http://127.0.0.1:9167/"


def test_bios_reserved_host_boots_through_pxelinux(bootlab: BootLab) -> None:
    bootlab.start_pxed(HOSTS + '\n[metrics]\nlisten = "127.0.0.1:9167"\n')
    # The status page is open in a real browser while the machine boots: its row must come
    # over the page's event stream, not by loading the page again.
    with Browser(bootlab.server, bootlab.dir / "browser") as page:
        page.open(STATUS_PAGE)
        page.wait_for("document.getElementById('live').textContent === 'live'")
        boot = bootlab.boot(Machine("bios-pxelinux", RESERVED_BIOS_MAC, Firmware.BIOS))
        row = f"#chart g.row[data-mac='{RESERVED_BIOS_MAC}']"
        page.wait_for(f"document.querySelector(\"{row}\")?.querySelectorAll('rect.seg')"
                      ".length >= 7", 15)  # fmt: skip
        drawn: dict[str, Any] = page.evaluate(f"""(() => {{
            const row = document.querySelector("{row}");
            return {{ip: row.dataset.ip, outcome: row.dataset.outcome,
                     name: row.querySelector('text.name').textContent,
                     kinds: [...row.querySelectorAll('rect.seg')].map(s => s.dataset.kind),
                     failed: row.querySelectorAll('rect.seg.failed, text.mark').length,
                     lease: document.querySelector("#leases tr[data-mac='{RESERVED_BIOS_MAC}']")
                            ?.cells[0].textContent}};
        }})()""")
        loads = [e for e in page.events if e.get("method") == "Page.loadEventFired"]
        page.screenshot(bootlab.dir / "status-page.png")  # kept with the serial console
    why = boot.explain()
    assert len(loads) == 1, f"the page was loaded again: {loads}"
    assert drawn["ip"] == RESERVED_IP and drawn["name"] == "bios-pxelinux", drawn
    assert drawn["kinds"][0] == "dhcp" and drawn["kinds"].count("tftp") >= 6, drawn
    assert drawn["failed"] == 0 and drawn["outcome"] in ("booting", "loaded"), drawn
    assert drawn["lease"] == RESERVED_IP, drawn
    assert boot.ok, f"no 'Linux version' on the serial console{why}"
    serial = boot.serial.text()
    assert "PXELINUX" in serial, f"pxelinux's banner is missing from the console{why}"
    assert "pxed_e2e=1" in serial, f"the kernel did not get the menu's APPEND line{why}"

    acks = boot.acks()
    assert acks, f"no dhcp.ack for {RESERVED_BIOS_MAC}{why}"
    for ack in acks:  # QEMU's ROM is iPXE: without the host entry it would get boot.ipxe
        assert ack["ip"] == RESERVED_IP, why
        assert ack["boot_file"] == "pxelinux.0" and ack["boot_reason"] == "host", why
    assert_files(boot.files(), bootlab.root, PXELINUX_FILES, "pxelinux path" + why)

    # `pxed boots MAC` tells the same boot as one story: the DHCP that chose pxelinux.0 by
    # the host rule, then each file in full, the config names pxelinux probed marked so.
    (story,) = bootlab.boots(RESERVED_BIOS_MAC)
    steps = story["steps"]
    assert story["ip"] == RESERVED_IP and story["arch"] == 0, story
    assert steps[0]["kind"] == "dhcp" and steps[0]["detail"]["rule"] == "host", steps[0]
    assert steps[0]["detail"]["boot_file"] == "pxelinux.0", steps[0]
    done = [s["detail"]["file"] for s in steps if s["kind"] == "tftp" and s["ok"]
            and not s["detail"].get("probe")]  # fmt: skip
    assert set(PXELINUX_FILES) <= set(done), done  # menu.c32 reads the config again
    assert done[0] == "pxelinux.0" and done[-1] == "vmlinuz", done
    probes = [s for s in steps if s["detail"].get("probe") and s["detail"].get("refused")]
    assert probes, f"pxelinux looks for pxelinux.cfg/01-<mac> first: {steps}"
    assert story["outcome"] in ("booting", "loaded") and story["reason"] is None, story


def test_bios_without_host_entry_runs_boot_ipxe(bootlab: BootLab) -> None:
    bootlab.start_pxed(HOSTS)
    boot = bootlab.boot(Machine("bios-ipxe", PLAIN_BIOS_MAC, Firmware.BIOS))
    why = boot.explain()
    assert boot.ok, f"no 'Linux version' on the serial console{why}"
    assert "pxed_e2e=1" in boot.serial.text(), f"kernel line not from boot.ipxe{why}"

    acks = boot.acks()
    assert acks, f"no dhcp.ack for {PLAIN_BIOS_MAC}{why}"
    ack = acks[-1]
    assert in_pool(ack["ip"]), f"{ack['ip']} is outside the pool {POOL}{why}"
    assert ack["boot_file"] == "boot.ipxe" and ack["boot_reason"] == "ipxe", why
    assert ack.get("ipxe") is True, why
    files = boot.files()
    assert_files(files, bootlab.root, ("boot.ipxe", "vmlinuz"), "iPXE script path" + why)
    assert "pxelinux.0" not in files, why


def test_bios_ipxe_loads_its_script_and_kernel_over_http(bootlab: BootLab) -> None:
    """With [http] listen, QEMU's iPXE ROM gets boot.ipxe as a URL on pxed's HTTP server,
    and the kernel the script names (relative) follows over HTTP: nothing but DHCP before."""
    bootlab.start_pxed(args=("--http-port", "8080"))
    boot = bootlab.boot(Machine("bios-ipxe-http", PLAIN_BIOS_MAC, Firmware.BIOS))
    why = boot.explain()
    assert boot.ok, f"no 'Linux version' on the serial console{why}"
    assert "pxed_e2e=1" in boot.serial.text(), f"kernel line not from boot.ipxe{why}"
    got = {e["file"]: e["bytes"] for e in bootlab.events("http.done")
           if e.get("mac") == PLAIN_BIOS_MAC}  # fmt: skip
    for name in ("boot.ipxe", "vmlinuz"):
        assert got.get(name) == staged_size(bootlab.root, name), f"{name}: {got}{why}"
    assert not boot.files(), f"TFTP was not needed: {boot.files()}{why}"
    (story,) = bootlab.boots(PLAIN_BIOS_MAC)
    assert [s["detail"]["file"] for s in story["steps"] if s["kind"] == "http" and s["ok"]
            and not s["detail"].get("probe")] == ["boot.ipxe", "vmlinuz"], story  # fmt: skip


def test_uefi_edk2_pxe_chains_ipxe_efi(bootlab: BootLab) -> None:
    bootlab.start_pxed(HOSTS)
    boot = bootlab.boot(Machine("uefi", UEFI_MAC, Firmware.UEFI))
    why = boot.explain()
    serial = boot.serial.text()
    assert "Start PXE over IPv4" in serial, f"OVMF's own PXE client did not run{why}"
    assert boot.ok, f"no 'Linux version' on the serial console{why}"

    acks = boot.acks()
    firmware_acks = [a for a in acks if not a.get("ipxe")]
    ipxe_acks = [a for a in acks if a.get("ipxe")]
    assert firmware_acks, f"no dhcp.ack for the EDK2 PXE client{why}"
    assert firmware_acks[0]["arch"] == 7, why
    assert firmware_acks[0]["boot_file"] == "ipxe.efi", why
    assert firmware_acks[0]["boot_reason"] == "uefi_x64", why
    assert ipxe_acks, f"iPXE (ipxe.efi) did not ask again with user class iPXE{why}"
    assert ipxe_acks[-1]["boot_file"] == "boot.ipxe", why
    assert ipxe_acks[-1]["ip"] == firmware_acks[0]["ip"], f"iPXE got another address{why}"
    assert_files(boot.files(), bootlab.root, ("ipxe.efi", "boot.ipxe", "vmlinuz"),
                 "UEFI path" + why)


def test_uefi_http_boot_loads_ipxe_efi_over_http(bootlab: BootLab) -> None:
    """OVMF with PXE off asks as "HTTPClient" (arch 16): pxed's own DHCP gives it a URL on
    pxed's HTTP server, the firmware loads ipxe.efi from there, and iPXE goes on to the
    kernel (its script and kernel over TFTP: iPXE asks as a PXE client)."""
    bootlab.start_pxed(args=("--http-port", "8080"))
    boot = bootlab.boot(Machine("uefi-http", UEFI_HTTP_MAC, Firmware.UEFI_HTTP))
    why = boot.explain()
    assert boot.ok, f"no 'Linux version' on the serial console{why}"
    serial = boot.serial.text()
    assert f"http://{SERVER_IP}:8080/ipxe.efi" in serial, f"the firmware shows no URL{why}"
    http = [e for e in bootlab.events("http.done") if e.get("file") == "ipxe.efi"]
    assert http and http[0]["bytes"] == staged_size(bootlab.root, "ipxe.efi"), why
    assert http[0]["mac"] == UEFI_HTTP_MAC, f"the HTTP event names its machine{why}"
    firmware = [a for a in boot.acks() if not a.get("ipxe")]
    assert firmware and firmware[0]["arch"] == 16, why
    # The story shows the HTTP file between the firmware's DHCP and iPXE's.
    (story,) = bootlab.boots(UEFI_HTTP_MAC)
    kinds = [s["kind"] for s in story["steps"]]
    assert kinds[0] == "dhcp" and "http" in kinds, kinds
    assert kinds.index("http") < max(i for i, k in enumerate(kinds) if k == "dhcp"), kinds


UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc calls this with the lease in the environment; keep what the test looks at.
[ "$1" = bound ] || exit 0
echo "ip=$ip boot_file=$boot_file siaddr=$siaddr" >> "$OUT"
"""


@pytest.mark.skipif(not udhcpc_available(), reason="busybox not installed: apt-get install busybox")
def test_boot_file_by_host_and_architecture(bootlab: BootLab) -> None:
    """A reserved MAC gets its own file; arch 7 gets ipxe.efi; an unknown arch the default."""
    reserved = "52:54:00:e2:e0:10"
    bootlab.start_pxed(HOSTS + f"""
[[dhcp.host]]
mac = "{reserved}"
ip = "198.19.0.60"
boot = "undionly.kpxe"
""")
    lab = bootlab.lab
    client = bootlab.join("cli", "eth0")
    script = lab.tmp / "udhcpc.script"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)

    def ask(mac: str, arch_hex: str, label: str) -> dict[str, str]:
        client.run("ip", "link", "set", "eth0", "down")
        client.run("ip", "link", "set", "eth0", "address", mac)
        client.run("ip", "link", "set", "eth0", "up")
        out = lab.tmp / f"{label}.env"
        vendor = f"PXEClient:Arch:{int(arch_hex, 16):05d}:UNDI:002001"
        cmd = (f"OUT={shlex.quote(str(out))} busybox udhcpc -f -q -n -t 5 -T 1 -i eth0 "
               f"-s {shlex.quote(str(script))} -V {vendor} -x 0x5d:{arch_hex}")
        res = client.run("sh", "-c", cmd, check=False, timeout=60)
        assert wait_for(out.exists, 5), (
            f"udhcpc ({label}) got no lease:\n{res.stdout}{res.stderr}\n{bootlab.tail(30)}")
        return dict(kv.split("=", 1) for kv in out.read_text().split())

    unknown = ask("52:54:00:e2:e0:11", "00ff", "unknown-arch")
    assert unknown["boot_file"] == "pxelinux.0", unknown  # [boot] bios, the default
    assert unknown["siaddr"] == SERVER_IP, unknown
    uefi = ask("52:54:00:e2:e0:12", "0007", "uefi")
    assert uefi["boot_file"] == "ipxe.efi", uefi
    host = ask(reserved, "0007", "reserved")
    assert host == {"ip": "198.19.0.60", "boot_file": "undionly.kpxe", "siaddr": SERVER_IP}, host

    decided = {e["mac"]: e for e in bootlab.events("dhcp.ack")}
    assert decided["52:54:00:e2:e0:11"]["boot_reason"] == "bios", decided
    assert decided["52:54:00:e2:e0:11"]["arch"] in (255, [255]), decided
    assert decided[reserved]["boot_reason"] == "host", decided



def test_a_boot_file_deleted_from_the_root_is_the_story_s_reason(
    bootlab: BootLab, tmp_path: Path
) -> None:
    """pxed started with pxelinux.0 in its root; the file is deleted before the machine asks
    for it. `pxed boots MAC` names the missing file as why the boot failed."""
    mac = "52:54:00:e2:e0:04"
    root = tmp_path / "root"
    shutil.copytree(bootlab.root, root, copy_function=os.link)  # hard links: no copies
    bootlab.root = root
    bootlab.start_pxed(f"""
[[dhcp.host]]
mac = "{mac}"
boot = "pxelinux.0"
""")
    (root / "pxelinux.0").unlink()
    vm = bootlab.power_on(Machine("deleted-file", mac, Firmware.BIOS))
    try:
        def failed() -> bool:
            stories = bootlab.boots(mac)
            return bool(stories) and stories[-1]["outcome"] == "failed"

        seen = wait_for(failed, 120, interval=2.0, alive=vm.alive)
    finally:
        vm.off()
    stories = bootlab.boots(mac)
    assert seen, f"no failed story: {stories}\n{bootlab.tail(30)}"
    story = stories[-1]
    assert story["reason"] == "pxelinux.0 was not found under the TFTP root", story
    assert story["steps"][0]["detail"]["boot_file"] == "pxelinux.0", story
