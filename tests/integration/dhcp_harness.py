"""DHCP integration harness: a server namespace and a client namespace joined by a veth.

The server under test runs as a subprocess inside the server namespace; real clients
(dhclient, busybox udhcpc, perfdhcp) run inside the client namespace, never on the host.
The same tests run against pxed or, to check that the harness itself is right, against
dnsmasq or Kea: the server is a small class and the choice is one line (``SERVER_UNDER_TEST``)
or the ``PXED_TEST_DHCP_SERVER`` environment variable (``pxed``, ``dnsmasq``, ``kea``).

Ground truth about what a client was given comes from a packet capture on the client's side
of the link (tcpdump in the client namespace, parsed with scapy), not from the server's log.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tests.lab import (
    Lab,
    Netns,
    ServerProcess,
    have,
    json_event,
    require,
    udp_port_bound,
    wait_for,
)

# ---------------------------------------------------------------------------------------------
# Addresses and names (RFC 2544 benchmarking space only)

SERVER_IF = "pxs0"
CLIENT_IF = "pxc0"
SERVER_IP = "198.19.0.1"
RELAY_IP = "198.19.0.2"  # perfdhcp's address: it acts as a relay (giaddr) from port 67
PREFIX = 16
POOL_FIRST = "198.19.1.0"
POOL_LAST = "198.19.254.254"

#: Debian package that provides each external tool (named in skip messages).





# ---------------------------------------------------------------------------------------------
# What the server is told to serve, rendered by each server class into its own configuration


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
        return (
            ipaddress.IPv4Address(self.pool_first) <= addr <= ipaddress.IPv4Address(self.pool_last)
        )


# ---------------------------------------------------------------------------------------------
# Leases and log events, normalised across servers


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
    """A DHCP server subprocess in a namespace: start, stop, SIGKILL, leases, events."""

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

    # -- to implement (and command, is_ready from ServerProcess)
    def parse_line(self, line: str) -> dict[str, Any] | None:
        return None

    def leases(self) -> list[Lease]:
        raise NotImplementedError

    # -- common
    @classmethod
    def available(cls) -> bool:
        return have(cls.tool)

    def leases_by_ip(self) -> dict[str, Lease]:
        return {lease.ip: lease for lease in self.leases()}





def udp_rcvbuf_errors(ns: Netns) -> int:
    """The namespace's UDP RcvbufErrors counter (/proc/net/snmp is per network namespace):
    datagrams dropped because a receiving socket's buffer was full."""
    lines = [ln.split() for ln in ns.run("cat", "/proc/net/snmp").stdout.splitlines()
             if ln.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("RcvbufErrors")])





def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


