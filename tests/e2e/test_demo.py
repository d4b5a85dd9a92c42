"""`pxed demo`: its timeline formatting, QEMU command lines, and one real run as root."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pxed.demo import Timeline, demo_config, event_time, missing_packages
from pxed.lab import machines
from pxed.lab.machines import Firmware, Machine

MAC = "52:54:00:de:00:01"


def test_timeline_lines() -> None:
    tl = Timeline(MAC)
    assert tl.event({"event": "dhcp.offer", "mac": "52:54:00:00:00:99", "ip": "x"}, 1.0) == []
    (offer,) = tl.event({"event": "dhcp.offer", "mac": MAC, "ip": "198.19.0.50",
                         "boot_file": "pxelinux.0", "boot_reason": "host", "ipxe": True}, 2.25)
    assert offer == "    2.2 s  DHCP offer   198.19.0.50 -> pxelinux.0 (host entry; client is iPXE)"
    (done,) = tl.event({"event": "tftp.done", "mac": MAC, "file": "ldlinux.c32",
                        "size": 119524, "seconds": 0.117, "blksize": 1408, "windowsize": 1}, 3.0)
    assert "ldlinux.c32" in done and "119.5 kB" in done and "0.12 s" in done
    # pxelinux's probes for per-machine menus fold into one line, printed before the next.
    probes = ["pxelinux.cfg/01-52-54-00-de-00-01", "pxelinux.cfg/C6130032",
              "pxelinux.cfg/C613003", "pxelinux.cfg/C61300", "pxelinux.cfg/C6130"]
    for name in probes:
        assert tl.event({"event": "tftp.refused", "file": name,
                         "reason": "file not found"}, 3.1) == []
    lines = tl.event({"event": "tftp.done", "mac": MAC, "file": "pxelinux.cfg/default",
                      "size": 300, "seconds": 0.0}, 3.2)
    assert len(lines) == 2
    assert "01-52-54-00-de-00-01, C6130032, C613003 and 2 more" in lines[0]
    assert "pxelinux.cfg/default" in lines[1]
    (probe,) = tl.event({"event": "tftp.declined", "mac": MAC, "file": "ipxe.efi", "bytes": 0,
                         "error": "client sent ERROR 8: User aborted the transfer"}, 8.6)
    assert "ipxe.efi" in probe and "size asked only" in probe
    (failed,) = tl.event({"event": "tftp.failed", "mac": MAC, "file": "vmlinuz", "bytes": 4096,
                          "error": "timed out"}, 9.0)
    assert "TFTP failed  vmlinuz: timed out" in failed
    (kernel,) = tl.kernel("Linux version 6.1.0", 24.0)
    assert kernel.endswith("kernel       Linux version 6.1.0")


def test_event_time_uses_pxeds_timestamp() -> None:
    e = {"event": "dhcp.ack", "timestamp": "2026-01-01T00:00:10.500000Z"}
    wall0 = 1767225600.0  # 2026-01-01T00:00:00Z
    assert event_time(e, wall0) == pytest.approx(10.5)
    assert event_time({"event": "x"}, wall0) is None
    assert event_time({"timestamp": "not a time"}, wall0) is None


def test_demo_config_host_entry_only_for_the_pxelinux_path() -> None:
    assert 'boot = "pxelinux.0"' in demo_config(Firmware.BIOS, "pxelinux")
    assert "dhcp.host" not in demo_config(Firmware.BIOS, "ipxe")
    assert "dhcp.host" not in demo_config(Firmware.UEFI, "pxelinux")


def test_qemu_command_lines(tmp_path: Path) -> None:
    serial = tmp_path / "serial.log"
    bios = machines.qemu_command(Machine("b", MAC, Firmware.BIOS), "tap0", serial, tmp_path)
    assert bios[:3] == ["qemu-system-x86_64", "-accel", "tcg"]
    assert f"e1000,netdev=n0,mac={MAC}" in bios  # default ROM: QEMU's iPXE build
    assert f"file:{serial}" in bios
    code, vars_ = tmp_path / "CODE.fd", tmp_path / "VARS.fd"
    code.write_bytes(b"c")
    vars_.write_bytes(b"v")
    uefi = machines.qemu_command(Machine("u", MAC, Firmware.UEFI), "tap1", serial, tmp_path,
                             pflash=(code, vars_))
    assert f"virtio-net-pci,netdev=n0,mac={MAC},romfile=" in uefi  # EDK2's own PXE client
    per_vm = tmp_path / "u-VARS.fd"
    assert per_vm.read_bytes() == b"v" and any(str(per_vm) in a for a in uefi)
    assert any(f"readonly=on,file={code}" in a for a in uefi)


def test_serial_log_banner_and_hints(tmp_path: Path) -> None:
    log = machines.SerialLog(tmp_path / "s.log")
    assert log.kernel_banner() is None and log.text() == ""
    log.path.write_text("junk\x1b[2J\n[    0.000000] Linux version 6.1.0 (x)")
    assert log.kernel_banner() is None  # not a whole line yet
    log.path.write_text("junk\n[    0.000000] Linux version 6.1.0 (x)\n[ 0.0] Command line: y\n")
    assert log.kernel_banner() == "Linux version 6.1.0 (x)"
    assert machines.gave_up("  PXE-E16: No valid offer received.")
    assert any("4011" in h for h in machines.hints("PXE-E16: No valid offer received."))
    assert not machines.gave_up("Linux version")


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {m.group(1) for m in re.finditer(r"^\d+: ([^:@]+)", out, re.M)}


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_pxed_demo_boots_and_leaves_nothing_behind(kernel: Path) -> None:
    """The real command: a BIOS machine through pxelinux, its timeline, a clean teardown."""
    if missing_packages(Firmware.BIOS):
        pytest.skip(f"apt-get install {' '.join(missing_packages(Firmware.BIOS))}")
    links, namespaces = _links(), _netns()
    workdirs = set(Path("/tmp").glob("pxed-demo-*"))
    res = subprocess.run(
        [sys.executable, "-m", "pxed", "demo", "--kernel", str(kernel), "--timeout", "180"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    for expected in ("power on", "DHCP offer   198.19.0.50 -> pxelinux.0",
                     "DHCP ack     198.19.0.50 -> pxelinux.0", "pxelinux.0",
                     "ldlinux.c32", "pxelinux.cfg/default", "vmlinuz",
                     "kernel       Linux version", "power-on to kernel in", "tearing down"):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    # Every line of the timeline carries a time; the kernel's line comes last.
    timeline = [line for line in out.splitlines() if re.match(r"^\s+\d+\.\d s  ", line)]
    assert timeline[-1].split()[2] == "kernel", out
    # Other suites may add and move veths meanwhile (tests/lab.py's va*/vb*): compare the rest.
    after = _links()
    new = {n for n in after - links if n in ("pxs0", "uplink", "br0") or n.startswith("tap")}
    assert not new, f"the demo left interfaces in the caller's namespace: {new}"
    gone = {n for n in links - after if not n.startswith(("va", "vb"))}
    assert not gone, f"interfaces of the caller's namespace disappeared: {gone}"
    assert {n for n in _netns() - namespaces if "demo" in n} == set(), "namespaces left behind"
    assert set(Path("/tmp").glob("pxed-demo-*")) == workdirs, "work directory left behind"


def test_demo_refuses_without_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    from pxed import demo

    monkeypatch.setattr(demo, "missing_packages", lambda fw: ["ovmf", "ipxe"])
    monkeypatch.setattr(demo.os, "geteuid", lambda: 0)
    out = io.StringIO()
    assert demo.main(["--firmware", "uefi"], out) == 1
    assert "apt-get install ovmf ipxe" in out.getvalue()

