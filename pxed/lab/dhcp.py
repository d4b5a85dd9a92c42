"""DHCP servers in the lab (pxed, dnsmasq, Kea) told the same thing, and the two-namespace net.

A ``DhcpSetup`` says what to serve (one subnet, one pool, the usual options, reservations);
each server class renders it into its own configuration, so the same test or benchmark runs
against pxed, dnsmasq or Kea by naming the server. ``make_dhcp_net`` builds the layout: a
server namespace and a client namespace joined by a veth.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pxed.lab.logs import Event, json_event
from pxed.lab.netns import Lab, Netns
from pxed.lab.process import ServerProcess
from pxed.lab.pxed import PxedProcess

# Addresses and names (RFC 2544 benchmarking space only)
SERVER_IF = "pxs0"
CLIENT_IF = "pxc0"
SERVER_IP = "198.19.0.1"
RELAY_IP = "198.19.0.2"  # perfdhcp's address: it acts as a relay (giaddr) from port 67
PREFIX = 16
POOL_FIRST = "198.19.1.0"
POOL_LAST = "198.19.254.254"


@dataclass(frozen=True)
class Reservation:
    mac: str
    ip: str
    hostname: str | None = None
    boot: str | None = None


@dataclass(frozen=True)
class DhcpSetup:
    """One subnet, one pool, the usual options; every server renders it the same way."""

    server_ip: str = SERVER_IP
    prefix: int = PREFIX
    pool_first: str = POOL_FIRST
    pool_last: str = POOL_LAST
    lease_time: int = 12 * 3600
    """Seconds."""
    router: str | None = SERVER_IP
    dns: tuple[str, ...] = (SERVER_IP,)
    domain: str | None = "lab.test"
    hosts: tuple[Reservation, ...] = ()
    boot_file: str | None = "pxelinux.0"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{self.server_ip}/{self.prefix}", strict=False)

    @property
    def netmask(self) -> str:
        return str(self.network.netmask)

    def in_pool(self, ip: str) -> bool:
        addr = ipaddress.IPv4Address(ip)
        first, last = ipaddress.IPv4Address(self.pool_first), ipaddress.IPv4Address(self.pool_last)
        return first <= addr <= last


def router_setup(ip: str, pool: tuple[str, str], prefix: int = PREFIX) -> DhcpSetup:
    """What the DHCP server of a LAN's router serves: addresses only (no boot file, no
    options beyond the defaults), one-hour leases. pxed's proxy mode runs beside it."""
    return DhcpSetup(
        server_ip=ip, prefix=prefix, pool_first=pool[0], pool_last=pool[1], lease_time=3600,
        router=None, dns=(), domain=None, boot_file=None,
    )  # fmt: skip


@dataclass(frozen=True)
class Lease:
    ip: str
    mac: str
    state: str
    """'ACTIVE', 'RELEASED' or 'DECLINED' (pxed's words; other servers are mapped onto them)."""
    expires: float
    """Unix time."""
    hostname: str | None = None


def norm_mac(mac: str | bytes) -> str:
    if isinstance(mac, bytes):
        return ":".join(f"{b:02x}" for b in mac[:6])
    return mac.strip().lower()


def norm_xid(value: Any) -> int | None:
    """Transaction ids are logged as ints, '0x..' hex or decimal strings; compare as ints."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    try:
        return int(text, 16) if text.startswith("0x") else int(text)
    except ValueError:
        try:
            return int(text, 16)
        except ValueError:
            return None


# ---------------------------------------------------------------------------------------------
# Servers


class DhcpServer(ServerProcess):
    """A DHCP server serving a DhcpSetup on ``iface``: leases and events, normalised."""

    keeps_released_rows: ClassVar[bool] = False
    """True when a released lease stays in the store with state RELEASED (pxed)."""
    logs_events: ClassVar[bool] = True
    """True when events() reports per-packet decisions (offer/ack/...)."""

    def __init__(
        self, ns: Netns, iface: str, setup: DhcpSetup, workdir: Path, *, quiet: bool = False
    ) -> None:
        super().__init__(ns, workdir, quiet=quiet)
        self.iface = iface
        self.setup = setup

    def parse_line(self, line: str) -> Event | None:
        return None

    def leases(self) -> list[Lease]:
        raise NotImplementedError

    def leases_by_ip(self) -> dict[str, Lease]:
        return {lease.ip: lease for lease in self.leases()}


def pxed_dhcp_config(setup: DhcpSetup, iface: str, workdir: Path) -> dict[str, Any]:
    """A DhcpSetup as pxed's configuration mapping."""
    dhcp: dict[str, Any] = {
        "range": f"{setup.pool_first}-{setup.pool_last}",
        "lease_time": f"{setup.lease_time}s",
    }
    if setup.router:
        dhcp["router"] = setup.router
    if setup.dns:
        dhcp["dns"] = list(setup.dns)
    if setup.domain:
        dhcp["domain"] = setup.domain
    hosts = []
    for host in setup.hosts:
        row: dict[str, Any] = {"mac": host.mac, "ip": host.ip}
        if host.hostname:
            row["hostname"] = host.hostname
        if host.boot:
            row["boot"] = host.boot
        hosts.append(row)
    if hosts:
        dhcp["host"] = hosts
    config: dict[str, Any] = {
        "server": {"interfaces": [iface], "mode": "dhcp", "state_dir": str(workdir / "state")},
        "dhcp": dhcp,
    }
    if setup.boot_file:
        config["boot"] = {"bios": setup.boot_file}
    config["tftp"] = {"root": str(workdir / "tftp")}
    return config