class PxedServer(DhcpServer):
    name = "pxed"
    tool = "ip"
    keeps_released_rows = True
    python: ClassVar[str] = os.environ.get("PXED_PYTHON", sys.executable)

    @classmethod
    def available(cls) -> bool:
        return True

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "leases.sqlite3"

    def config_text(self) -> str:
        s = self.setup
        lines = [
            "[server]",
            f"interfaces = {_toml_value([self.iface])}",
            'mode = "dhcp"',
            f"state_dir = {_toml_value(str(self.state_dir))}",
            "",
            "[dhcp]",
            f"range = {_toml_value(f'{s.pool_first}-{s.pool_last}')}",
            f'lease_time = "{s.lease_time}s"',
        ]
        if s.router:
            lines.append(f"router = {_toml_value(s.router)}")
        if s.dns:
            lines.append(f"dns = {_toml_value(list(s.dns))}")
        if s.domain:
            lines.append(f"domain = {_toml_value(s.domain)}")
        for host in s.hosts:
            lines += ["", "[[dhcp.host]]", f"mac = {_toml_value(host.mac)}",
                      f"ip = {_toml_value(host.ip)}"]
            if host.hostname:
                lines.append(f"hostname = {_toml_value(host.hostname)}")
            if host.boot:
                lines.append(f"boot = {_toml_value(host.boot)}")
        if s.boot_file:
            lines += ["", "[boot]", f"bios = {_toml_value(s.boot_file)}"]
        lines += ["", "[tftp]", f"root = {_toml_value(str(self.workdir / 'tftp'))}", ""]
        return "\n".join(lines)

    def command(self) -> list[str]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "tftp").mkdir(exist_ok=True)
        config = self.workdir / "pxed.toml"
        config.write_text(self.config_text())
        return [
            self.python, "-m", "pxed", "--config", str(config), "--no-tftp",
            "--log-format", "json", "--log-level", "warning" if self.quiet else "debug",
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Run the checkout under test even when the venv holds another copy.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if "PYTHONPATH" in env else "")
        return env

    def parse_line(self, line: str) -> dict[str, Any] | None:
        return json_event(line)  # pxed logs JSON lines (--log-format json)

    def is_ready(self) -> bool:
        if self.quiet:  # at level warning "pxed.ready" (info) is not logged
            return udp_port_bound(self.ns, 67)
        return self.log is not None and any(
            e.get("event") == "pxed.ready" for e in self.log.snapshot()
        )

    def leases(self) -> list[Lease]:
        if not self.db_path.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute(
                "SELECT ip, mac, state, expires, hostname FROM leases"
            ).fetchall()
        finally:
            conn.close()
        return [
            Lease(_ip_text(ip), norm_mac(mac if isinstance(mac, str) else bytes(mac)),
                  str(state).upper(), float(expires or 0), hostname)
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


class DnsmasqServer(DhcpServer):
    """dnsmasq as a reference server: validates the harness, and a benchmark peer."""

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
        ]
        cmd.append("--quiet-dhcp" if self.quiet else "--log-dhcp")
        if s.router:
            cmd.append(f"--dhcp-option=option:router,{s.router}")
        if s.dns:
            cmd.append(f"--dhcp-option=option:dns-server,{','.join(s.dns)}")
        if s.domain:
            cmd.append(f"--dhcp-option=option:domain-name,{s.domain}")
        for host in s.hosts:
            spec = ",".join(x for x in (host.mac, host.ip, host.hostname) if x)
            cmd.append(f"--dhcp-host={spec}")
        if s.boot_file:
            cmd.append(f"--dhcp-boot={s.boot_file}")
        return cmd

    def parse_line(self, line: str) -> dict[str, Any] | None:
        m = _DNSMASQ_RE.search(line)
        if not m:
            return None
        kind = m["kind"].lower()
        words = m["rest"].split()
        event: dict[str, Any] = {"event": f"dhcp.{kind}", "xid": norm_xid(m["xid"])}
        for word in words:
            if _MAC_RE.match(word.lower()) and "mac" not in event:
                event["mac"] = word.lower()
            elif re.match(r"^\d+\.\d+\.\d+\.\d+$", word) and "ip" not in event:
                event["ip"] = word
        return event

    def is_ready(self) -> bool:
        return self.log is not None and any("DHCP, IP range" in ln for ln in self.log.lines)

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


class KeaServer(DhcpServer):
    """ISC Kea (kea-dhcp4, memfile leases) as a benchmark peer."""

    name = "kea"
    tool = "kea-dhcp4"
    logs_events = False

    def __init__(self, *args: Any, socket_type: str = "raw", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.socket_type = socket_type
        """'raw' serves clients on the link; 'udp' only relayed traffic (benchmarks)."""

    @property
    def lease_file(self) -> Path:
        return self.workdir / "kea-leases4.csv"

    def config(self) -> dict[str, Any]:
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
        }

    def command(self) -> list[str]:
        path = self.workdir / "kea-dhcp4.json"
        path.write_text(json.dumps(self.config(), indent=2))
        return ["kea-dhcp4", "-c", str(path)]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KEA_PIDFILE_DIR"] = str(self.workdir)
        env["KEA_LOCKFILE_DIR"] = str(self.workdir)
        env["KEA_LOGGER_DESTINATION"] = "stdout"
        return env

    def is_ready(self) -> bool:
        return self.log is not None and any("DHCP4_STARTED" in ln for ln in self.log.lines)

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
                             row.get("hostname") or None))
        return out


