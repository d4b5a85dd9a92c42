"""The lab's pure parts: configuration as TOML, firmware kinds as QEMU command lines, the
peers' command lines. (The lab itself runs in every integration and e2e test.)"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from pxed.lab import ToolMissing, require
from pxed.lab.dhcp import DhcpSetup, DnsmasqPxe, Reservation, pxed_dhcp_config
from pxed.lab.machines import KINDS, Firmware, Machine, missing_requirements, qemu_command
from pxed.lab.netns import Netns
from pxed.lab.pxed import PxedProcess, toml_text

MAC = "52:54:00:aa:00:01"


def test_toml_text_is_read_back_by_tomllib() -> None:
    config = {
        "server": {"interfaces": ["pxs0"], "mode": "dhcp", "probe_timeout": 1.5},
        "dhcp": {
            "range": "198.19.1.10-198.19.1.20",
            "host": [{"mac": MAC, "ip": "198.19.0.50"}, {"mac": "52:54:00:aa:00:02"}],
            "options": {"43": {"type": "bytes", "value": "06:01:08:ff"}},
        },
        "tftp": {"root": "/srv/tftp", "single_port": True, "port_range": [4000, 4100]},
        "boot": {},
    }
    assert tomllib.loads(toml_text(config)) == config


def test_pxed_process_writes_its_configuration(tmp_path: Path) -> None:
    setup = DhcpSetup(hosts=(Reservation(MAC, "198.19.0.50", "node1", "pxelinux.0"),))
    mapping = pxed_dhcp_config(setup, "pxs0", tmp_path)
    proc = PxedProcess(Netns("nowhere"), tmp_path, mapping, ["--no-tftp"], log_level="debug")
    cmd = proc.command()
    assert cmd[1:4] == ["-P", "-m", "pxed"] and cmd[-1] == "--no-tftp"
    assert cmd[cmd.index("--log-level") + 1] == "debug"
    written = tomllib.loads(Path(cmd[cmd.index("--config") + 1]).read_text())
    assert written["dhcp"]["host"] == [
        {"mac": MAC, "ip": "198.19.0.50", "hostname": "node1", "boot": "pxelinux.0"}
    ]
    assert written["dhcp"]["lease_time"] == "43200s" and written["boot"] == {"bios": "pxelinux.0"}


@pytest.mark.parametrize("firmware", list(Firmware))
def test_every_firmware_kind_is_a_command_line(firmware: Firmware, tmp_path: Path) -> None:
    kind = KINDS[firmware]
    code, vars_ = tmp_path / "CODE.fd", tmp_path / "VARS.fd"
    code.write_bytes(b"c")
    vars_.write_bytes(b"v")
    machine = Machine("m", MAC, firmware)
    cmd = qemu_command(machine, "tap0", tmp_path / "serial", tmp_path, pflash=(code, vars_))
    assert cmd[:3] == [kind.qemu, "-accel", "tcg"]
    assert kind.nic.format(mac=MAC) in cmd
    assert "tap,id=n0,ifname=tap0,script=no,downscript=no" in cmd
    flash = [a for a in cmd if a.startswith("if=pflash")]
    if kind.pflash:  # the VARS copy is the machine's own
        assert flash == [f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                         f"if=pflash,format=raw,unit=1,file={tmp_path / 'm-VARS.fd'}"]
        assert (tmp_path / "m-VARS.fd").read_bytes() == b"v"
    else:
        assert flash == []
    if shutil.which(kind.qemu) is None:
        assert missing_requirements([firmware])  # names the package to install


def test_http_boot_turns_pxe_off_and_secure_boot_needs_smm() -> None:
    assert "name=opt/org.tianocore/IPv4PXESupport,string=no" in KINDS[Firmware.UEFI_HTTP].extra
    assert "q35,smm=on" in KINDS[Firmware.UEFI_SECURE].machine


def test_dnsmasq_as_the_pxe_server_pxed_replaces(tmp_path: Path) -> None:
    setup = DhcpSetup(hosts=(Reservation(MAC, "198.19.0.50", boot="pxelinux.0"),))
    cmd = DnsmasqPxe(Netns("nowhere"), "pxs0", setup, tmp_path, root=tmp_path).command()
    tag = "h525400aa0001"
    assert f"--dhcp-host={MAC},198.19.0.50,set:{tag}" in cmd
    assert f"--dhcp-boot=tag:{tag},pxelinux.0" in cmd
    assert f"--dhcp-boot=tag:!{tag},tag:!ipxe,tag:efi,ipxe.efi" in cmd
    assert "--dhcp-boot=pxelinux.0" not in cmd  # the rules replace the single boot file
    assert "--enable-tftp" in cmd and f"--tftp-root={tmp_path}" in cmd


def test_a_missing_tool_names_its_package() -> None:
    with pytest.raises(ToolMissing, match=r"not-a-tool-xyz not installed: apt-get install not-"):
        require("sh", "not-a-tool-xyz")
    assert "apt-get install dnsmasq-base" in str(ToolMissing("dnsmasq"))
