"""`pxed explain`: its decisions across host entry, arch 0/7/9, iPXE, unknown arch, and that
they are the DHCP core's own (the same DISCOVER fed to DhcpServer offers the same file)."""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import pytest

from pxed.boot import ConfigBootPolicy
from pxed.config import Config
from pxed.config.load import build_config
from pxed.dhcp.options import OptionCode
from pxed.dhcp.packet import build, parse
from pxed.dhcp.server import DhcpServer, Source
from pxed.explain import Client, Explanation, as_text, discover, explain, main
from pxed.leases import LeaseTable
from pxed.netinfo import InterfaceInfo

HOST_MAC = "52:54:00:12:34:56"
OTHER_MAC = "52:54:00:aa:bb:01"
PXS0 = InterfaceInfo("pxs0", "02:00:00:00:00:01", (IPv4Interface("198.19.0.1/16"),), 1500)


def lookup(name: str) -> InterfaceInfo | None:
    return PXS0 if name == "pxs0" else None


def config_data(root: Path, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "server": {"interfaces": ["pxs0"], "mode": "dhcp"},
        "dhcp": {
            "range": "198.19.1.0-198.19.1.99",
            "host": [{"mac": HOST_MAC, "ip": "198.19.0.50", "hostname": "node1", "boot": "menu.0"}],
        },
        "boot": {"uefi_arm64": "arm/ipxe.efi"},
        "tftp": {"root": str(root)},
    }
    for section, values in extra.items():
        data.setdefault(section, {}).update(values)
    return data


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "tftp"
    (root / "arm").mkdir(parents=True)
    for name in ("pxelinux.0", "ipxe.efi", "boot.ipxe", "menu.0", "arm/ipxe.efi"):
        (root / name).write_bytes(b"x")
        (root / name).chmod(0o644)
    return root


@pytest.fixture
def config(root: Path) -> Config:
    return build_config(config_data(root), lookup=lookup)


def core_offer(config: Config, client: Client) -> str | None:
    """The boot file DhcpServer itself offers for explain's DISCOVER (None: no file)."""
    sub = config.subnets[0]
    reserved = {
        h.ip: b"\x01" + bytes.fromhex(h.mac.replace(":", ""))
        for h in config.hosts
        if h.ip is not None
    }
    table = LeaseTable(sub.network, sub.ranges, reserved)
    server = DhcpServer(
        config, {"pxs0": PXS0}, {str(sub.network): table}, ConfigBootPolicy(config.boot)
    )
    out = server.receive(build(discover(client)), Source("pxs0", IPv4Address(0), 68), 1e9)
    assert len(out.replies) == 1
    value = parse(out.replies[0].data).options.get(OptionCode.BOOTFILE_NAME)
    return value.decode() if value is not None else None


CASES = [
    # (client, boot file, reason, words the rule must contain)
    (Client(HOST_MAC, arch=7), "menu.0", "host", "[[dhcp.host]] 52:54:00:12:34:56"),
    (Client(HOST_MAC), "menu.0", "host", "host entry"),
    (Client(OTHER_MAC, arch=0), "pxelinux.0", "bios", "[boot] bios: client arch 0"),
    (Client(OTHER_MAC, arch=7), "ipxe.efi", "uefi_x64", "[boot] uefi_x64: client arch 7"),
    (Client(OTHER_MAC, arch=9), "ipxe.efi", "uefi_x64", "[boot] uefi_x64: client arch 9"),
    (Client(OTHER_MAC, arch=11), "arm/ipxe.efi", "uefi_arm64", "client arch 11"),
    (Client(OTHER_MAC, arch=7, user_class="iPXE"), "boot.ipxe", "ipxe", "[boot] ipxe"),
    (Client(OTHER_MAC, user_class="iPXE"), "boot.ipxe", "ipxe", "is iPXE"),
    (Client(OTHER_MAC, arch=42), "pxelinux.0", "bios", "arch 42 is not one pxed has"),
]


