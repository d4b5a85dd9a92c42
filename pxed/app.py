"""pxed.Server: wires configuration, the lease store, the protocol cores and their sockets.

    async with pxed.Server(config) as server:
        await server.serve_forever()

The command line is a thin layer over this; other programs run it the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import structlog

from pxed import __version__
from pxed.boot import BootPolicy, ConfigBootPolicy
from pxed.boots.story import Boot
from pxed.boots.timeline import BOOTS_FILE, Timeline
from pxed.cluster import Balance, Membership
from pxed.config import Config, SubnetConfig
from pxed.config.check import check
from pxed.config.derive import InterfaceLookup, check_addresses, derive_subnet
from pxed.control import SOCKET_NAME, ControlServer
from pxed.dhcp.proxy import PROXY_PORT, ProxyServer
from pxed.dhcp.server import DhcpServer, reservation_key
from pxed.errors import ConfigError, PxedError, StoreUnavailable
from pxed.events import Event, EventBus, Notice, log_event
from pxed.files import FileStore, canonical
from pxed.hooks import Hook, LeaseHook, boot_job
from pxed.leases import Lease, LeaseTable
from pxed.leases.backend import Backend, open_backend
from pxed.leases.next_boot import LOCAL, BootOnceStore, boot_once_store
from pxed.metrics import REFRESH, Metrics
from pxed.net.commit import GroupCommitter
from pxed.net.dhcp import DatagramCore, DhcpEndpoint
from pxed.net.http import HttpBootServer
from pxed.net.links import Change, ChangeKind, LinkState, LinkWatcher, read_links
from pxed.net.probe import ForeignServerWatcher, ProbeOffer, probe
from pxed.netinfo import InterfaceInfo, interface_info
from pxed.profiles.select import by_name
from pxed.profiles.serve import ProfileFiles
from pxed.reload import ReloadPlan
from pxed.reload import plan as plan_reload
from pxed.tftp.server import client_dir
from pxed.web import StatusFeed, WebSite
from pxed.web.status import snapshot

if TYPE_CHECKING:
    from pxed.net.cluster import ClusterMember

log = structlog.get_logger("pxed")

LEASE_DB = "leases.sqlite3"
LOCK_FILE = "pxed.lock"
PRUNE_AFTER = 30 * 86400  # seconds a lease stays on record after it ended
PRUNE_EVERY = 3600
EXPIRY_SCAN = 5.0  # seconds between looks for bindings that ran out (dhcp.expired)
NEIGHBOUR_TTL = 10.0  # seconds a MAC read from the ARP table is reused for the same address
NEIGHBOURS_MAX = 4096
ARP_TABLE = Path("/proc/self/net/arp")
"""The kernel's ARP table: /proc/net/arp is a link to it, and the one visible under the
unit's ProcSubset=pid."""
FOLD_EVERY = 0.5  # seconds between turns of the boot timeline's events into stories


def _tftp_type() -> type[Any]:
    # pxed.net.tftp is imported when TFTP starts (see _start_tftp), not with pxed.app.
    from pxed.net.tftp import TftpEndpoint

    return TftpEndpoint


async def _listen(
    table: str, start: Callable[[str, int], Awaitable[None]], listen: tuple[str, int]
) -> None:
    """Start an HTTP listener of ``table``; one that cannot bind stops pxed in one line."""
    try:
        await start(*listen)
    except OSError as exc:
        raise PxedError(f"{table} listen {listen[0]}:{listen[1]}: {exc.strerror}") from exc


