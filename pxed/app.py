"""pxed.Server: wires configuration, the lease store, the protocol cores and their sockets.

    async with pxed.Server(config) as server:
        await server.serve_forever()

The command line is a thin layer over this; other programs run it the same way.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

from pxed import __version__
from pxed.boot import BootPolicy, ConfigBootPolicy
from pxed.config import Config
from pxed.dhcp.proxy import PROXY_PORT, ProxyServer
from pxed.dhcp.server import DhcpServer
from pxed.errors import ConfigError, PxedError
from pxed.leases import LeaseStore, LeaseTable
from pxed.net.commit import GroupCommitter
from pxed.net.dhcp import DhcpEndpoint
from pxed.net.probe import ForeignServerWatcher, probe
from pxed.netinfo import InterfaceInfo, interface_info

log = structlog.get_logger("pxed")

LEASE_DB = "leases.sqlite3"
LOCK_FILE = "pxed.lock"
PRUNE_AFTER = 30 * 86400  # seconds a lease stays on record after it ended
PRUNE_EVERY = 3600
NEIGHBOUR_TTL = 10.0  # seconds a MAC read from the ARP table is reused for the same address
NEIGHBOURS_MAX = 4096


def neighbour_mac(ip: str, table: Path = Path("/proc/net/arp")) -> str | None:
    """The MAC the kernel's ARP table has for ip, if any."""
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # IP address, HW type, Flags, HW address, Mask, Device; flags 0x0 = incomplete
        if len(fields) >= 4 and fields[0] == ip and fields[2] != "0x0":
            return fields[3].lower()
    return None