@pytest.mark.parametrize(("client", "file", "reason", "rule"), CASES)
def test_decisions_are_the_cores(
    config: Config, root: Path, client: Client, file: str, reason: str, rule: str
) -> None:
    got = explain(config, client, lookup=lookup)
    assert (got.boot_file, got.reason) == (file, reason)
    assert rule in (got.rule or ""), got.rule
    assert got.tftp_path == str(root / file) and got.served is True
    assert got.next_server == "198.19.0.1" and "pxs0" in (got.next_server_from or "")
    assert core_offer(config, client) == file


def test_reserved_host_gets_its_address_and_name(config: Config) -> None:
    got = explain(config, Client(HOST_MAC, arch=0), lookup=lookup)
    assert (got.ip, got.hostname) == ("198.19.0.50", "node1")
    assert "reserved" in (got.address or "")
    other = explain(config, Client(OTHER_MAC, arch=0), lookup=lookup)
    assert other.ip is None and "198.19.1.0-198.19.1.99" in (other.address or "")


def test_plain_client_gets_an_address_and_no_file(config: Config) -> None:
    got = explain(config, Client(OTHER_MAC), lookup=lookup)
    assert got.answered and got.boot_file is None
    assert "address only" in (got.rule or "")
    assert core_offer(config, Client(OTHER_MAC)) is None


def test_arch_without_a_boot_file_says_which_key(root: Path) -> None:
    config = build_config(config_data(root, boot={"uefi_arm64": None}), lookup=lookup)
    got = explain(config, Client(OTHER_MAC, arch=11), lookup=lookup)
    assert got.boot_file is None and "[boot] uefi_arm64 is not set" in (got.rule or "")
    assert core_offer(config, Client(OTHER_MAC, arch=11)) is None


def test_vendor_class_given_replaces_the_firmware_one(config: Config) -> None:
    got = explain(config, Client(OTHER_MAC, arch=7, vendor_class="MSFT 5.0"), lookup=lookup)
    assert got.vendor_class == "MSFT 5.0"
    assert got.boot_file is None  # not PXE firmware, no iPXE, asks for no file: no boot file
    assert explain(config, Client(OTHER_MAC, arch=7), lookup=lookup).vendor_class == (
        "PXEClient:Arch:00007:UNDI:003016"
    )


def test_known_only_and_proxy_mode(root: Path) -> None:
    known = build_config(config_data(root, dhcp={"known_only": True}), lookup=lookup)
    assert not explain(known, Client(OTHER_MAC, arch=0), lookup=lookup).answered
    assert explain(known, Client(HOST_MAC, arch=0), lookup=lookup).boot_file == "menu.0"
    proxy = build_config(config_data(root, server={"mode": "proxy"}), lookup=lookup)
    plain = explain(proxy, Client(OTHER_MAC), lookup=lookup)
    assert not plain.answered and "ProxyDHCP" in (plain.why or "")
    pxe = explain(proxy, Client(OTHER_MAC, arch=7), lookup=lookup)
    assert pxe.boot_file == "ipxe.efi" and "ProxyDHCP" in (pxe.address or "")


def test_missing_file_is_shown_not_served(root: Path, config: Config) -> None:
    (root / "ipxe.efi").unlink()
    got = explain(config, Client(OTHER_MAC, arch=7), lookup=lookup)
    assert got.boot_file == "ipxe.efi" and got.served is False
    assert "tftp" in as_text(got) and "NOT served" in as_text(got)


@pytest.mark.skipif(os.geteuid() != 0, reason="the world-readable rule applies as root only")
def test_file_not_world_readable_is_not_served(root: Path, config: Config) -> None:
    (root / "pxelinux.0").chmod(0o600)
    got = explain(config, Client(OTHER_MAC, arch=0), lookup=lookup)
    assert got.served is False and "world-readable" in (got.tftp_path or "")


def test_per_client_directory_wins(root: Path) -> None:
    config = build_config(config_data(root, tftp={"per_client": "mac"}), lookup=lookup)
    own = root / "52-54-00-aa-bb-01"
    own.mkdir()
    (own / "boot.ipxe").write_bytes(b"own")
    (own / "boot.ipxe").chmod(0o644)
    got = explain(config, Client(OTHER_MAC, user_class="iPXE"), lookup=lookup)
    assert got.tftp_path == str(own / "boot.ipxe")


