"""pxed.Server as a library: start, lease database lock, shutdown (loopback only)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

import pxed
from pxed.config import Config, SubnetConfig, TftpConfig
from pxed.errors import ConfigError


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