class PxedDhcp(DhcpServer, PxedProcess):
    """pxed, DHCP only (``--no-tftp``), logging every decision at level debug."""

    keeps_released_rows = True

    def __init__(
        self, ns: Netns, iface: str, setup: DhcpSetup, workdir: Path, *, quiet: bool = False
    ) -> None:
        super().__init__(ns, iface, setup, workdir, quiet=quiet)
        self.config = pxed_dhcp_config(setup, iface, workdir)
        self.args = ["--no-tftp"]
        self.log_level = "debug"
        self.ready_port = 67
        (workdir / "tftp").mkdir(exist_ok=True)

    def parse_line(self, line: str) -> Event | None:
        return json_event(line)

    def leases(self) -> list[Lease]:
        if not self.db_path.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute("SELECT ip, mac, state, expires, hostname FROM leases").fetchall()
        finally:
            conn.close()
        return [
            Lease(
                _ip_text(ip), norm_mac(mac if isinstance(mac, str) else bytes(mac)),
                str(state).upper(), float(expires or 0), hostname,
            )
            for ip, mac, state, expires, hostname in rows
        ]


def _ip_text(value: Any) -> str:
    """pxed stores addresses as integers (compact); accept text too."""
    if isinstance(value, int):
        return str(ipaddress.IPv4Address(value))
    return str(value)


_DNSMASQ_RE = re.compile(
    r"dnsmasq-dhcp(?:\[\d+\])?: (?:(?P<xid>\d+) )?DHCP(?P<kind>[A-Z]+)\((?P<iface>[^)]*)\)"
    r"\s*(?P<rest>.*)$"
)
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class DnsmasqDhcp(DhcpServer):
    """dnsmasq: the reference that validates the harness, a benchmark peer, the LAN's router."""

    name = "dnsmasq"
    tool = "dnsmasq"

    @property
    def lease_file(self) -> Path:
        return self.workdir / "dnsmasq.leases"

    def command(self) -> list[str]:
        s = self.setup
        cmd = [
            "dnsmasq", "--no-daemon", "--port=0", "--bind-interfaces",
            f"--interface={self.iface}", "--conf-file=/dev/null", "--log-facility=-",
            f"--pid-file={self.workdir / 'dnsmasq.pid'}",
            f"--dhcp-range={s.pool_first},{s.pool_last},{s.netmask},{s.lease_time}",
            f"--dhcp-leasefile={self.lease_file}", "--dhcp-lease-max=1000000",
            "--dhcp-authoritative",
            # pxed and Kea do not ping an address before offering it; neither does this.
            "--no-ping",
        ]  # fmt: skip
        cmd.append("--quiet-dhcp" if self.quiet else "--log-dhcp")
        if s.router:
            cmd.append(f"--dhcp-option=option:router,{s.router}")
        if s.dns:
            cmd.append(f"--dhcp-option=option:dns-server,{','.join(s.dns)}")
        if s.domain:
            cmd.append(f"--dhcp-option=option:domain-name,{s.domain}")
        cmd += [f"--dhcp-host={self.host_spec(host)}" for host in s.hosts]
        return cmd + self.boot_rules()

    def host_spec(self, host: Reservation) -> str:
        return ",".join(x for x in (host.mac, host.ip, host.hostname) if x)

    def boot_rules(self) -> list[str]:
        return [f"--dhcp-boot={self.setup.boot_file}"] if self.setup.boot_file else []

    def parse_line(self, line: str) -> Event | None:
        m = _DNSMASQ_RE.search(line)
        if not m:
            return None
        event: Event = {"event": f"dhcp.{m['kind'].lower()}", "xid": norm_xid(m["xid"])}
        for word in m["rest"].split():
            if _MAC_RE.match(word.lower()) and "mac" not in event:
                event["mac"] = word.lower()
            elif re.match(r"^\d+\.\d+\.\d+\.\d+$", word) and "ip" not in event:
                event["ip"] = word
        return event

    def is_ready(self) -> bool:
        return self.said("DHCP, IP range")

    def leases(self) -> list[Lease]:
        if not self.lease_file.exists():
            return []
        out = []
        for line in self.lease_file.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4:
                name = None if parts[3] == "*" else parts[3]
                out.append(Lease(parts[2], norm_mac(parts[1]), "ACTIVE", float(parts[0]), name))
        return out