def test_text_lines(config: Config) -> None:
    text = as_text(explain(config, Client(HOST_MAC, arch=7, user_class="iPXE"), lookup=lookup))
    lines = dict(line.split(None, 1) if " " in line else (line, "") for line in text.splitlines())
    assert lines["boot"].strip() == "file    menu.0 (over TFTP)"
    assert "198.19.0.50" in lines["address"]
    # menu.0 is not an iPXE binary: no chainload warning
    assert "warning" not in lines


def test_a_machine_with_a_profile_is_shown_its_script_and_url(root: Path) -> None:
    (root / "linux").write_bytes(b"k")
    (root / "linux").chmod(0o644)
    data = config_data(root, http={"listen": "0.0.0.0:8080"})
    data["profile"] = [{"name": "inst", "kernel": "linux", "default": True}]
    config = build_config(data, lookup=lookup)
    got = explain(config, Client(OTHER_MAC, user_class="iPXE"), lookup=lookup)
    d = OTHER_MAC.replace(":", "-")
    assert (got.profile, got.reason, got.transport) == ("inst", "profile", "http")
    assert got.boot_file == f"http://198.19.0.1:8080/pxed/{d}/boot.ipxe", got
    assert got.served and "rendered for it from profile inst" in (got.tftp_path or "")
    firmware = explain(config, Client(OTHER_MAC, arch=0), lookup=lookup)
    assert (firmware.boot_file, firmware.transport, firmware.profile) == (
        "pxelinux.0", "tftp", "inst"
    )


def test_uefi_http_boot_gets_a_url_or_nothing(root: Path) -> None:
    client = Client(OTHER_MAC, arch=16, vendor_class="HTTPClient:Arch:00016:UNDI:003001")
    without = explain(build_config(config_data(root), lookup=lookup), client, lookup=lookup)
    assert without.boot_file is None and "pxed serves no HTTP" in (without.rule or ""), without
    data = config_data(root, http={"listen": "0.0.0.0:8080"})
    got = explain(build_config(data, lookup=lookup), client, lookup=lookup)
    assert (got.boot_file, got.transport) == ("http://198.19.0.1:8080/ipxe.efi", "http"), got


def test_chainload_loop_warning(root: Path) -> None:
    data = config_data(root)
    data["dhcp"]["host"][0]["boot"] = "ipxe.efi"
    config = build_config(data, lookup=lookup)
    got = explain(config, Client(HOST_MAC, arch=7, user_class="iPXE"), lookup=lookup)
    assert got.boot_file == "ipxe.efi" and got.warnings and "loop" in got.warnings[0]


def write_toml(path: Path, root: Path) -> Path:
    path.write_text(
        "[server]\ninterfaces = ['pxs0']\nmode = 'dhcp'\n"
        "[dhcp]\nrange = '198.19.1.0-198.19.1.99'\n"
        f"[[dhcp.host]]\nmac = '{HOST_MAC}'\nip = '198.19.0.50'\nboot = 'menu.0'\n"
        f"[tftp]\nroot = '{root}'\n"
    )
    return path


def test_main_json(tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_toml(tmp_path / "pxed.toml", root)
    assert main(["52-54-00-12-34-56", "--arch", "9", "--config", str(conf), "--json"], lookup) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["boot_file"] == "menu.0" and got["reason"] == "host"
    assert got["ip"] == "198.19.0.50" and got["served"] is True
    assert set(got) == set(Explanation.__dataclass_fields__)


def test_main_refused_configuration_is_explained_with_the_refusal(
    tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write_toml(tmp_path / "pxed.toml", root)
    (root / "menu.0").unlink()  # a host's boot file missing: the daemon refuses to start
    assert main([HOST_MAC, "--config", str(conf)], lookup) == 0
    out = capsys.readouterr().out
    assert "pxed would refuse this configuration" in out and "NOT served" in out


def test_main_bad_input(tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_toml(tmp_path / "pxed.toml", root)
    assert main(["not-a-mac", "--config", str(conf)], lookup) == 1
    assert main([HOST_MAC, "--arch", "70000", "--config", str(conf)], lookup) == 1
    assert main([HOST_MAC, "--config", str(tmp_path / "missing.toml")], lookup) == 1
    err = capsys.readouterr().err
    assert "not a MAC address" in err and "missing.toml" in err