class Server:
    """One pxed instance: DHCP on the configured interfaces and the TFTP server."""

    def __init__(
        self,
        config: Config,
        *,
        policy: BootPolicy | None = None,
        lookup: Any = interface_info,
    ) -> None:
        self.config = config
        self.policy = policy or ConfigBootPolicy(config.boot)
        self._lookup = lookup
        self.interfaces: dict[str, InterfaceInfo] = {}
        self.store: LeaseStore | None = None
        self.committer: GroupCommitter | None = None
        self.tables: dict[str, LeaseTable] = {}
        self.arp_table = Path("/proc/net/arp")
        self._neighbours: dict[str, tuple[str, float]] = {}
        """ip -> (MAC from the ARP table, until when it is trusted): mac_for's cache."""
        self.dhcp: DhcpServer | None = None
        self.proxy: ProxyServer | None = None
        self.endpoints: list[Any] = []
        self.mode: str = config.mode if config.dhcp_enabled else "tftp-only"
        """The mode running: "dhcp" or "proxy" once auto mode has decided."""
        self._stopped = asyncio.Event()
        self._lock_fd: int | None = None
        self._prune_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        cfg = self.config
        problems = []
        for name in cfg.interfaces:
            info = self._lookup(name)
            if info is None or not info.addresses:
                problems.append(f"interface {name}: not found or has no IPv4 address")
            else:
                self.interfaces[name] = info
        if problems:
            raise ConfigError(problems)
        try:
            if cfg.dhcp_enabled:
                self.mode = await self._resolve_mode()
                if self.mode == "proxy":
                    await self._start_proxy()
                elif cfg.subnets:
                    await self._start_dhcp()
            if cfg.tftp.enabled:
                await self._start_tftp()
        except BaseException:
            await self.close()
            raise
        tftp: dict[str, Any] = {"tftp_root": None}
        if cfg.tftp.enabled:
            # What changes where clients' files come from and which ports transfers use.
            tftp["tftp_root"] = str(cfg.tftp.root)
            if cfg.tftp.port_range is not None:
                tftp["tftp_port_range"] = "{}-{}".format(*cfg.tftp.port_range)
            if cfg.tftp.per_client is not None:
                tftp["tftp_per_client"] = cfg.tftp.per_client
        log.info(
            "pxed.ready",
            version=__version__,
            interfaces=list(cfg.interfaces),
            mode=self.mode,
            subnets=[str(s.network) for s in cfg.subnets] if cfg.dhcp_enabled else [],
            leases=sum(len(t) for t in self.tables.values()),
            **tftp,
        )

    async def _resolve_mode(self) -> str:
        """Auto mode: probe every interface; any other server's offer means ProxyDHCP."""
        cfg = self.config
        if cfg.mode != "auto":
            return cfg.mode
        results = await asyncio.gather(
            *(probe(info, cfg.probe_timeout) for info in self.interfaces.values())
        )
        servers = sorted({str(s) for found in results for s in found})
        if servers:
            log.info(
                "pxed.mode", mode="proxy", reason="another DHCP server answered", servers=servers
            )
            return "proxy"
        log.info(
            "pxed.mode",
            mode="dhcp",
            reason="no other DHCP server answered the probe",
            waited=cfg.probe_timeout,
        )
        return "dhcp"

    async def _start_proxy(self) -> None:
        self.proxy = ProxyServer(self.config, self.interfaces, self.policy)
        for name in self.config.interfaces:
            for port in (self.config.dhcp_port, PROXY_PORT):
                endpoint = DhcpEndpoint(self.proxy, None, name, port)
                await endpoint.start()
                self.endpoints.append(endpoint)

    async def _start_dhcp(self) -> None:
        cfg = self.config
        reserved_by_subnet: dict[str, dict[IPv4Address, bytes]] = {}
        for sub in cfg.subnets:
            reserved: dict[IPv4Address, bytes] = {}
            for host in cfg.hosts:
                if host.ip is not None and host.ip in sub.network:
                    # Reservations are keyed by MAC (hardware type 1 + chaddr), the identity a
                    # PXE ROM presents; see client_key().
                    reserved[host.ip] = b"\x01" + bytes.fromhex(host.mac.replace(":", ""))
            reserved_by_subnet[str(sub.network)] = reserved
            self.tables[str(sub.network)] = LeaseTable(sub.network, sub.ranges, reserved)
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_state_dir()
        self.store = LeaseStore(cfg.state_dir / LEASE_DB)
        self.store.open()
        self.committer = GroupCommitter(self.store)
        self._prune_task = asyncio.create_task(self._prune_loop())
        leases = self.store.load()
        for table in self.tables.values():
            table.load(leases)
        self.dhcp = DhcpServer(cfg, self.interfaces, self.tables, self.policy)
        for name in cfg.interfaces:
            endpoint = DhcpEndpoint(self.dhcp, self.committer, name, cfg.dhcp_port)
            await endpoint.start()
            self.endpoints.append(endpoint)
        own = {a.ip for info in self.interfaces.values() for a in info.addresses}
        for info in self.interfaces.values():
            watcher = ForeignServerWatcher(info, own)
            await watcher.start()
            self.endpoints.append(watcher)

    async def _start_tftp(self) -> None:
        from pxed.net.tftp import TftpEndpoint

        targets: list[tuple[str, str | None]] = []
        for name, info in self.interfaces.items():
            assert info.primary is not None
            targets.append((str(info.primary.ip), name))
        if not targets:
            targets.append(("0.0.0.0", None))
        for host, iface in targets:
            endpoint = TftpEndpoint(
                self.config.tftp, host, interface=iface, mac_lookup=self.mac_for
            )
            await endpoint.start()
            self.endpoints.append(endpoint)

    def _lock_state_dir(self) -> None:
        """One daemon per lease database: two would hand out the same addresses."""
        path = self.config.state_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                [f"state_dir {self.config.state_dir}: another pxed is already using it"]
            ) from None
        self._lock_fd = fd

    async def _prune_loop(self) -> None:
        """Forget leases long dead. Recently expired or released ones stay, so that a
        returning client gets its previous address back (RFC 2131 §4.3.1)."""
        while True:
            if self.store is not None and self.committer is not None:
                try:
                    gone = await self.committer.run(self.store.prune, time.time() - PRUNE_AFTER)
                    if gone:
                        log.info("leases.pruned", count=gone)
                except PxedError as exc:
                    log.warning("leases.prune_failed", error=str(exc))
            await asyncio.sleep(PRUNE_EVERY)

    def mac_for(self, ip: str) -> str | None:
        """The MAC behind ip, for TFTP's log lines: our lease, else the kernel's neighbour
        table (ProxyDHCP and TFTP-only mode give no leases, but the client just talked to us).
        """
        try:
            addr = IPv4Address(ip)
        except ValueError:
            return None
        for table in self.tables.values():
            lease = table.by_ip(addr)
            if lease is not None:
                return lease.mac
        # Reading the ARP table costs more than the rest of a small file's transfer; a
        # booting client fetches a dozen files in a few seconds from the same address.
        now = time.monotonic()
        cached = self._neighbours.get(ip)
        if cached is not None and cached[1] > now:
            return cached[0]
        mac = neighbour_mac(ip, self.arp_table)
        if mac is not None:  # an address not (yet) in the table is asked again next time
            if len(self._neighbours) > NEIGHBOURS_MAX:
                self._neighbours.clear()
            self._neighbours[ip] = (mac, now + NEIGHBOUR_TTL)
        return mac

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    def stop(self) -> None:
        """Ask serve_forever() to return (signal handlers call this)."""
        self._stopped.set()

    async def close(self) -> None:
        if self._prune_task is not None:
            self._prune_task.cancel()
            self._prune_task = None
        # Stop taking requests, let the ACKs waiting on the last transaction go, then close.
        for endpoint in self.endpoints:
            if isinstance(endpoint, DhcpEndpoint):
                endpoint.stop_reading()
        if self.committer is not None:
            await self.committer.close()
            self.committer = None
        for endpoint in reversed(self.endpoints):
            try:
                await endpoint.close()
            except Exception:
                log.exception("pxed.close_error", endpoint=type(endpoint).__name__)
        self.endpoints.clear()
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        self._stopped.set()
