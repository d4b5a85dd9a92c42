"""The daemon layer without a network: sd_notify's datagrams, what a reload restarts, a
reload's carry-over of leases and offers, a refused reload (loopback, port 0)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

import pxed
from pxed import sdnotify
from pxed.config import Config, HostConfig, SubnetConfig, TftpConfig
from pxed.dhcp.server import reservation_key
from pxed.errors import ConfigError
from pxed.leases import LeaseState, LeaseTable
from pxed.net.dhcp import DhcpEndpoint
from pxed.reload import plan
from pxed.service import Service

NET = IPv4Network("127.0.0.0/8")
POOL = ((IPv4Address("127.0.9.1"), IPv4Address("127.0.9.9")),)
MAC = "52:54:00:12:34:56"


class NotifySocket:
    """What systemd listens on: a datagram socket whose path is $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)

    def messages(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return out
            out.append(dict(line.split("=", 1) for line in data.decode().splitlines()))


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    path = tmp_path / "notify"
    sock = NotifySocket(path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.sock.close()


def loopback(state: Path, **changes: object) -> Config:
    sub = SubnetConfig(network=NET, ranges=POOL, interface="lo")
    cfg = Config(
        interfaces=("lo",),
        mode="dhcp",
        state_dir=state,
        subnets=(sub,),
        tftp=TftpConfig(enabled=False),
        dhcp_port=0,
    )
    return replace(cfg, **changes)  # type: ignore[arg-type]


# -- sd_notify ----------------------------------------------------------------------------


def test_notify_sends_one_datagram_with_a_field_a_line(notify_socket: NotifySocket) -> None:
    assert sdnotify.notify("READY=1", "STATUS=dhcp: 0 lease record(s)")
    assert notify_socket.messages() == [{"READY": "1", "STATUS": "dhcp: 0 lease record(s)"}]


def test_notify_without_systemd_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.notify("READY=1")


def test_reloading_carries_the_monotonic_clock(notify_socket: NotifySocket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading()
    ((msg,),) = [notify_socket.messages()]
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after


def test_watchdog_interval_is_half_of_what_systemd_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    assert sdnotify.watchdog_interval() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert sdnotify.watchdog_interval() is None


async def test_the_service_tells_systemd_ready_reloading_status_stopping(
    tmp_path: Path, notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    server = pxed.Server(loopback(tmp_path))
    loads: list[Config] = []

    def load(notes: list[str], warnings: list[str]) -> Config:
        loads.append(loopback(tmp_path, offer_hold=30.0))
        return loads[-1]

    service = Service(server, load)
    task = asyncio.create_task(service.run())
    for _ in range(100):
        await asyncio.sleep(0.02)
        if server.dhcp is not None:
            break
    await asyncio.sleep(0.2)
    assert await service.reload()
    assert server.config.offer_hold == 30.0
    service.stop()
    assert await task == 0
    messages = notify_socket.messages()
    kinds = [next(iter(m)) for m in messages if "WATCHDOG" not in m]
    assert kinds == ["READY", "RELOADING", "READY", "STOPPING"]
    ready = messages[0]
    assert ready["STATUS"] == "dhcp: 0 lease record(s), 0 TFTP transfer(s) running"
    assert any(m == {"WATCHDOG": "1"} for m in messages)
    reloading = next(m for m in messages if "RELOADING" in m)
    assert int(reloading["MONOTONIC_USEC"]) > 0


async def test_a_refused_reload_logs_each_problem_and_keeps_serving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = pxed.Server(loopback(tmp_path))

    def load(notes: list[str], warnings: list[str]) -> Config:
        raise ConfigError(["[dhcp] lease_time: 'soon' is not a duration", "[boot] bios: x"])

    service = Service(server, load)
    async with server:
        before = server.dhcp
        assert not await service.reload()
        assert server.dhcp is before
    err = capsys.readouterr()
    text = err.out + err.err
    assert "pxed.reload_refused" in text
    assert "'soon' is not a duration" in text and "[boot] bios: x" in text


# -- what a reload restarts ---------------------------------------------------------------


def test_plan_a_reservation_change_restarts_nothing(tmp_path: Path) -> None:
    old = loopback(tmp_path)
    new = replace(old, hosts=(HostConfig(mac=MAC, ip=IPv4Address("127.0.9.50")),))
    p = plan(old, new)
    assert p.changed == ("hosts",) and not p.problems
    assert not (p.restart_dhcp or p.restart_tftp or p.added or p.removed)


def test_plan_ports_and_interfaces_restart_their_endpoints(tmp_path: Path) -> None:
    old = loopback(tmp_path, tftp=TftpConfig(port=69))
    p = plan(old, replace(old, dhcp_port=1067))
    assert p.restart_dhcp and not p.restart_tftp
    p = plan(old, replace(old, tftp=TftpConfig(port=1069)))
    assert p.restart_tftp and not p.restart_dhcp and p.changed == ("tftp.port",)
    p = plan(old, replace(old, tftp=TftpConfig(port=69, single_port=True)))
    assert p.restart_tftp
    # Settings read per request are taken over in place: no socket changes.
    p = plan(old, replace(old, tftp=TftpConfig(port=69, root=tmp_path, max_blksize=1468)))
    assert not p.restart_tftp and p.changed == ("tftp.root", "tftp.max_blksize")
    p = plan(old, replace(old, interfaces=("lo", "br0")))
    assert p.added == ("br0",) and not p.removed and not p.problems
    p = plan(replace(old, interfaces=("lo", "br0")), old)
    assert p.removed == ("br0",)


def test_plan_refuses_what_needs_a_restart(tmp_path: Path) -> None:
    old = loopback(tmp_path)
    p = plan(old, replace(old, mode="proxy", state_dir=tmp_path / "other"))
    assert p.problems == (
        "[server] mode: changing it (dhcp -> proxy) needs a restart",
        f"[server] state_dir: changing it ({tmp_path} -> {tmp_path / 'other'}) needs a restart",
    )
    p = plan(old, replace(old, interfaces=()))
    assert p.problems == (
        "[server] interfaces: going between none and some (lo -> none) needs a restart",
    )
    assert plan(old, old).noop


# -- lease tables across a reload ---------------------------------------------------------


def test_a_reshaped_table_keeps_leases_and_offers() -> None:
    net = IPv4Network("198.19.0.0/24")
    pool = ((IPv4Address("198.19.0.100"), IPv4Address("198.19.0.200")),)
    table = LeaseTable(net, pool)
    bound, held, other = b"\x01aaaaaa", b"\x01bbbbbb", b"\x01cccccc"
    ip = table.offer(bound, "aa", None, 1000.0, 60)
    assert ip is not None
    table.bind(bound, "aa", ip, None, 1000.0, 3600)
    offered = table.offer(held, "bb", None, 1000.0, 60)
    taken = table.offer(other, "cc", None, 1000.0, 60)
    assert offered is not None and taken is not None
    # The new configuration reserves the address held for `other` for someone else.
    new = table.reshaped(pool, {taken: b"\x01dddddd"})
    lease = new.by_client(bound)
    assert lease is not None and lease.ip == ip and lease.state is LeaseState.ACTIVE
    assert new.offer(held, "bb", None, 1001.0, 60) == offered  # its offer still stands
    assert new.holding(taken, 1001.0) is None  # dropped: reserved for another now
    assert new.offer(other, "cc", None, 1001.0, 60) not in (ip, offered, taken)


async def test_reload_a_reservation_keeps_the_leases_and_changes_the_address(
    tmp_path: Path,
) -> None:
    first, second = IPv4Address("127.0.9.50"), IPv4Address("127.0.9.60")
    cfg = loopback(tmp_path, hosts=(HostConfig(mac=MAC, ip=first),))
    async with pxed.Server(cfg) as server:
        assert server.dhcp is not None
        (table,) = server.tables.values()
        other = b"\x01\x52\x54\x00\x00\x00\x01"
        ip = table.offer(other, "52:54:00:00:00:01", None, time.time(), 60)
        assert ip is not None
        table.bind(other, "52:54:00:00:00:01", ip, None, time.time(), 3600)
        endpoints = [e for e in server._all_endpoints() if isinstance(e, DhcpEndpoint)]
        sockets = [e.sock for e in endpoints]
        change = await server.reload(replace(cfg, hosts=(HostConfig(mac=MAC, ip=second),)))
        assert change.changed == ("hosts",)
        (table,) = server.tables.values()
        lease = table.by_client(other)
        assert lease is not None and lease.ip == ip  # the lease survived
        key = reservation_key(MAC)
        assert table.offer(key, MAC, None, time.time(), 60) == second
        # The same sockets, now feeding the new core.
        assert [e.sock for e in endpoints] == sockets
        assert all(e.core is server.dhcp for e in endpoints)


async def test_reload_refuses_a_bad_config_and_keeps_the_old(tmp_path: Path) -> None:
    cfg = loopback(tmp_path)
    async with pxed.Server(cfg) as server:
        core = server.dhcp
        bad = replace(cfg, hosts=(HostConfig(mac=MAC, ip=IPv4Address("10.0.0.5")),))
        with pytest.raises(ConfigError) as info:
            await server.reload(bad)
        assert info.value.problems == [
            "[[dhcp.host]] 52:54:00:12:34:56: address 10.0.0.5 is outside every subnet "
            "(127.0.0.0/8)"
        ]
        with pytest.raises(ConfigError):
            await server.reload(replace(cfg, mode="proxy"))
        assert server.config == cfg and server.dhcp is core


async def test_reload_adds_and_removes_an_interface(tmp_path: Path) -> None:
    cfg = loopback(tmp_path)
    async with pxed.Server(cfg) as server:
        change = await server.reload(replace(cfg, interfaces=("lo", "nosuch0")))
        assert change.added == ("nosuch0",)
        # Not there yet: waited for, as at start-up; lo's sockets were left alone.
        assert server.addresses()["nosuch0"]["state"] == "missing"
        assert server._watcher is not None and server._watcher.names == ("lo", "nosuch0")
        lo = list(server._by_interface["lo"])
        change = await server.reload(cfg)
        assert change.removed == ("nosuch0",)
        assert server._by_interface["lo"] == lo
        assert set(server.addresses()) == {"lo"}


async def test_reload_while_auto_mode_waits_for_an_interface(tmp_path: Path) -> None:
    cfg = Config(interfaces=("nosuch0",), state_dir=tmp_path, tftp=TftpConfig(enabled=False))
    async with pxed.Server(cfg) as server:
        assert server.mode == "waiting"
        change = await server.reload(replace(cfg, offer_hold=30.0))
        assert change.changed == ("offer_hold",)
        assert server.mode == "waiting" and server.config.offer_hold == 30.0