class DnsmasqPxe(DnsmasqDhcp):
    """dnsmasq as the PXE server pxed replaces: DHCP and TFTP in one process, boot files
    chosen as pxed chooses them (a host entry's file, user class iPXE -> boot.ipxe, client
    arch 7 -> ``efi_boot``, ipxe.efi or shim, arch 11 -> ``arm64_boot`` when given, else
    the setup's BIOS file)."""

    def __init__(
        self, ns: Netns, iface: str, setup: DhcpSetup, workdir: Path, *, root: Path,
        quiet: bool = False, efi_boot: str = "ipxe.efi", arm64_boot: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(ns, iface, setup, workdir, quiet=quiet)
        self.root = root
        self.efi_boot = efi_boot
        self.arm64_boot = arm64_boot

    @staticmethod
    def _tag(host: Reservation) -> str:
        return "h" + host.mac.replace(":", "")

    def host_spec(self, host: Reservation) -> str:
        spec = super().host_spec(host)
        return f"{spec},set:{self._tag(host)}" if host.boot else spec

    def boot_rules(self) -> list[str]:
        out = ["--dhcp-userclass=set:ipxe,iPXE", "--dhcp-match=set:ipxe,175",
               "--dhcp-match=set:efi,option:client-arch,7",
               "--dhcp-match=set:arm64,option:client-arch,11"]  # fmt: skip
        not_hosts = ""
        for host in self.setup.hosts:
            if host.boot:
                out.append(f"--dhcp-boot=tag:{self._tag(host)},{host.boot}")
                not_hosts += f"tag:!{self._tag(host)},"
        out += [
            f"--dhcp-boot={not_hosts}tag:ipxe,boot.ipxe",
            f"--dhcp-boot={not_hosts}tag:!ipxe,tag:efi,{self.efi_boot}",
            f"--dhcp-boot={not_hosts}tag:!ipxe,tag:!efi,tag:!arm64,"
            f"{self.setup.boot_file or 'pxelinux.0'}",
        ]
        if self.arm64_boot is not None:
            out.append(f"--dhcp-boot={not_hosts}tag:!ipxe,tag:arm64,{self.arm64_boot}")
        out += [
            "--enable-tftp", f"--tftp-root={self.root}",
        ]
        return out

    def is_ready(self) -> bool:
        return self.said("TFTP root is") or super().is_ready()


class KeaDhcp(DhcpServer):
    """ISC Kea (kea-dhcp4, memfile leases) as a benchmark peer."""

    name = "kea"
    tool = "kea-dhcp4"
    logs_events = False

    def __init__(
        self, ns: Netns, iface: str, setup: DhcpSetup, workdir: Path, *, quiet: bool = False,
        socket_type: str = "raw",
    ) -> None:  # fmt: skip
        super().__init__(ns, iface, setup, workdir, quiet=quiet)
        self.socket_type = socket_type
        """'raw' serves clients on the link; 'udp' only relayed traffic (benchmarks)."""

    @property
    def lease_file(self) -> Path:
        return self.workdir / "kea-leases4.csv"

    def kea_config(self) -> dict[str, Any]:
        s = self.setup
        options = []
        if s.router:
            options.append({"name": "routers", "data": s.router})
        if s.dns:
            options.append({"name": "domain-name-servers", "data": ", ".join(s.dns)})
        if s.domain:
            options.append({"name": "domain-name", "data": s.domain})
        reservations = []
        for host in s.hosts:
            res: dict[str, Any] = {"hw-address": host.mac, "ip-address": host.ip}
            if host.hostname:
                res["hostname"] = host.hostname
            if host.boot:
                res["boot-file-name"] = host.boot
            reservations.append(res)
        subnet: dict[str, Any] = {
            "id": 1,
            "subnet": str(s.network),
            "pools": [{"pool": f"{s.pool_first} - {s.pool_last}"}],
            "option-data": options,
            "reservations": reservations,
        }
        if s.boot_file:
            subnet["boot-file-name"] = s.boot_file
        return {
            "Dhcp4": {
                "interfaces-config": {
                    "interfaces": [self.iface], "dhcp-socket-type": self.socket_type,
                },
                "lease-database": {
                    "type": "memfile", "persist": True, "name": str(self.lease_file),
                    "lfc-interval": 0,
                },
                "authoritative": True,
                "valid-lifetime": s.lease_time,
                "renew-timer": s.lease_time // 2,
                "rebind-timer": s.lease_time * 7 // 8,
                "subnet4": [subnet],
                "loggers": [
                    {"name": "kea-dhcp4", "severity": "INFO",
                     "output_options": [{"output": "stdout"}]},
                    {"name": "kea-dhcp4.leases", "severity": "WARN" if self.quiet else "INFO",
                     "output_options": [{"output": "stdout"}]},
                ],
            }
        }  # fmt: skip

    def command(self) -> list[str]:
        path = self.workdir / "kea-dhcp4.json"
        path.write_text(json.dumps(self.kea_config(), indent=2))
        return ["kea-dhcp4", "-c", str(path)]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KEA_PIDFILE_DIR"] = str(self.workdir)
        env["KEA_LOCKFILE_DIR"] = str(self.workdir)
        env["KEA_LOGGER_DESTINATION"] = "stdout"
        return env

    def is_ready(self) -> bool:
        return self.said("DHCP4_STARTED")

    def leases(self) -> list[Lease]:
        if not self.lease_file.exists():
            return []
        last: dict[str, dict[str, str]] = {}
        with self.lease_file.open(newline="") as fh:
            for row in csv.DictReader(fh):
                last[row["address"]] = row
        out = []
        for ip, row in last.items():
            state = {"0": "ACTIVE", "1": "DECLINED"}.get(row.get("state", "0"), "EXPIRED")
            if row.get("valid_lifetime") == "0":
                state = "RELEASED"
            out.append(Lease(ip, norm_mac(row["hwaddr"]), state, float(row["expire"]),
                             row.get("hostname") or None))  # fmt: skip
        return out


SERVERS: dict[str, type[DhcpServer]] = {"pxed": PxedDhcp, "dnsmasq": DnsmasqDhcp, "kea": KeaDhcp}
"""Every DHCP server the lab can run on a DhcpSetup, by name (a new peer is one entry)."""


# ---------------------------------------------------------------------------------------------
# The network: server namespace <-veth-> client namespace


@dataclass
class DhcpNet:
    lab: Lab
    server_ns: Netns
    client_ns: Netns
    setup: DhcpSetup
    client_mac: str
    server_cls: type[DhcpServer]
    servers: list[DhcpServer] = field(default_factory=list)

    @property
    def tmp(self) -> Path:
        return self.lab.tmp

    def server(self, setup: DhcpSetup | None = None, *, quiet: bool = False,
               **kwargs: Any) -> DhcpServer:  # fmt: skip
        srv = self.server_cls(
            self.server_ns, SERVER_IF, setup or self.setup,
            self.tmp / f"server{len(self.servers)}", quiet=quiet, **kwargs,
        )  # fmt: skip
        self.servers.append(srv)
        return srv

    def add_relay_address(self, cidr: str = f"{RELAY_IP}/{PREFIX}") -> str:
        """perfdhcp needs an address on its link: it poses as a relay with giaddr = this."""
        self.lab.addr(self.client_ns, CLIENT_IF, cidr)
        return cidr.split("/")[0]

    def close(self) -> None:
        stop_servers(self.servers)


def stop_servers(servers: list[DhcpServer]) -> None:
    """Stop each (SIGKILL if stopping fails): teardown goes on, the Lab kills what is left."""
    for srv in servers:
        try:
            srv.stop(timeout=5)
        except Exception:
            srv.kill()


def make_dhcp_net(
    lab: Lab,
    setup: DhcpSetup | None = None,
    *,
    client_mac: str = "02:00:5e:10:00:01",
    server: str | type[DhcpServer] = "pxed",
) -> DhcpNet:
    setup = setup or DhcpSetup()
    server_cls = SERVERS[server] if isinstance(server, str) else server
    server_ns = lab.ns("s")
    client_ns = lab.ns("c")
    lab.veth(server_ns, SERVER_IF, client_ns, CLIENT_IF)
    client_ns.run("ip", "link", "set", CLIENT_IF, "address", client_mac)
    lab.addr(server_ns, SERVER_IF, f"{setup.server_ip}/{setup.prefix}")
    return DhcpNet(lab, server_ns, client_ns, setup, client_mac, server_cls)