SERVERS: dict[str, type[DhcpServer]] = {
    "pxed": PxedServer, "dnsmasq": DnsmasqServer, "kea": KeaServer,
}

#: The server the integration tests drive. One line (or the environment) swaps it.
SERVER_UNDER_TEST: str = os.environ.get("PXED_TEST_DHCP_SERVER", "pxed")


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
               **kwargs: Any) -> DhcpServer:
        srv = self.server_cls(
            self.server_ns, SERVER_IF, setup or self.setup,
            self.tmp / f"server{len(self.servers)}", quiet=quiet, **kwargs,
        )
        self.servers.append(srv)
        return srv

    def add_relay_address(self, cidr: str = f"{RELAY_IP}/{PREFIX}") -> str:
        """perfdhcp needs an address on its link: it poses as a relay with giaddr = this."""
        self.lab.addr(self.client_ns, CLIENT_IF, cidr)
        return cidr.split("/")[0]

    def close(self) -> None:
        for srv in self.servers:
            try:
                srv.stop(timeout=5)
            except Exception:  # teardown goes on; the Lab kills what is left
                srv.kill()


def make_dhcp_net(
    lab: Lab,
    setup: DhcpSetup | None = None,
    *,
    client_mac: str = "02:00:5e:10:00:01",
    server: str | type[DhcpServer] | None = None,
) -> DhcpNet:
    setup = setup or DhcpSetup()
    server_cls = SERVERS[server or SERVER_UNDER_TEST] if not isinstance(server, type) else server
    server_ns = lab.ns("s")
    client_ns = lab.ns("c")
    lab.veth(server_ns, SERVER_IF, client_ns, CLIENT_IF)
    client_ns.run("ip", "link", "set", CLIENT_IF, "address", client_mac)
    lab.addr(server_ns, SERVER_IF, f"{setup.server_ip}/{setup.prefix}")
    return DhcpNet(lab, server_ns, client_ns, setup, client_mac, server_cls)


# ---------------------------------------------------------------------------------------------
# Packet capture on the client side: the ground truth of what clients were sent


DHCP_TYPES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK",
              7: "RELEASE", 8: "INFORM"}


@dataclass(frozen=True)
class DhcpMsg:
    time: float
    msg_type: str
    xid: int
    chaddr: str
    ciaddr: str
    yiaddr: str
    giaddr: str
    src: str
    dst: str
    options: dict[str, Any]


