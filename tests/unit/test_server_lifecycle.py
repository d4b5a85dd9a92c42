"""pxed.Server as a library: start, lease database lock, shutdown (loopback only)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

import pxed
from pxed.config import BootConfig, Config, HostConfig, SubnetConfig, TftpConfig
from pxed.errors import ConfigError
from pxed.netinfo import InterfaceInfo


def loopback_config(state: Path) -> Config:
    sub = SubnetConfig(
        network=IPv4Network("127.0.0.0/8"),
        ranges=((IPv4Address("127.0.9.1"), IPv4Address("127.0.9.9")),),
        interface="lo",
    )
    # Port 0: the kernel picks a free port; nothing is sent anywhere.
    return Config(
        interfaces=("lo",),
        mode="dhcp",
        state_dir=state,
        subnets=(sub,),
        tftp=TftpConfig(enabled=False),
        dhcp_port=0,
    )


async def test_a_second_server_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    cfg = loopback_config(tmp_path)
    async with pxed.Server(cfg) as first:
        assert first.mode == "dhcp"
        with pytest.raises(ConfigError) as info:
            await pxed.Server(cfg).start()
        assert "another pxed is already using it" in info.value.problems[0]
    # Once the first has stopped, the directory is free again.
    async with pxed.Server(cfg):
        pass


async def test_a_missing_interface_is_waited_for_not_refused(tmp_path: Path) -> None:
    cfg = Config(interfaces=("nosuch0",), state_dir=tmp_path, tftp=TftpConfig(enabled=False))
    async with pxed.Server(cfg) as server:
        # Auto mode decides once an interface appears; nothing is served meanwhile.
        assert server.mode == "waiting"
        assert server.addresses() == {"nosuch0": {"state": "missing", "dhcp": [], "tftp": []}}


def test_a_config_built_in_code_is_refused_with_the_lines_of_pxed_check(tmp_path: Path) -> None:
    """What load_config (so `pxed check`) refuses in a TOML file, Server refuses in a Config
    built in code, with the same lines: here a host outside every subnet and a boot file
    missing under the TFTP root (both found only after parsing)."""
    root = tmp_path / "tftp"
    root.mkdir()
    toml = tmp_path / "pxed.toml"
    toml.write_text(
        f'[server]\ninterfaces = ["lo"]\nmode = "dhcp"\nstate_dir = "{tmp_path}"\n'
        '[dhcp]\nnetwork = "127.0.0.0/8"\nrange = "127.0.9.1-127.0.9.9"\n'
        '[[dhcp.host]]\nmac = "52:54:00:12:34:56"\nip = "10.0.0.5"\n'
        f'[boot]\nbios = "missing.0"\n[tftp]\nroot = "{root}"\n'
    )
    lo = InterfaceInfo("lo", None, (IPv4Interface("127.0.0.1/8"),), 65536)
    with pytest.raises(ConfigError) as loaded:
        pxed.load_config(toml, lookup={"lo": lo}.get)
    built = Config(
        interfaces=("lo",),
        mode="dhcp",
        state_dir=tmp_path,
        subnets=loopback_config(tmp_path).subnets,
        hosts=(HostConfig(mac="52:54:00:12:34:56", ip=IPv4Address("10.0.0.5")),),
        boot=BootConfig(bios="missing.0"),
        tftp=TftpConfig(root=root),
        dhcp_port=0,
    )
    with pytest.raises(ConfigError) as refused:
        pxed.Server(built)
    assert refused.value.problems == loaded.value.problems
    assert refused.value.problems == [
        "[[dhcp.host]] 52:54:00:12:34:56: address 10.0.0.5 is outside every subnet (127.0.0.0/8)",
        f"[boot] bios: 'missing.0' does not exist under the TFTP root {root}",
    ]


def test_missing_default_boot_files_are_left_out_as_by_load_config(tmp_path: Path) -> None:
    root = tmp_path / "tftp"
    root.mkdir()
    (root / "ipxe.efi").write_bytes(b"x")
    cfg = Config(interfaces=("lo",), mode="proxy", state_dir=tmp_path, tftp=TftpConfig(root=root))
    server = pxed.Server(cfg)
    assert (server.config.boot.bios, server.config.boot.uefi_x64) == (None, "ipxe.efi")
    assert server.notes == [
        f"default boot file (bios): 'pxelinux.0' does not exist under the TFTP root {root}; "
        "not offered",
        f"default boot file (ipxe): 'boot.ipxe' does not exist under the TFTP root {root}; "
        "not offered",
    ]


@pytest.mark.parametrize(
    ("first", "last", "problem"),
    [
        ("127.0.0.1", "127.0.0.9", "includes pxed's own address 127.0.0.1"),
        ("127.0.9.1", "127.1.0.0", "is not inside the subnet 127.0.0.0/24"),
    ],
)
async def test_a_pool_refused_by_pxed_check_is_refused_by_server(
    tmp_path: Path, first: str, last: str, problem: str
) -> None:
    """A subnet built in code is named by its network, where the TOML's is named by its table."""
    sub = SubnetConfig(
        network=IPv4Network("127.0.0.0/24"),
        ranges=((IPv4Address(first), IPv4Address(last)),),
        interface="lo",
    )
    cfg = Config(
        interfaces=("lo",),
        mode="dhcp",
        state_dir=tmp_path,
        subnets=(sub,),
        tftp=TftpConfig(enabled=False),
        dhcp_port=0,
    )
    with pytest.raises(ConfigError) as info:
        await pxed.Server(cfg).start()  # the own address is known once start() reads lo
    assert info.value.problems == [f"subnet 127.0.0.0/24 range: {first}-{last} {problem}"]


def test_neighbour_table_lookup(tmp_path: Path) -> None:
    from pxed.app import neighbour_mac

    arp = tmp_path / "arp"
    arp.write_text(
        "IP address       HW type     Flags       HW address            Mask     Device\n"
        "198.19.2.7       0x1         0x2         52:54:00:AA:BB:01     *        pxs0\n"
        "198.19.2.8       0x1         0x0         00:00:00:00:00:00     *        pxs0\n"
    )
    assert neighbour_mac("198.19.2.7", arp) == "52:54:00:aa:bb:01"
    assert neighbour_mac("198.19.2.8", arp) is None  # incomplete entry
    assert neighbour_mac("198.19.2.9", arp) is None


def test_mac_for_reads_the_arp_table_once_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pxed.app

    header = "IP address       HW type     Flags       HW address            Mask     Device\n"
    arp = tmp_path / "arp"
    arp.write_text(header)
    server = pxed.Server(loopback_config(tmp_path))
    server.arp_table = arp
    assert server.mac_for("198.19.2.7") is None  # not known yet: not remembered either
    arp.write_text(header + "198.19.2.7  0x1  0x2  52:54:00:aa:bb:01  *  pxs0\n")
    assert server.mac_for("198.19.2.7") == "52:54:00:aa:bb:01"
    arp.write_text(header + "198.19.2.7  0x1  0x2  52:54:00:aa:bb:02  *  pxs0\n")
    assert server.mac_for("198.19.2.7") == "52:54:00:aa:bb:01"  # within NEIGHBOUR_TTL
    monkeypatch.setattr(pxed.app, "NEIGHBOUR_TTL", 0.0)
    server._neighbours.clear()
    assert server.mac_for("198.19.2.7") == "52:54:00:aa:bb:02"
    assert server.mac_for("not an address") is None