def neighbour_mac(ip: str, table: Path = ARP_TABLE) -> str | None:
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
    """One pxed instance: DHCP on the configured interfaces and the TFTP server.

    A Config with a problem `pxed check` would report is refused with the same lines
    (ConfigError): the check stage here, the own-address rule once start() has read the
    interfaces. A Config from load_config passes them again, for the price of a look at
    each boot file; one built in code gets the same words as the TOML.
    """

    def __init__(
        self,
        config: Config,
        *,
        policy: BootPolicy | None = None,
        lookup: InterfaceLookup = interface_info,
    ) -> None:
        self.notes: list[str] = []
        """What the check left out (default boot files missing under the root); logged at
        start."""
        self.config = check(config, notes=self.notes)
        self.next_boots: dict[str, str] = {}
        """Boot-once state by MAC (``pxed host MAC --next PROFILE``), kept in the lease
        database; read by DHCP's policy and the rendered files."""
        self._next_store: BootOnceStore | None = None
        self._next_set: dict[str, float] = {}
        """MAC -> when this server last changed its boot-once state (monotonic): a
        heartbeat's read of the shared table that began before the change must not undo it."""
        self.profile_files = ProfileFiles(lambda: self.config, self._lease_facts,
                                          self.next_boots.get)  # fmt: skip
        """Each machine's files rendered from its profile, for TFTP and HTTP."""
        self.policy = policy or self._default_policy(self.config)
        self._policy_given = policy is not None
        """An embedder's own policy is kept across reloads; the default one follows [boot]."""
        self.bus = EventBus([log_event])
        """The cores' decision events go here: the log, and Python subscribers (events())."""
        self.events_dropped = 0
        """Events a slow subscriber of events() did not take in time (its queue was full)."""
        self.lease_hook: LeaseHook | None = None
        self._unhook: Callable[[], None] | None = None
        self._set_lease_hook(self.config, start=False)
        self.boot_hook: Hook | None = None
        self.timeline: Timeline | None = None
        if self.config.boots.keep > 0:
            self.timeline = Timeline(
                None, self.config.boots.keep, self.config.boots.quiet, self._boot_finished
            )
            self.bus.subscribe(self.timeline)
        self._set_boot_hook(self.config, start=False)
        self.bus.subscribe(self._watch_installs)
        self.control: ControlServer | None = None
        self.reloader: Callable[[], Awaitable[tuple[bool, list[str]]]] | None = None
        """What the control socket's ``reload`` runs (pxed.service sets it: it has the
        file to read again); None answers that this pxed cannot reload itself."""
        self.metrics: Metrics | None = None
        self.web: WebSite | None = None
        """The ``[metrics] listen`` site: the scrape and the status page."""
        self.http: HttpBootServer | None = None
        """The boot root over HTTP (``[http] listen``)."""
        if self.config.http.listen is not None:
            self.http = HttpBootServer(
                # The store of the configuration now: a reload's new root applies at once.
                lambda: FileStore.for_config(self.config.tftp),
                self.bus.publish,
                lambda ip: client_dir(self.config.tftp.per_client, ip, self.mac_for(ip)),
                self.mac_for,
                self.config.stop_grace,
                self.profile_files.render,
            )
        if self.config.metrics.listen is not None:
            self.metrics = Metrics()
            self.bus.subscribe(self.metrics)
            self.web = WebSite(self.metrics.registry, StatusFeed(lambda: snapshot(self)))
        self._lookup = lookup
        self.interfaces: dict[str, InterfaceInfo] = {}
        self.store: Backend | None = None
        self._store_up = True
        self._isolated = False
        self._recovery: asyncio.Task[None] | None = None
        self.cluster: ClusterMember | None = None
        """The heartbeat among the servers sharing a PostgreSQL lease database."""
        self.committer: GroupCommitter | None = None
        self.tables: dict[str, LeaseTable] = {}
        self.arp_table = ARP_TABLE
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
        self._links: dict[str, LinkState] = {}
        self._watcher: LinkWatcher | None = None
        self._by_interface: dict[str, list[Any]] = {}
        """Each present interface's endpoints (DHCP, watcher, TFTP), opened and closed as it
        comes and goes; ``endpoints`` holds the rest."""
        self._own: set[IPv4Address] = set()
        """Every address of ours on a served interface (the foreign-server watchers' view)."""
        self._offers: list[ProbeOffer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._applying = asyncio.Lock()
        self._closing = False
        self._derived = False

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
        if self.lease_hook is not None:
            self.lease_hook.start()
        if self.boot_hook is not None:
            self.boot_hook.start()
        await self._start_state()
        if self.web is not None and cfg.metrics.listen is not None:
            await _listen("[metrics]", self.web.start, cfg.metrics.listen)
            self._tasks.append(asyncio.create_task(self._refresh_metrics()))
        if self.http is not None and cfg.http.listen is not None:
            await _listen("[http]", self.http.start, cfg.http.listen)
        self._take_links(read_links(cfg.interfaces, self._lookup))
        check_addresses(cfg.subnets, self.interfaces)
        for note in self.notes:
            log.info("pxed.config", note=note)
        for name in cfg.interfaces:
            if name not in self._links:
                # systemd starts pxed before every bridge or VLAN exists: serve it once it
                # appears (the watcher below), do not refuse to start.
                log.warning(
                    "pxed.interface",
                    interface=name,
                    change="waiting",
                    serving="nothing until it appears",
                )
        try:
            if cfg.dhcp_enabled:
                if self.interfaces or cfg.mode != "auto":
                    self.mode = await self._resolve_mode()
                    await self._start_dhcp_core()
                else:
                    self.mode = "waiting"  # auto mode decides once an interface appears
            for name in self._links:
                await self._serve(name)
            if cfg.tftp.enabled and not cfg.interfaces:
                self.endpoints.append(await self._start_tftp(None))
            if cfg.interfaces:
                self._watcher = LinkWatcher(
                    cfg.interfaces, self._links, self._links_changed, lookup=self._lookup
                )
                await self._watcher.start()
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
            subnets=self._subnet_names(),
            leases=sum(len(t) for t in self.tables.values()),
            addresses=self.addresses(),
            **tftp,
        )

    async def _start_state(self) -> None:
        """The boot timeline's file and the control socket, in the state directory. Neither
        is worth refusing to serve for: without the directory they are left out, said once."""
        try:
            self.config.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("pxed.state_dir", path=str(self.config.state_dir), error=str(exc),
                        serving="without boot history and control socket")  # fmt: skip
            return
        try:
            store = boot_once_store(self.config.leases, self.config.state_dir / LEASE_DB)
            self._next_store = store
            self.next_boots.update(store.open())
        except PxedError as exc:
            log.warning("pxed.state_dir", error=str(exc), serving="without boot-once state")
        if self.timeline is not None:
            self.timeline.path = self.config.state_dir / BOOTS_FILE
            try:
                self.timeline.load()
            except OSError as exc:
                log.warning("boots.read_failed", error=str(exc))
            self._tasks.append(asyncio.create_task(self._fold_loop()))
        from pxed.commands import followers, handlers

        control = ControlServer(
            self.config.state_dir / SOCKET_NAME, handlers(self), followers(self)
        )
        if await control.start():
            self.control = control

    async def _fold_loop(self) -> None:
        while self.timeline is not None:
            await asyncio.sleep(FOLD_EVERY)
            self.timeline.fold()

    def _boot_finished(self, boot: Boot) -> None:
        """A story is finished: ``boots.finished`` on the bus (the log, the metrics, Python
        subscribers) and the boot hook."""
        files = [s.detail.get("file") for s in boot.steps
                 if s.kind != "dhcp" and s.ok and not s.detail.get("probe")]  # fmt: skip
        level = logging.WARNING if boot.outcome == "failed" else logging.INFO
        self.bus.publish([Notice("boots.finished", level, {
            "mac": boot.mac, "ip": boot.ip, "outcome": boot.outcome, "reason": boot.reason,
            "last": boot.last, "files": files, "seconds": round(boot.updated - boot.started, 3),
        })])  # fmt: skip
        if self.boot_hook is not None:
            self.boot_hook.submit(boot_job(boot.to_json()))

    def _default_policy(self, config: Config) -> ConfigBootPolicy:
        return ConfigBootPolicy(config.boot, config.profiles, self.next_boots.get,
                                self.profile_files.seen)  # fmt: skip

    def _lease_facts(self, mac: str) -> tuple[str | None, str | None]:
        """A MAC's bound address and host name, for its rendered files."""
        now = time.time()
        key = reservation_key(mac)
        for table in self.tables.values():
            lease = table.by_client(key)
            if lease is not None and lease.mac == mac and lease.is_bound(now):
                return str(lease.ip), lease.hostname
        # A client that sent its own identifier (option 61) is keyed by it: look by MAC.
        for table in self.tables.values():
            for lease in table.records():
                if lease.mac == mac and lease.is_bound(now):
                    return str(lease.ip), lease.hostname
        return None, None

    def set_next_boot(self, mac: str, profile: str | None) -> None:
        """What ``mac`` boots next: a profile once (then the local disk), ``local``, or
        None for the configuration's choice. Durable before it returns (PxedError if the
        state cannot be written)."""
        if self._next_store is None:
            raise PxedError("no boot-once state: the state directory is not usable")
        self._next_store.set(mac, profile)
        self._remember_next_boot(mac, profile)

    def _remember_next_boot(self, mac: str, profile: str | None) -> None:
        self._next_set[mac] = time.monotonic()
        if profile is None:
            self.next_boots.pop(mac, None)
        else:
            self.next_boots[mac] = profile

    def _watch_installs(self, event: Event) -> None:
        """A boot-once machine was sent its profile's final file: from now on it boots the
        local disk (counted from the transfer, not from DHCP: firmware asks DHCP several
        times in one boot, and an install that never got its initrd has not begun)."""
        if event.kind not in ("tftp.done", "http.done"):
            return
        fields = event.fields()
        mac = fields.get("mac")
        if not isinstance(mac, str):
            return
        state = self.next_boots.get(mac)
        if state is None or state == LOCAL:
            return
        profile = by_name(self.config.profiles, state)
        final = profile.final_file if profile is not None else None
        sent = canonical(str(fields.get("file", "")))
        if final is None or sent != final.lstrip("/"):
            return
        store = self._next_store
        if store is None:
            log.error("profile.once_failed", mac=mac, profile=state,
                      error="no boot-once state: the state directory is not usable")  # fmt: skip
            return
        # In memory at once (its next DHCP request boots the disk); the row is written off
        # the event loop: a shared database may be slow or away.
        self._remember_next_boot(mac, LOCAL)

        def written(fut: asyncio.Future[None]) -> None:
            exc = fut.exception()
            if exc is not None:
                log.error("profile.once_failed", mac=mac, profile=state, error=str(exc),
                          kept="in memory only: set it again with pxed host --local")  # fmt: skip

        fut = asyncio.get_running_loop().run_in_executor(None, store.set, mac, LOCAL)
        fut.add_done_callback(written)
        done = {"mac": mac, "profile": state, "file": sent, "next": LOCAL}
        self.bus.publish([Notice("profile.once_done", logging.INFO, done)])

    def leases(self) -> list[Lease]:
        """Every lease on record in the running tables (bound, offered-and-bound before,
        released, declined), by address."""
        return sorted((x for t in self.tables.values() for x in t.records()),
                      key=lambda lease: int(lease.ip))  # fmt: skip

    def _subnet_names(self) -> list[str]:
        if not self.config.dhcp_enabled:
            return []
        if self.dhcp is not None:
            return [str(s.config.network) for s in self.dhcp.subnets]
        return [str(s.network) for s in self.config.subnets]

    def addresses(self) -> dict[str, dict[str, Any]]:
        """Per interface: whether it exists and is up, and which of its addresses DHCP gives
        out as server identifier / next-server and TFTP answers on (what ``ss -uln`` and the
        replies show)."""
        out: dict[str, dict[str, Any]] = {}
        for name in self.config.interfaces:
            link = self._links.get(name)
            if link is None:
                out[name] = {"state": "missing", "dhcp": [], "tftp": []}
                continue
            every = [str(a.ip) for a in link.info.addresses]
            dhcp: list[str] = []
            if self.dhcp is not None:
                nets = [s.config.network for s in self.dhcp.subnets]
                dhcp = [str(a.ip) for a in link.info.addresses if any(a.ip in n for n in nets)]
            elif self.proxy is not None:
                chosen = self.proxy.server_address(name)
                dhcp = [str(chosen)] if chosen is not None else []
            out[name] = {
                "state": "up" if link.up else "down",
                "dhcp": dhcp,
                "tftp": every if self.config.tftp.enabled else [],
            }
        return out

    async def _resolve_mode(self) -> str:
        """Auto mode: probe every interface; any other server's offer means ProxyDHCP."""
        cfg = self.config
        if cfg.mode != "auto":
            return cfg.mode
        results = await asyncio.gather(
            *(probe(info, cfg.probe_timeout) for info in self.interfaces.values())
        )
        self._offers = [offer for found in results for offer in found]
        servers = sorted({str(o.server) for o in self._offers})
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

    async def _start_dhcp_core(self) -> None:
        if self.mode == "proxy":
            self.proxy = ProxyServer(
                self.config, self.interfaces, self.policy, min_level=self.min_level
            )
            for offer in self._offers:
                self.proxy.learn(offer.interface, offer.address)
            unsure = [info for name, info in self.interfaces.items() if self.proxy.unsure(name)]
            if not self._offers and unsure:
                # No probe ran, and an interface has several addresses with no configured
                # subnet to say which the router's clients are in: ask the router once, in
                # the background (a probe costs the router an offer, so only when needed).
                self._tasks.append(asyncio.create_task(self._learn_router(unsure)))
        elif self.config.subnets or self.config.derive_on:
            await self._start_dhcp()

    async def _learn_router(self, interfaces: list[InterfaceInfo]) -> None:
        results = await asyncio.gather(
            *(probe(info, self.config.probe_timeout) for info in interfaces)
        )
        for found in results:
            for offer in found:
                if self.proxy is not None:
                    self.proxy.learn(offer.interface, offer.address)
        self._log_addresses()

    async def _serve(self, name: str) -> None:
        """Open the sockets of one interface: DHCP as the mode says, and TFTP."""
        endpoints: list[Any] = []
        self._by_interface[name] = endpoints
        await self._open_dhcp(name, endpoints)
        if self.config.tftp.enabled:
            endpoints.append(await self._start_tftp(name))

    async def _open_dhcp(self, name: str, endpoints: list[Any]) -> None:
        info = self.interfaces[name]
        cfg = self.config
        opened: list[Any] = []
        if self.proxy is not None:
            for port in (cfg.dhcp_port, PROXY_PORT):
                opened.append(
                    DhcpEndpoint(self.proxy, None, name, port, publish=self.bus.publish)
                )
        elif self.dhcp is not None:
            opened.append(
                DhcpEndpoint(
                    self.dhcp, self.committer, name, cfg.dhcp_port, publish=self.bus.publish
                )
            )
            opened.append(ForeignServerWatcher(info, self._own, publish=self.bus.publish))
        for endpoint in opened:
            endpoints.append(endpoint)  # listed first: closed even if the next start fails
            await endpoint.start()

    async def _unserve(self, name: str) -> None:
        for endpoint in reversed(self._by_interface.pop(name, [])):
            try:
                await endpoint.close()
            except Exception:
                log.exception("pxed.close_error", endpoint=type(endpoint).__name__)

    def _links_changed(self, links: dict[str, LinkState], found: list[Change]) -> None:
        self._tasks.append(asyncio.create_task(self._apply(links, found)))
        self._tasks = [t for t in self._tasks if not t.done()]

    async def _apply(self, links: dict[str, LinkState], found: list[Change]) -> None:
        """Follow one burst of interface changes: sockets, the cores' view, derived subnets."""
        async with self._applying:
            if self._closing:
                return
            self._take_links(links)
            if self.mode == "waiting" and self.interfaces:
                self.mode = await self._resolve_mode()
                await self._start_dhcp_core()
                for name in list(self._by_interface):
                    await self._unserve(name)
                found = [*found, *(Change(n, ChangeKind.APPEARED) for n in self.interfaces)]
            restarted: set[str] = set()
            for change in found:
                name = change.interface
                kind = change.kind
                if kind is ChangeKind.GONE:
                    await self._unserve(name)
                elif (
                    kind in (ChangeKind.APPEARED, ChangeKind.RECREATED)
                    and name in links
                    and name not in restarted
                ):
                    restarted.add(name)
                    await self._unserve(name)
                    await self._serve(name)
            await self._derive()
            for change in found:
                self._log_change(change)
            self._log_addresses()

    def _take_links(self, links: dict[str, LinkState]) -> None:
        """The interfaces as they are now: for the sockets, the watchers and the cores."""
        self._links = links
        self.interfaces = {name: link.info for name, link in links.items()}
        self._own.clear()
        self._own.update(a.ip for info in self.interfaces.values() for a in info.addresses)
        if self.dhcp is not None:
            self.dhcp.set_interfaces(self.interfaces)
        if self.proxy is not None:
            self.proxy.set_interfaces(self.interfaces)

    async def _derive(self, previous: Mapping[str, LeaseTable] | None = None) -> None:
        """The subnet of ``derive_on``, once that interface has an address (``previous``:
        the tables before a reload, whose records and holds a re-derived subnet keeps)."""
        cfg = self.config
        name = cfg.derive_on
        if (
            name is None
            or cfg.derive_template is None
            or self.dhcp is None
            or self.committer is None
            or self.store is None
            or self._derived
        ):
            return
        info = self.interfaces.get(name)
        sub = derive_subnet(cfg.derive_template, info) if info is not None else None
        if sub is None:
            return
        before = (previous or {}).get(str(sub.network))
        if before is not None:
            table = before.reshaped(sub.ranges, self._reservations(sub))
        else:
            table = LeaseTable(sub.network, sub.ranges, self._reservations(sub))
            table.load(await self.committer.run(self.store.load))
            table.set_share(self._share())
        self.dhcp.add_subnet(sub, table)
        self.tables[str(sub.network)] = table
        self._derived = True
        pool = ", ".join(f"{a}-{b}" for a, b in sub.ranges)
        log.info("pxed.subnet", interface=name, subnet=str(sub.network), pool=pool, derived=True)

    def _log_change(self, change: Change) -> None:
        name = change.interface
        fields: dict[str, Any] = {"interface": name, "change": change.kind.value}
        if change.address is not None:
            fields["address"] = str(change.address)
        entry = self.addresses().get(name, {})
        if change.kind is ChangeKind.GONE:
            fields["serving"] = "nothing until it appears again"
        elif change.address is not None:
            ip = str(change.address.ip)
            uses = [what for what in ("dhcp", "tftp") if ip in entry.get(what, [])]
            fields["serving"] = "+".join(uses) if uses else "not used"
        else:
            fields["serving"] = "+".join(w for w in ("dhcp", "tftp") if entry.get(w)) or "nothing"
        bad = change.kind in (ChangeKind.GONE, ChangeKind.LINK_DOWN)
        level = logging.WARNING if bad else logging.INFO
        self.bus.publish([Notice("pxed.interface", level, fields)])

    def _log_addresses(self) -> None:
        log.info("pxed.addresses", interfaces=self.addresses())

    def _reservations(self, sub: SubnetConfig) -> dict[IPv4Address, bytes]:
        return {
            host.ip: reservation_key(host.mac)
            for host in self.config.hosts
            if host.ip is not None and host.ip in sub.network
        }

    async def _start_dhcp(self) -> None:
        cfg = self.config
        for sub in cfg.subnets:
            self.tables[str(sub.network)] = LeaseTable(
                sub.network, sub.ranges, self._reservations(sub)
            )
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_state_dir()
        self.store = open_backend(cfg.leases, str(cfg.state_dir / LEASE_DB), cfg.cluster.name)
        leases: list[Lease] = []
        down: StoreUnavailable | None = None
        try:
            self.store.open()
            leases = self.store.load()
        except StoreUnavailable as exc:
            down = exc  # the database is away: start, answer nothing, wait for it
        self.committer = GroupCommitter(
            self.store, on_refused=self._refused, on_store=self._store_state
        )
        self._prune_task = asyncio.create_task(self._prune_loop())
        self._tasks.append(asyncio.create_task(self._expiry_loop()))
        for table in self.tables.values():
            table.load(leases)
        self.dhcp = DhcpServer(
            cfg, self.interfaces, self.tables, self.policy, min_level=self.min_level
        )
        if down is not None:
            log.error(
                "leases.store_down",
                store=self.store.where,
                error=str(down),
                retry="until it is back; only reserved hosts are answered meanwhile",
            )
            self.committer.assume_down(time.monotonic())
            self._store_state(False)
        if cfg.leases.backend == "postgresql":
            from pxed.net.cluster import ClusterMember  # psycopg: only for this backend

            self.cluster = ClusterMember(
                cfg.leases.dsn or "", cfg.cluster, self._cluster_address, self._split,
                self.bus.publish, self._shared_next_boots, self._isolation,
            )  # fmt: skip
            self.dhcp.balance = self.cluster.balance  # nobody's turn until the first beat
            self.cluster.start()
        await self._derive()

    def _serving(self) -> None:
        """DHCP acknowledges nothing that needs the store while it is down, or while this
        server cannot heartbeat (the others may have taken its share over)."""
        if self.dhcp is not None:
            self.dhcp.store_down = not self._store_up or self._isolated

    def _store_state(self, up: bool) -> None:
        """The store went down (a commit failed, or at start-up) or a commit passed again.
        Down: stop at once. Up: serve again only once its leases are loaded afresh (the
        others went on binding meanwhile), which the recovery does, probing by itself: with
        nothing to commit, no commit would tell that the store is back."""
        if not up:
            self._store_up = False
            self._serving()
        self._start_recovery()

    def _isolation(self, isolated: bool) -> None:
        """The heartbeat has failed for half the takeover time (or works again)."""
        self._isolated = isolated
        self._serving()
        if not isolated:
            self._start_recovery()  # back from a partition: what the others bound comes in

    def _start_recovery(self) -> None:
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(self._recover())
            self._tasks.append(self._recovery)

    async def _recover(self) -> None:
        """Load the store's leases into the tables (newest record wins), with backoff while
        it cannot be read, then serve."""
        wait, said = 0.5, False
        while self.store is not None and self.committer is not None:
            try:
                await self.committer.run(self.store.open)
                leases = await self.committer.run(self.store.load)
            except PxedError as exc:  # away, or not usable yet (no schema): keep trying
                if not said and not isinstance(exc, StoreUnavailable):
                    log.error("leases.store_unusable", store=self.store.where, error=str(exc))
                said = True
                await asyncio.sleep(wait)
                wait = min(wait * 2, 5.0)
                continue
            merged = sum(table.merge(leases) for table in self.tables.values())
            self.committer.store_back()
            log.info("leases.reloaded", store=self.store.where, leases=len(leases),
                     changed=merged)  # fmt: skip
            self._store_up = True
            self._serving()
            return

    def _refused(self, refused: Mapping[tuple[str, int], Lease | None]) -> None:
        """The shared database refused bindings (another server's won): take its records,
        so that the clients' retransmissions get the right answer (a NAK, a new offer)."""
        for (subnet, _ip), winner in refused.items():
            table = self.tables.get(subnet)
            if table is not None and winner is not None:
                table.merge([winner], force=True)

    def _shared_next_boots(self, states: dict[str, str]) -> None:
        """The shared boot-once table as a heartbeat read it: take it over, but for the
        MACs this server changed since shortly before that read began."""
        recent = time.monotonic() - 2 * self.config.cluster.heartbeat
        self._next_set = {mac: t for mac, t in self._next_set.items() if t > recent}
        keep = {mac: self.next_boots[mac] for mac in self._next_set if mac in self.next_boots}
        self.next_boots.clear()
        self.next_boots.update(states)
        for mac in self._next_set:
            self.next_boots.pop(mac, None)
        self.next_boots.update(keep)

    def _cluster_address(self) -> str | None:
        """The address the heartbeat row shows for this server: its first DHCP address."""
        for info in self.interfaces.values():
            for a in info.addresses:
                return str(a.ip)
        return None

    def _share(self) -> bytes | None:
        """This server's share of the free addresses now (None: all of them)."""
        return Membership.share_of(self.cluster.balance) if self.cluster is not None else None

    async def _split(self, balance: Balance) -> None:
        """A new split of the work among the live servers (pxed.net.cluster): the clients
        and the pool's share change together, then the leases the servers that left (or
        joined) bound, which this one has not seen, are loaded."""
        if self.dhcp is not None:
            self.dhcp.balance = None if balance.alone else balance
        share = Membership.share_of(balance)
        for table in self.tables.values():
            table.set_share(share)
        if self.store is not None and self.committer is not None and self._store_up:
            try:
                leases = await self.committer.run(self.store.load)
            except PxedError as exc:
                log.warning("cluster.reload_failed", error=str(exc))
            else:
                for table in self.tables.values():
                    table.merge(leases)

    async def _start_tftp(self, name: str | None) -> Any:
        """TFTP on every address of the interface: one wildcard socket bound to it, which
        learns from IP_PKTINFO the address each request was sent to, so that a secondary
        address (or one added later) is served and each transfer answers from the address
        its client asked (a client drops DATA from any other)."""
        from pxed.net.tftp import TftpEndpoint

        endpoint = TftpEndpoint(
            self.config.tftp,
            "0.0.0.0",
            interface=name,
            mac_lookup=self.mac_for,
            rendered=self.profile_files.render,
            publish=self.bus.publish,
        )
        await endpoint.start()
        return endpoint

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

    async def _expiry_loop(self) -> None:
        """A ``dhcp.expired`` event for each binding that runs out while pxed runs (the lease
        hook's ``del``, the metrics): nothing else marks the moment, the table only stops
        counting the lease as bound."""
        since = time.time()
        while True:
            await asyncio.sleep(EXPIRY_SCAN)
            now = time.time()
            if self.min_level > logging.INFO:  # nobody would be told: no scan
                since = now
                continue
            events: list[Event] = [
                Notice(
                    "dhcp.expired",
                    logging.INFO,
                    {
                        "mac": lease.mac,
                        "ip": str(lease.ip),
                        "subnet": lease.subnet,
                        "hostname": lease.hostname,
                    },
                )
                for table in self.tables.values()
                for lease in table.expired_between(since, now)
            ]
            since = now
            if events:
                self.bus.publish(events)

    async def _refresh_metrics(self) -> None:
        while self.metrics is not None:
            cores = [core for core in (self.dhcp, self.proxy) if core is not None]
            self.metrics.refresh(self.tables, time.time(), dhcp=cores,
                                 tftp_active=self.status()["transfers"],
                                 store=self.committer, cluster=self.cluster)  # fmt: skip
            await asyncio.sleep(REFRESH)

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

    # -- reload ---------------------------------------------------------------------------

    async def reload(self, config: Config) -> ReloadPlan:
        """Take over a new configuration while serving (SIGHUP; an embedder's call).

        Refused with ConfigError, the running configuration untouched, on whatever `pxed
        check` would say about it, and on a change that needs a restart (pxed.reload's
        NEEDS_RESTART). Otherwise new cores are built from it and swapped in: the lease
        tables carry their records and offers over, the TFTP endpoints serve new requests by
        the new settings while running transfers finish by the old, and only the sockets
        whose interface or port changed are opened again. Returns what changed.

        An OSError (a port taken meanwhile) comes from opening a socket again after the
        swap: the new configuration serves then, without that socket.
        """
        try:
            change = await self._reload(config)
        except ConfigError:
            if self.metrics is not None:
                self.metrics.reloads.labels("refused").inc()
            raise
        if self.metrics is not None:
            self.metrics.reloads.labels("ok").inc()
        return change

    async def _reload(self, config: Config) -> ReloadPlan:
        notes: list[str] = []
        new = check(config, notes=notes)
        change = plan_reload(self.config, new)
        if change.problems:
            raise ConfigError(list(change.problems))
        async with self._applying:
            if self._closing:
                raise PxedError("the server is stopping")
            links = self._links
            if change.added or change.removed:
                links = read_links(new.interfaces, self._lookup)
            check_addresses(new.subnets, {n: link.info for n, link in links.items()})
            if not change.noop:
                await self._swap(new, change, links)
        self.notes = notes
        for note in notes:
            log.info("pxed.config", note=note)
        restarted = [n for n in new.interfaces if n in self._by_interface and n not in change.added]
        reloaded = {
            "changed": list(change.changed),
            "interfaces_added": list(change.added),
            "interfaces_removed": list(change.removed),
            "restarted_dhcp": restarted if change.restart_dhcp else [],
            "restarted_tftp": restarted if change.restart_tftp else [],
            "subnets": self._subnet_names(),
            "leases": sum(len(t) for t in self.tables.values()),
        }
        self.bus.publish([Notice("pxed.reloaded", logging.INFO, reloaded)])
        self._log_addresses()
        return change

    async def _swap(self, new: Config, change: ReloadPlan, links: dict[str, LinkState]) -> None:
        old = self.config
        fresh: list[Lease] = []
        if self.dhcp is not None and self.store is not None and self.committer is not None:
            known = {str(s.config.network) for s in self.dhcp.subnets}
            if any(str(sub.network) not in known for sub in new.subnets):
                # The only wait: a subnet new to this run gets the store's records of it.
                # Everything after it down to the swap runs without yielding, so that no
                # request changes the old tables between their copy and the swap.
                fresh = await self.committer.run(self.store.load)
        self.config = new
        if not self._policy_given:
            self.policy = self._default_policy(new)
        if new.hooks != old.hooks:
            self._set_lease_hook(new)
            self._set_boot_hook(new)
        if self.mode == "tftp-only" or not new.dhcp_enabled:
            pass
        elif self.dhcp is not None:
            self._swap_dhcp(old, new, fresh)
        elif self.proxy is not None:
            proxy = ProxyServer(new, self.interfaces, self.policy, min_level=self.min_level)
            proxy._learned.update(self.proxy._learned)
            proxy.take_counters(self.proxy)
            self._retarget(self.proxy, proxy)
            self.proxy = proxy
        for name in change.removed:
            await self._unserve(name)
        self._take_links(links)
        for name in list(self._by_interface):
            await self._reopen(name, dhcp=change.restart_dhcp, tftp=change.restart_tftp)
        if change.restart_tftp:
            for endpoint in [e for e in self.endpoints if isinstance(e, _tftp_type())]:
                self.endpoints.remove(endpoint)
                await endpoint.close()
            if new.tftp.enabled and not new.interfaces:
                self.endpoints.append(await self._start_tftp(None))
        else:
            for endpoint in self._all_endpoints():
                if isinstance(endpoint, _tftp_type()):
                    endpoint.reconfigure(new.tftp)
        for name in change.added:
            if name in self._links and name not in self._by_interface:
                await self._serve(name)
        if change.added or change.removed:
            if self._watcher is not None:
                await self._watcher.close()
            self._watcher = LinkWatcher(
                new.interfaces, self._links, self._links_changed, lookup=self._lookup
            )
            await self._watcher.start()
        previous = dict(self.tables)
        self._derived = False
        await self._derive(previous)

    def _swap_dhcp(self, old: Config, new: Config, fresh: list[Lease]) -> None:
        """New DHCP core and tables; no awaits (see _swap)."""
        assert self.dhcp is not None
        before = {str(s.config.network): s.config for s in self.dhcp.subnets}
        old_reserved = {
            net: {h.ip: reservation_key(h.mac) for h in old.hosts if h.ip in sub.network}
            for net, sub in before.items()
        }
        tables: dict[str, LeaseTable] = {}
        for sub in new.subnets:
            key = str(sub.network)
            reserved = self._reservations(sub)
            table = self.tables.get(key)
            if table is None:
                table = LeaseTable(sub.network, sub.ranges, reserved)
                table.load(fresh)
                table.set_share(self._share())
            elif before[key].ranges != sub.ranges or old_reserved[key] != reserved:
                table = table.reshaped(sub.ranges, reserved)
            # else: the same table object, nothing to copy (100000 leases cost a moment)
            tables[key] = table
        dhcp = DhcpServer(new, self.interfaces, tables, self.policy, min_level=self.min_level)
        dhcp.take_counters(self.dhcp)
        dhcp._buckets = self.dhcp._buckets  # a flood in progress stays bounded
        self._retarget(self.dhcp, dhcp)
        self.dhcp = dhcp
        self.tables = tables

    def _all_endpoints(self) -> list[Any]:
        return [*self.endpoints, *(e for eps in self._by_interface.values() for e in eps)]

    def _retarget(self, old: object, new: DatagramCore) -> None:
        for endpoint in self._all_endpoints():
            if isinstance(endpoint, DhcpEndpoint) and endpoint.core is old:
                endpoint.core = new

    async def _reopen(self, name: str, *, dhcp: bool, tftp: bool) -> None:
        """Open one interface's DHCP and/or TFTP sockets again (their port changed)."""
        endpoints = self._by_interface.get(name)
        if endpoints is None or not (dhcp or tftp):
            return
        tftp_type = _tftp_type()
        for endpoint in list(endpoints):
            dhcp_kind = isinstance(endpoint, DhcpEndpoint | ForeignServerWatcher)
            if (dhcp and dhcp_kind) or (tftp and isinstance(endpoint, tftp_type)):
                endpoints.remove(endpoint)
                try:
                    await endpoint.close()
                except Exception:
                    log.exception("pxed.close_error", endpoint=type(endpoint).__name__)
        if dhcp:
            opened: list[Any] = []
            try:
                await self._open_dhcp(name, opened)
            finally:  # what did start is listed, so that close() closes it
                endpoints[:0] = opened
        if tftp and self.config.tftp.enabled:
            endpoints.append(await self._start_tftp(name))

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Mode, lease records and running TFTP transfers: systemd's STATUS= line."""
        return {
            "mode": self.mode,
            "leases": sum(len(t) for t in self.tables.values()),
            "transfers": sum(
                e.active for e in self._all_endpoints() if isinstance(e, _tftp_type())
            ),
        }

    @property
    def min_level(self) -> int:
        """The level below which the cores make no event: the configured log level, or INFO
        when the lease hook or the metrics need the decisions whatever the log shows (the
        log filters them itself)."""
        level = logging.getLevelNamesMapping()[self.config.log_level.upper()]
        if self.lease_hook is not None or self.metrics is not None or self.timeline is not None:
            return min(level, logging.INFO)
        return level

    def _set_boot_hook(self, config: Config, *, start: bool = True) -> None:
        """The ``[hooks] boot`` program of ``config`` in place of the current one."""
        if self.boot_hook is not None:
            self._tasks.append(asyncio.create_task(self.boot_hook.close()))
        self.boot_hook = None
        if config.hooks.boot is None or self.timeline is None:
            return
        self.boot_hook = Hook(config.hooks.boot, config.hooks.timeout)
        if start:
            self.boot_hook.start()

    # -- what the control socket and the status page read ---------------------------------

    def counters(self) -> dict[str, Any]:
        """The cores' counters and the consumers' drops (the control socket's ``stats``)."""
        out: dict[str, Any] = {"events_dropped": self.events_dropped,
                               "consumer_failures": self.bus.failures}  # fmt: skip
        for name, core in (("dhcp", self.dhcp), ("proxy", self.proxy)):
            if core is not None:
                out[name] = {
                    **core.stats,
                    "received": {(t.name if t is not None else "unknown"): n
                                 for t, n in core.received.items()},
                    "drops": {str(reason): n for reason, n in core.drops.items()},
                }  # fmt: skip
        tftp = [e for e in self._all_endpoints() if isinstance(e, _tftp_type())]
        if tftp:
            totals: dict[str, int] = {}
            for endpoint in tftp:
                for key, value in dataclasses.asdict(endpoint.stats()).items():
                    totals[key] = totals.get(key, 0) + int(value)
            out["tftp"] = totals
        if self.lease_hook is not None:
            out["lease_hook"] = {"runs": self.lease_hook.runs,
                                 "failures": self.lease_hook.failures,
                                 "dropped": self.lease_hook.dropped}  # fmt: skip
        if self.timeline is not None:
            out["boots"] = {"kept": len(self.timeline.boots), "open": len(self.timeline.open),
                            "events_dropped": self.timeline.dropped}  # fmt: skip
        if self.committer is not None and self.store is not None:
            out["lease_store"] = {"where": self.store.where, "down": self.committer.store_down,
                                  "commits": self.committer.commits,
                                  "failed": self.committer.failed,
                                  "refused": self.committer.refused}  # fmt: skip
        if self.cluster is not None:
            split = self.cluster.balance.servers
            out["cluster"] = {
                "me": self.cluster.config.name,
                "split": list(split),
                "servers": [{"name": p.name, "address": p.address, "heartbeat_age": p.age,
                             "in_split": p.name in split} for p in self.cluster.peers],
                "leases_by_server": self.cluster.holdings,
            }  # fmt: skip
        return out

    async def delete_lease(self, *, mac: str | None, ip: IPv4Address | None) -> list[Lease]:
        """Release the active bindings of that MAC and/or address (the control socket's
        ``lease-delete``): the address is free at once, the record stays as released."""
        now = time.time()
        gone: list[Lease] = []
        for table in self.tables.values():
            for lease in table.records():
                if (mac is not None and lease.mac != mac.lower()) or (
                    ip is not None and lease.ip != ip
                ):
                    continue
                released = table.release(lease.client_key, lease.ip, now)
                if released is not None:
                    gone.append(released)
        if gone and self.committer is not None:
            self.committer.submit(gone, [])
        for lease in gone:
            log.info("dhcp.release", mac=lease.mac, ip=str(lease.ip), by="control socket")
        return gone

    def _set_lease_hook(self, config: Config, *, start: bool = True) -> None:
        """The ``[hooks] lease`` consumer of ``config`` in place of the current one (a reload:
        the old one finishes its queue in the background)."""
        if self.lease_hook is not None and self._unhook is not None:
            self._unhook()
            self._tasks.append(asyncio.create_task(self.lease_hook.close()))
        self.lease_hook = self._unhook = None
        if config.hooks.lease is None:
            return
        self.lease_hook = LeaseHook(config.hooks.lease, config.hooks.timeout)
        self._unhook = self.bus.subscribe(self.lease_hook)
        if start:
            self.lease_hook.start()

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    async def events(self, *kinds: str, maxsize: int = 1024) -> AsyncIterator[Event]:
        """The decision events as they happen (all, or only these kinds: ``"dhcp.ack"``).

        Each call is a subscriber of its own with a queue of ``maxsize``: a subscriber that
        falls behind loses events (counted in ``events_dropped``), it never slows a reply.
        Events below the configured log level are not made, so not seen here either.
        """
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        wanted = frozenset(kinds)

        def take(event: Event) -> None:
            if wanted and event.kind not in wanted:
                return
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self.events_dropped += 1

        unsubscribe = self.bus.subscribe(take)
        try:
            while True:
                yield await queue.get()
        finally:
            unsubscribe()

    def stop(self) -> None:
        """Ask serve_forever() to return (signal handlers call this)."""
        self._stopped.set()

    async def close(self, grace: float = 0.0) -> None:
        """Stop: no new requests, then (``grace`` > 0) up to that many seconds for running
        TFTP transfers to finish, the last leases written, every socket closed. Transfers
        still running then are ended with an ERROR to their client."""
        self._closing = True
        if self._watcher is not None:
            await self._watcher.close()
            self._watcher = None
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        if self.cluster is not None:
            await self.cluster.close()
            self.cluster = None
        if self._prune_task is not None:
            self._prune_task.cancel()
            self._prune_task = None
        async with self._applying:
            for name in list(self._by_interface):
                self.endpoints.extend(self._by_interface.pop(name))
        # Stop taking requests, let the ACKs waiting on the last transaction go, then close.
        for endpoint in self.endpoints:
            if isinstance(endpoint, DhcpEndpoint):
                endpoint.stop_reading()
        if grace > 0:
            tftp = [e for e in self.endpoints if isinstance(e, _tftp_type())]
            running = sum(e.active for e in tftp)
            if running:
                log.info("pxed.stopping", transfers=running, grace=grace)
            left = sum(await asyncio.gather(*(e.drain(grace) for e in tftp)))
            if left:
                log.warning("pxed.stopping", transfers_cut=left, grace=grace)
        if self.timeline is not None:  # the stories running, finished and written
            self.timeline.close()
        if self.control is not None:
            await self.control.close()
            self.control = None
        if self.committer is not None:
            await self.committer.close()
            self.committer = None
        for endpoint in reversed(self.endpoints):
            try:
                await endpoint.close()
            except Exception:
                log.exception("pxed.close_error", endpoint=type(endpoint).__name__)
        self.endpoints.clear()
        if self.lease_hook is not None:  # the last releases' hooks, briefly
            await self.lease_hook.close()
        if self.boot_hook is not None:
            await self.boot_hook.close()
        if self.web is not None:
            await self.web.close()
        if self.http is not None:
            await self.http.close()
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._next_store is not None:
            self._next_store.close()
            self._next_store = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        self._stopped.set()