class Capture:
    """tcpdump writing a pcap of DHCP traffic inside a namespace; stop() flushes it."""

    def __init__(self, ns: Netns, iface: str, path: Path) -> None:
        require("tcpdump")
        self.path = path
        self.stats = ""
        self.proc = ns.popen(
            "tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-B", "16384", "-s", "1500",
            "-w", str(path), "udp port 67 or udp port 68",
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        # tcpdump says "listening on" once the capture is open (maybe after warnings).
        assert self.proc.stderr is not None
        said = []
        for _ in range(10):
            line = self.proc.stderr.readline().decode(errors="replace")
            said.append(line)
            if "listening on" in line or not line:
                break
        if "listening on" not in said[-1]:
            self.proc.kill()
            raise RuntimeError(f"tcpdump did not start: {''.join(said)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        assert self.proc.stderr is not None
        self.stats = self.proc.stderr.read().decode(errors="replace")

    @property
    def kernel_drops(self) -> int:
        m = re.search(r"(\d+) packets? dropped by kernel", self.stats)
        return int(m.group(1)) if m else 0

    def messages(self) -> list[DhcpMsg]:
        return read_dhcp_pcap(self.path)


def read_dhcp_pcap(path: Path) -> list[DhcpMsg]:
    from scapy.layers.dhcp import BOOTP, DHCP  # type: ignore[import-untyped]
    from scapy.layers.inet import IP  # type: ignore[import-untyped]
    from scapy.utils import rdpcap  # type: ignore[import-untyped]

    out = []
    for pkt in rdpcap(str(path)):
        if BOOTP not in pkt or DHCP not in pkt:
            continue
        boot = pkt[BOOTP]
        opts: dict[str, Any] = {}
        for opt in pkt[DHCP].options:
            if isinstance(opt, tuple) and len(opt) >= 2:
                opts[str(opt[0])] = opt[1] if len(opt) == 2 else list(opt[1:])
        mtype = opts.get("message-type")
        out.append(DhcpMsg(
            time=float(pkt.time),
            msg_type=DHCP_TYPES.get(int(mtype), str(mtype)) if mtype is not None else "BOOTP",
            xid=int(boot.xid),
            chaddr=norm_mac(bytes(boot.chaddr)),
            ciaddr=str(boot.ciaddr),
            yiaddr=str(boot.yiaddr),
            giaddr=str(boot.giaddr),
            src=str(pkt[IP].src),
            dst=str(pkt[IP].dst),
            options=opts,
        ))
    return out


def acks(msgs: Iterable[DhcpMsg]) -> list[DhcpMsg]:
    return [m for m in msgs if m.msg_type == "ACK"]


def conflicting_acks(msgs: Iterable[DhcpMsg]) -> dict[str, set[str]]:
    """Addresses that were ACKed to more than one MAC."""
    owners: dict[str, set[str]] = {}
    for m in acks(msgs):
        owners.setdefault(m.yiaddr, set()).add(m.chaddr)
    return {ip: macs for ip, macs in owners.items() if len(macs) > 1}


# ---------------------------------------------------------------------------------------------
# Clients

_RECORD_SCRIPT = """#!/bin/sh
# Records every invocation and configures the address in the client namespace (only there:
# this script is run by a client that runs inside a test namespace).
{{
  echo "reason=${{reason:-$1}}"
  env | grep -E '^(new_|old_|interface=)' | sort
  env | grep -E '^(ip|subnet|mask|router|dns|domain|hostname|lease|serverid|boot_file)=' | sort
  echo "--"
}} >> {record}
iface="${{interface}}"
case "${{reason:-$1}}" in
  PREINIT) ip link set dev "$iface" up ;;
  BOUND|RENEW|REBIND|REBOOT)
    ip -4 addr flush dev "$iface"
    ip addr add "$new_ip_address/$new_subnet_mask" dev "$iface" ;;
  EXPIRE|FAIL|RELEASE|STOP) ip -4 addr flush dev "$iface" ;;
  bound|renew)
    ip -4 addr flush dev "$iface"
    ip addr add "$ip/${{mask:-16}}" dev "$iface" ;;
  deconfig) ip -4 addr flush dev "$iface"; ip link set dev "$iface" up ;;
esac
exit 0
"""


def _write_record_script(path: Path, record: Path) -> None:
    path.write_text(_RECORD_SCRIPT.format(record=record))
    path.chmod(0o755)


def _read_records(record: Path) -> list[dict[str, str]]:
    if not record.exists():
        return []
    out: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in record.read_text().splitlines():
        if line == "--":
            out.append(cur)
            cur = {}
        elif "=" in line:
            key, _, value = line.partition("=")
            cur[key] = value
    return out


class Dhclient:
    """ISC dhclient in the client namespace, with its own lease, pid, config and script files.

    Runs in the foreground (-d) so the test owns the process. The script records every
    invocation (reason + new_* variables) and puts the address on the interface, so that
    renewals (unicast, from ciaddr) and releases can be sent.
    """

    def __init__(self, ns: Netns, iface: str, workdir: Path, renew_after: int | None = None):
        require("dhclient")
        self.ns, self.iface, self.dir = ns, iface, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.lease_file = workdir / "dhclient.leases"
        self.pid_file = workdir / "dhclient.pid"
        self.record = workdir / "dhclient.record"
        self.script = workdir / "dhclient-script"
        self.conf = workdir / "dhclient.conf"
        _write_record_script(self.script, self.record)
        conf = [
            "timeout 20;", "retry 1;", "initial-interval 1;", "backoff-cutoff 2;",
            "request subnet-mask, broadcast-address, routers, domain-name,"
            " domain-name-servers, host-name;",
        ]
        if renew_after is not None:
            # Renew (unicast REQUEST with ciaddr, RENEWING) soon instead of at T1.
            conf.append(f"supersede dhcp-renewal-time {renew_after};")
        self.conf.write_text("\n".join(conf) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def _args(self) -> list[str]:
        return ["-cf", str(self.conf), "-lf", str(self.lease_file), "-pf", str(self.pid_file),
                "-sf", str(self.script)]

    def start(self) -> None:
        """dhclient -1 -d: one attempt to get a lease, then stay in the foreground."""
        self.proc = self.ns.popen(
            "dhclient", "-d", "-1", "-v", *self._args(), self.iface,
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "dhclient.out", "ab"),  # noqa: SIM115
        )

    def records(self) -> list[dict[str, str]]:
        return _read_records(self.record)

    def wait_reason(self, reasons: Sequence[str], timeout: float = 30,
                    after: int = 0) -> dict[str, str]:
        def found() -> dict[str, str] | None:
            for rec in self.records()[after:]:
                if rec.get("reason") in reasons:
                    return rec
            return None

        ok = wait_for(lambda: found() is not None
                      or (self.proc is not None and self.proc.poll() is not None), timeout)
        rec = found()
        if not ok or rec is None:
            raise AssertionError(
                f"dhclient: none of {reasons} within {timeout} s; records: {self.records()}\n"
                f"{self.output()}"
            )
        return rec

    def release(self, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """dhclient -r: release the lease (DHCPRELEASE) and stop the running client."""
        res = self.ns.run("dhclient", "-r", "-v", *self._args(), self.iface,
                          check=False, timeout=timeout)
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.stop()
        return res

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def output(self) -> str:
        path = self.dir / "dhclient.out"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


class Udhcpc:
    """busybox udhcpc in the foreground; SIGUSR1 renews, SIGUSR2 releases."""

    def __init__(self, ns: Netns, iface: str, workdir: Path) -> None:
        require("busybox")
        self.ns, self.iface, self.dir = ns, iface, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.record = workdir / "udhcpc.record"
        self.script = workdir / "udhcpc-script"
        _write_record_script(self.script, self.record)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        self.proc = self.ns.popen(
            "busybox", "udhcpc", "-f", "-n", "-t", "5", "-T", "2", "-i", self.iface,
            "-s", str(self.script), *extra,
            stdout=open(self.dir / "udhcpc.out", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )

    def records(self) -> list[dict[str, str]]:
        return _read_records(self.record)

    def wait_reason(self, reasons: Sequence[str], timeout: float = 30,
                    after: int = 0) -> dict[str, str]:
        def found() -> dict[str, str] | None:
            for rec in self.records()[after:]:
                if rec.get("reason") in reasons:
                    return rec
            return None

        ok = wait_for(lambda: found() is not None, timeout)
        rec = found()
        if not ok or rec is None:
            raise AssertionError(
                f"udhcpc: none of {reasons} within {timeout} s; records: {self.records()}\n"
                f"{self.output()}"
            )
        return rec

    def signal(self, sig: int) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.output()
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def output(self) -> str:
        path = self.dir / "udhcpc.out"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


# ---------------------------------------------------------------------------------------------
# perfdhcp


@dataclass(frozen=True)
class ExchangeStats:
    sent: int
    received: int
    drops: int
    orphans: int
    rejected: int
    non_unique: int
    avg_delay_ms: float | None

    @property
    def drop_ratio(self) -> float:
        return self.drops / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class PerfResult:
    returncode: int
    rate: float | None
    """Achieved 4-way exchanges per second as perfdhcp reports it."""
    expected_rate: float | None
    exchanges: dict[str, ExchangeStats]
    """'DISCOVER-OFFER' and 'REQUEST-ACK'."""
    output: str

    @property
    def do(self) -> ExchangeStats:
        return self.exchanges["DISCOVER-OFFER"]

    @property
    def ra(self) -> ExchangeStats:
        return self.exchanges["REQUEST-ACK"]


def parse_perfdhcp(output: str, returncode: int = 0) -> PerfResult:
    rate = expected = None
    m = re.search(r"Rate:\s*([\d.]+)\s*4-way exchanges/second(?:, expected rate:\s*([\d.]+))?",
                  output)
    if m:
        rate = float(m.group(1))
        expected = float(m.group(2)) if m.group(2) else None
    exchanges: dict[str, ExchangeStats] = {}
    for sec in re.finditer(r"\*\*\*Statistics for: ([A-Z-]+)\*\*\*(.*?)(?=\*\*\*|\Z)", output,
                           re.S):
        body = sec.group(2)

        def num(label: str, body: str = body) -> int:
            mm = re.search(rf"^{label}:\s*(\d+)", body, re.M)
            return int(mm.group(1)) if mm else 0

        avg = re.search(r"^avg delay:\s*([\d.]+) ms", body, re.M)
        exchanges[sec.group(1)] = ExchangeStats(
            sent=num("sent packets"), received=num("received packets"), drops=num("drops"),
            orphans=num("orphans"), rejected=num("rejected leases"),
            non_unique=num("non unique addresses"),
            avg_delay_ms=float(avg.group(1)) if avg else None,
        )
    return PerfResult(returncode, rate, expected, exchanges, output)


def perfdhcp_command(
    server_ip: str = SERVER_IP, local: str = RELAY_IP, *, rate: int | None = None,
    clients: int | None = None, period: float | None = None, num: int | None = None,
    base_mac: str | None = None, drop_time: float | None = None, exit_wait: float = 2.0,
    extra: Sequence[str] = (),
) -> list[str]:
    """The perfdhcp command line (relay mode: ``-l`` is the relay's own address).

    ``exit_wait`` (-W) lets replies to the last requests arrive before the report: without
    it, perfdhcp counts every request still in flight at the end as a drop. ``drop_time``
    (-d, default 1 s) is how late a reply may be and still count.
    """
    cmd = ["perfdhcp", "-4", "-l", local]
    if exit_wait:
        cmd += ["-W", str(int(exit_wait * 1_000_000))]
    if drop_time is not None:
        cmd += ["-d", str(drop_time)]
    if rate is not None:
        cmd += ["-r", str(rate)]
    if clients is not None:
        cmd += ["-R", str(clients)]
    if period is not None:
        cmd += ["-p", str(max(1, round(period)))]  # perfdhcp takes whole seconds only
    if num is not None:
        cmd += ["-n", str(num)]
    if base_mac is not None:
        cmd += ["-b", f"mac={base_mac}"]
    return [*cmd, *extra, server_ip]


def run_perfdhcp(ns: Netns, *args: Any, timeout: float = 120, **kwargs: Any) -> PerfResult:
    require("perfdhcp")
    cmd = perfdhcp_command(*args, **kwargs)
    res = ns.run(*cmd, check=False, timeout=timeout)
    if res.returncode not in (0, 3):  # 3: ran, some exchanges not completed
        raise RuntimeError(f"{' '.join(cmd)} -> {res.returncode}\n{res.stdout}\n{res.stderr}")
    return parse_perfdhcp(res.stdout + res.stderr, res.returncode)


def start_perfdhcp(ns: Netns, *args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
    require("perfdhcp")
    return ns.popen(*perfdhcp_command(*args, **kwargs))


def finish_perfdhcp(proc: subprocess.Popen[bytes], timeout: float = 60) -> PerfResult:
    out, _ = proc.communicate(timeout=timeout)
    return parse_perfdhcp(out.decode(errors="replace"), proc.returncode)


def mac_in_space(mac: str, base: str, size: int) -> bool:
    """perfdhcp -b mac=BASE -R SIZE draws client MACs from BASE .. BASE+SIZE-1."""
    value = int(mac.replace(":", ""), 16)
    start = int(base.replace(":", ""), 16)
    return start <= value < start + size


def now() -> float:
    return time.time()
