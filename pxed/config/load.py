"""Loading and validating configuration: TOML or a mapping -> Config, one line per problem.

The same validation runs for `pxed check`, for the daemon at start-up and for a Config
handed to pxed.Server by another program, so they refuse the same things with the same words.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from pxed.config import (
    BootConfig,
    Config,
    HostConfig,
    SubnetConfig,
    TftpConfig,
)
from pxed.dhcp import options as dopts
from pxed.errors import ConfigError
from pxed.netinfo import InterfaceInfo, interface_info
from pxed.tftp.files import FileRefused, FileStore
from pxed.tftp.packet import ErrorCode

InterfaceLookup = Callable[[str], InterfaceInfo | None]

# The keys each table accepts; anything else is an "unknown key" problem.
SERVER_KEYS = {
    "interfaces",
    "mode",
    "state_dir",
    "log_format",
    "log_level",
    "dhcp_port",
    "probe_timeout",
}
SUBNET_KEYS = {
    "range",
    "lease_time",
    "router",
    "dns",
    "domain",
    "ntp",
    "mtu",
    "broadcast",
    "routes",
    "options",
    "network",
    "interface",
}
DHCP_KEYS = SUBNET_KEYS | {
    "enabled",
    "host",
    "subnet",
    "offer_hold",
    "decline_quarantine",
    "known_only",
    "new_clients_per_second",
}
HOST_KEYS = {"mac", "ip", "hostname", "boot"}
BOOT_KEYS = {"bios", "uefi_x64", "uefi_ia32", "uefi_arm64", "ipxe", "next_server"}
TFTP_KEYS = {
    "root",
    "enabled",
    "port",
    "single_port",
    "port_range",
    "case_insensitive",
    "per_client",
    "world_readable_only",
    "max_blksize",
    "max_windowsize",
    "default_timeout",
    "retries",
    "max_transfers",
    "max_transfers_per_client",
}
TOP_KEYS = {"server", "dhcp", "boot", "tftp"}

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MAC = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$")
_BOOT_DEFAULTS = BootConfig()


def parse_duration(value: object) -> int:
    """'12h', '30m', '1d', '90s', 3600 -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{value} is not a positive duration")
        return value
    if isinstance(value, str):
        m = _DURATION.match(value.lower())
        if m and int(m.group(1)) > 0:
            return int(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"{value!r} is not a duration (like 3600, '90s', '30m', '12h', '1d')")


def normalise_mac(text: str) -> str:
    mac = text.strip().lower()
    if not _MAC.match(mac):
        raise ValueError(f"{text!r} is not a MAC address (like 52:54:00:12:34:56)")
    return mac.replace("-", ":")


def parse_range(text: str) -> tuple[IPv4Address, IPv4Address]:
    """'198.19.1.0-198.19.254.254' -> (start, end); 'start-end' with start <= end."""
    parts = [p.strip() for p in str(text).split("-")]
    if len(parts) != 2:
        raise ValueError(f"range {text!r} is not FIRST-LAST (like 198.19.1.0-198.19.254.254)")
    start, end = ipaddress.IPv4Address(parts[0]), ipaddress.IPv4Address(parts[1])
    if start > end:
        raise ValueError(f"range {text!r} starts after it ends")
    return start, end


@dataclass
class _Problems:
    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)

    def check(self, where: str, fn: Callable[[], Any]) -> Any:
        """Run a parse step; on ValueError record '<where>: <reason>' and return None."""
        try:
            return fn()
        except (ValueError, TypeError) as exc:
            self.add(f"{where}: {_reason(exc)}")
            return None


def _reason(exc: Exception) -> str:
    text = str(exc)
    # ipaddress says "Expected 4 octets in '1.2.3'"; keep its message but make it say what failed.
    return text if text else exc.__class__.__name__


def _unknown(problems: _Problems, table: str, data: Mapping[str, Any], known: set[str]) -> None:
    for key in data:
        if key not in known:
            problems.add(f"{table}: unknown key {key!r}")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _ip(value: Any) -> IPv4Address:
    if not isinstance(value, str | IPv4Address):
        raise ValueError(f"{value!r} is not an IPv4 address")
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address") from None


def _ips(value: Any) -> tuple[IPv4Address, ...]:
    return tuple(_ip(v) for v in _as_list(value))


def load_file(path: Path) -> dict[str, Any]:
    """Read a TOML file; an unreadable or malformed file is a ConfigError naming it."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two nested mappings; values in overrides win (command-line flags)."""
    out: dict[str, Any] = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(
    data: Mapping[str, Any],
    *,
    lookup: InterfaceLookup = interface_info,
    check_files: bool = True,
    notes: list[str] | None = None,
    warnings: list[str] | None = None,
) -> Config:
    """Validate a configuration mapping (the TOML's shape) into a Config.

    Raises ConfigError with every problem. ``notes`` collects what was derived or defaulted
    (the daemon logs them), such as a pool chosen from the interface's subnet.
    """
    problems = _Problems()
    notes = notes if notes is not None else []
    warnings = warnings if warnings is not None else []
    _unknown(problems, "config", data, TOP_KEYS)
    server = _table(problems, data, "server")
    dhcp = _table(problems, data, "dhcp")
    boot_t = _table(problems, data, "boot")
    tftp_t = _table(problems, data, "tftp")
    _unknown(problems, "[server]", server, SERVER_KEYS)
    _unknown(problems, "[dhcp]", dhcp, DHCP_KEYS)
    _unknown(problems, "[boot]", boot_t, BOOT_KEYS)
    _unknown(problems, "[tftp]", tftp_t, TFTP_KEYS)

    interfaces = tuple(str(i) for i in _as_list(server.get("interfaces")))
    dhcp_enabled = dhcp.get("enabled", True)
    if not isinstance(dhcp_enabled, bool):
        problems.add(f"[dhcp] enabled: {dhcp_enabled!r} is not true or false")
        dhcp_enabled = True
    mode = server.get("mode", "auto")
    if mode not in ("dhcp", "proxy", "auto"):
        problems.add(f"[server] mode: {mode!r} is not one of 'dhcp', 'proxy', 'auto'")
        mode = "auto"
    probe_timeout = problems.check(
        "[server] probe_timeout", partial(parse_duration, server.get("probe_timeout", 5))
    )
    log_format = server.get("log_format", "console")
    if log_format not in ("console", "json"):
        problems.add(f"[server] log_format: {log_format!r} is not 'console' or 'json'")
        log_format = "console"
    log_level = str(server.get("log_level", "info")).lower()
    if log_level not in ("debug", "info", "warning", "error"):
        problems.add(f"[server] log_level: {log_level!r} is not debug, info, warning or error")
        log_level = "info"
    dhcp_port = server.get("dhcp_port", 67)
    if not isinstance(dhcp_port, int) or not 1 <= dhcp_port <= 65535:
        problems.add(f"[server] dhcp_port: {dhcp_port!r} is not a port number")
        dhcp_port = 67

    infos: dict[str, InterfaceInfo] = {}
    waiting: list[str] = []
    for name in interfaces:
        info = lookup(name)
        # Not a refusal: systemd starts pxed before every bridge or VLAN exists, and pxed
        # serves an interface as soon as it appears (pxed/net/links.py).
        if info is None:
            warnings.append(f"[server] interfaces: no interface named {name!r} yet")
            waiting.append(name)
        elif not info.addresses:
            warnings.append(f"[server] interfaces: {name} has no IPv4 address yet")
            waiting.append(name)
        else:
            infos[name] = info

    tftp = _tftp(problems, tftp_t)
    hosts = _hosts(problems, dhcp)
    subnets = _subnets(problems, dhcp, infos, notes) if dhcp_enabled else []
    boot = _boot(problems, boot_t)

    offer_hold = problems.check(
        "[dhcp] offer_hold", lambda: parse_duration(dhcp.get("offer_hold", 60))
    )
    quarantine = problems.check(
        "[dhcp] decline_quarantine", lambda: parse_duration(dhcp.get("decline_quarantine", "10m"))
    )

    known_only = dhcp.get("known_only", False)
    if not isinstance(known_only, bool):
        problems.add(f"[dhcp] known_only: {known_only!r} is not true or false")
        known_only = False
    rate = dhcp.get("new_clients_per_second", 0)
    if not isinstance(rate, int) or isinstance(rate, bool) or not 0 <= rate <= 1_000_000:
        problems.add(f"[dhcp] new_clients_per_second: {rate!r} is not a count (0 = no bound)")
        rate = 0
    if known_only and not hosts:
        problems.add("[dhcp] known_only: no [[dhcp.host]] entries, so nobody would be answered")
    # A subnet still to be derived from an interface that has no address yet: the [dhcp]
    # table names no range, network or subnets, and nothing could be derived at load.
    derive_on = None
    derive_template: SubnetConfig | None = None
    if (
        dhcp_enabled
        and waiting
        and not subnets
        and not {"range", "network"} & dhcp.keys()
        and not dhcp.get("subnet")
    ):
        derive_on = waiting[0]
        settings = _subnet_settings(problems, "[dhcp]", dhcp)
        if settings is not None:
            derive_template = SubnetConfig(
                network=ipaddress.IPv4Network("0.0.0.0/32"),
                ranges=(),
                interface=derive_on,
                derived=True,
                **settings,
            )

    _check_hosts(problems, hosts, subnets)
    if check_files:
        boot = _check_boot_files(problems, boot, hosts, tftp, notes)

    if dhcp_enabled and not interfaces and mode != "dhcp" and not problems.lines:
        problems.add(f"[server] interfaces: mode {mode!r} needs an interface (--iface)")
    if dhcp_enabled and not subnets and mode == "dhcp" and not derive_on and not problems.lines:
        problems.add(
            "[dhcp] range: no address pool (give --iface, or a range inside an interface's subnet)"
        )

    if problems.lines:
        raise ConfigError(problems.lines)
    return Config(
        interfaces=interfaces,
        mode=mode,
        probe_timeout=float(probe_timeout or 5),
        dhcp_enabled=dhcp_enabled,
        state_dir=Path(str(server.get("state_dir", "/var/lib/pxed"))),
        subnets=tuple(subnets),
        hosts=tuple(hosts),
        boot=boot,
        tftp=tftp,
        log_format=log_format,
        log_level=log_level,
        dhcp_port=dhcp_port,
        offer_hold=float(offer_hold or 60),
        decline_quarantine=int(quarantine or 600),
        known_only=known_only,
        new_clients_per_second=rate,
        derive_on=derive_on,
        derive_template=derive_template,
    )


def _table(problems: _Problems, data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        problems.add(f"[{name}]: must be a table")
        return {}
    return value


def _port_range(
    problems: _Problems, value: Any, port: int, single_port: bool
) -> tuple[int, int] | None:
    """``"FIRST-LAST"`` or ``[FIRST, LAST]``: the ports transfers are served from."""
    if value is None:
        return None
    where = "[tftp] port_range"
    ends: list[Any] = []
    if isinstance(value, str):
        ends = [part.strip() for part in value.split("-")]
        if len(ends) == 2 and all(part.isdigit() for part in ends):
            ends = [int(part) for part in ends]
    elif isinstance(value, list):
        ends = list(value)
    if len(ends) != 2 or not all(isinstance(e, int) and not isinstance(e, bool) for e in ends):
        problems.add(f'{where}: {value!r} is not "FIRST-LAST" or [FIRST, LAST] (port numbers)')
        return None
    first, last = ends
    if not 1 <= first <= last <= 65535:
        problems.add(f"{where}: {first}-{last} is not a range of ports within 1..65535")
        return None
    if single_port:
        problems.add(f"{where}: not with single_port = true (every transfer is on port {port})")
        return None
    if first <= port <= last:
        problems.add(f"{where}: {first}-{last} holds the listening port {port}")
        return None
    return (first, last)


def _per_client(problems: _Problems, value: Any) -> str | None:
    if value is None:
        return None
    if value in ("ip", "mac"):
        return str(value)
    problems.add(f'[tftp] per_client: {value!r} is not "mac" or "ip"')
    return None


def _tftp(problems: _Problems, t: Mapping[str, Any]) -> TftpConfig:
    d = TftpConfig()

    def num(key: str, lo: float, hi: float, default: Any, kind: type = int) -> Any:
        v = t.get(key, default)
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or (kind is int and not isinstance(v, int))
        ):
            problems.add(f"[tftp] {key}: {v!r} is not a number")
            return default
        if not lo <= v <= hi:
            problems.add(f"[tftp] {key}: {v} is outside {lo}..{hi}")
            return default
        return v

    def flag(key: str, default: bool) -> bool:
        v = t.get(key, default)
        if not isinstance(v, bool):
            problems.add(f"[tftp] {key}: {v!r} is not true or false")
            return default
        return v

    port = num("port", 0, 65535, d.port)
    single_port = flag("single_port", d.single_port)
    return TftpConfig(
        root=Path(str(t.get("root", d.root))),
        enabled=flag("enabled", d.enabled),
        port=port,
        single_port=single_port,
        port_range=_port_range(problems, t.get("port_range"), port, single_port),
        case_insensitive=flag("case_insensitive", d.case_insensitive),
        per_client=_per_client(problems, t.get("per_client")),
        world_readable_only=flag("world_readable_only", d.world_readable_only),
        max_blksize=num("max_blksize", 8, 65464, d.max_blksize),
        max_windowsize=num("max_windowsize", 1, 65535, d.max_windowsize),
        default_timeout=float(num("default_timeout", 0.1, 255, d.default_timeout, float)),
        retries=num("retries", 1, 100, d.retries),
        max_transfers=num("max_transfers", 1, 100000, d.max_transfers),
        max_transfers_per_client=num(
            "max_transfers_per_client", 1, 100000, d.max_transfers_per_client
        ),
    )


def _hosts(problems: _Problems, dhcp: Mapping[str, Any]) -> list[HostConfig]:
    hosts: list[HostConfig] = []
    raw = dhcp.get("host", [])
    if not isinstance(raw, list):
        problems.add("[[dhcp.host]]: must be an array of tables")
        return hosts
    for n, h in enumerate(raw, 1):
        where = f"[[dhcp.host]] #{n}"
        if not isinstance(h, Mapping):
            problems.add(f"{where}: must be a table")
            continue
        _unknown(problems, where, h, HOST_KEYS)
        if "mac" not in h:
            problems.add(f"{where}: needs a mac")
            continue
        mac: str | None = problems.check(f"{where} mac", partial(normalise_mac, str(h["mac"])))
        ip: IPv4Address | None = (
            problems.check(f"{where} ip", partial(_ip, h["ip"])) if "ip" in h else None
        )
        hostname = h.get("hostname")
        if hostname is not None and not re.match(
            r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$", str(hostname)
        ):
            problems.add(f"{where} hostname: {hostname!r} is not a valid host name")
        if mac is not None:
            hosts.append(HostConfig(mac=mac, ip=ip, hostname=hostname, boot=h.get("boot")))
    seen_mac: dict[str, int] = {}
    for n, host in enumerate(hosts, 1):
        if host.mac in seen_mac:
            problems.add(
                f"[[dhcp.host]] #{n}: mac {host.mac} is already used by host #{seen_mac[host.mac]}"
            )
        seen_mac.setdefault(host.mac, n)
    return hosts


def _subnets(
    problems: _Problems,
    dhcp: Mapping[str, Any],
    infos: Mapping[str, InterfaceInfo],
    notes: list[str],
) -> list[SubnetConfig]:
    tables: list[tuple[str, Mapping[str, Any]]] = []
    defaults = {k: v for k, v in dhcp.items() if k in SUBNET_KEYS}
    extra = dhcp.get("subnet", [])
    if not isinstance(extra, list):
        problems.add("[[dhcp.subnet]]: must be an array of tables")
        extra = []
    for n, sub in enumerate(extra, 1):
        if not isinstance(sub, Mapping):
            problems.add(f"[[dhcp.subnet]] #{n}: must be a table")
            continue
        _unknown(problems, f"[[dhcp.subnet]] #{n}", sub, SUBNET_KEYS)
        # A subnet inherits the [dhcp] settings (router, dns, lease time...) but not its range.
        inherited = {
            k: v for k, v in defaults.items() if k not in ("range", "network", "interface")
        }
        tables.append((f"[[dhcp.subnet]] #{n}", {**inherited, **sub}))
    if "range" in dhcp or not extra:
        tables.insert(0, ("[dhcp]", defaults))

    subnets: list[SubnetConfig] = []
    used_ifaces: set[str] = set()
    for where, t in tables:
        sub = _subnet(problems, where, t, infos, notes, used_ifaces)
        if sub is not None:
            subnets.append(sub)
    for i, a in enumerate(subnets):
        for b in subnets[i + 1 :]:
            if a.network.overlaps(b.network):
                problems.add(f"[dhcp] subnets {a.network} and {b.network} overlap")
    return subnets


def _subnet(
    problems: _Problems,
    where: str,
    t: Mapping[str, Any],
    infos: Mapping[str, InterfaceInfo],
    notes: list[str],
    used_ifaces: set[str],
) -> SubnetConfig | None:
    located = _locate(problems, where, t, infos, notes, used_ifaces)
    # The options are checked even when the subnet could not be placed: every problem is told.
    settings = _subnet_settings(problems, where, t)
    if located is None or settings is None:
        return None
    network, info, ranges = located
    return SubnetConfig(
        network=network,
        ranges=tuple(ranges),
        interface=info.name if info else None,
        derived="range" not in t and "network" not in t,
        **settings,
    )


Located = tuple[IPv4Network, InterfaceInfo | None, list[tuple[IPv4Address, IPv4Address]]]


def _locate(
    problems: _Problems,
    where: str,
    t: Mapping[str, Any],
    infos: Mapping[str, InterfaceInfo],
    notes: list[str],
    used_ifaces: set[str],
) -> Located | None:
    """The subnet's network, its interface and pool: given, or derived from the interfaces."""
    ranges: list[tuple[IPv4Address, IPv4Address]] = []
    for r in _as_list(t.get("range")):
        parsed = problems.check(f"{where} range", partial(parse_range, r))
        if parsed:
            ranges.append(parsed)
    network: IPv4Network | None = None
    if "network" in t:
        network = problems.check(
            f"{where} network", lambda: ipaddress.IPv4Network(str(t["network"]), strict=False)
        )
    iface_name: str | None = t.get("interface")
    if iface_name is not None and iface_name not in infos:
        problems.add(f"{where} interface: {iface_name!r} is not one of [server] interfaces")
        return None
    candidates = [infos[iface_name]] if iface_name else list(infos.values())

    # Find the interface subnet that holds the range (or the given network).
    info: InterfaceInfo | None = None
    if network is None and ranges:
        for cand in candidates:
            for addr in cand.addresses:
                if ranges[0][0] in addr.network:
                    info, network = cand, addr.network
                    break
            if info:
                break
        if network is None:
            first, last = ranges[0]
            where_ifs = ", ".join(f"{c.name} {a.network}" for c in candidates for a in c.addresses)
            problems.add(
                f"{where} range: {first}-{last} is outside the subnet of every interface"
                + (f" ({where_ifs})" if where_ifs else " (no interface given: use --iface)")
            )
            return None
    elif network is None:
        # No range: derive the subnet and a pool from the first interface not yet serving one.
        free = [c for c in candidates if c.name not in used_ifaces]
        if not free:
            return None
        info = free[0]
        assert info.primary is not None
        network = info.primary.network
        pool = default_pool(network, info.primary.ip)
        if pool is None:
            problems.add(f"{where}: {info.name}'s subnet {network} is too small for a pool")
            return None
        ranges = [pool]
        notes.append(
            f"derived from {info.name}: subnet {network}, server {info.primary.ip}, "
            f"pool {pool[0]}-{pool[1]}"
        )
    elif iface_name is None:
        info = next((c for c in candidates if c.address_in(network)), None)
    else:
        info = infos[iface_name]
    if network is None:
        return None
    if info is not None:
        used_ifaces.add(info.name)
    for first, last in ranges:
        if first not in network or last not in network:
            problems.add(f"{where} range: {first}-{last} is not inside the subnet {network}")
        elif first == network.network_address or last == network.broadcast_address:
            problems.add(
                f"{where} range: {first}-{last} includes the subnet's network or broadcast address"
            )
        if info is not None:
            own = info.address_in(network)
            if own is not None and first <= own <= last:
                problems.add(f"{where} range: {first}-{last} includes pxed's own address {own}")
    return network, info, ranges


def _subnet_settings(
    problems: _Problems, where: str, t: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Router, DNS, lease time and the other per-subnet options; None if any is bad."""
    before = len(problems.lines)
    router = problems.check(f"{where} router", lambda: _ips(t.get("router"))) or ()
    dns = problems.check(f"{where} dns", lambda: _ips(t.get("dns"))) or ()
    ntp = problems.check(f"{where} ntp", lambda: _ips(t.get("ntp"))) or ()
    broadcast = (
        problems.check(f"{where} broadcast", lambda: _ip(t["broadcast"]))
        if "broadcast" in t
        else None
    )
    lease_time = problems.check(
        f"{where} lease_time", lambda: parse_duration(t.get("lease_time", "12h"))
    )
    mtu = t.get("mtu")
    if mtu is not None and (
        not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535
    ):
        problems.add(f"{where} mtu: {mtu!r} is not an MTU (68..65535)")
        mtu = None
    domain = t.get("domain")
    if domain is not None and not re.match(r"^[A-Za-z0-9.-]{1,253}$", str(domain)):
        problems.add(f"{where} domain: {domain!r} is not a domain name")
    routes = problems.check(f"{where} routes", lambda: _routes(t.get("routes", []))) or ()
    options = _options(problems, where, t.get("options", {}))
    if len(problems.lines) != before:
        return None
    return {
        "router": router,
        "dns": dns,
        "ntp": ntp,
        "domain": str(domain) if domain else None,
        "mtu": mtu,
        "broadcast": broadcast,
        "routes": routes,
        "lease_time": lease_time or 43200,
        "options": options,
    }


def derive_subnet(template: SubnetConfig, info: InterfaceInfo) -> SubnetConfig | None:
    """The subnet of an interface that got its first address while pxed runs: the network of
    that address and the default pool in it, with the ``[dhcp]`` settings of ``template``."""
    if info.primary is None:
        return None
    network = info.primary.network
    pool = default_pool(network, info.primary.ip)
    if pool is None:
        return None
    return replace(template, network=network, ranges=(pool,), interface=info.name)


def default_pool(network: IPv4Network, own: IPv4Address) -> tuple[IPv4Address, IPv4Address] | None:
    """A sensible pool when none is configured: the upper half of the subnet, minus our address.

    For a /24 that is .128-.254 (clear of the routers and servers that usually sit low);
    pxed's own address, if it falls inside, moves the pool to the part above or below it.
    """
    if network.num_addresses < 8:
        return None
    first = int(network.network_address) + network.num_addresses // 2
    last = int(network.broadcast_address) - 1
    mine = int(own)
    if first <= mine <= last:
        if last - mine >= mine - first:
            first = mine + 1
        else:
            last = mine - 1
    return IPv4Address(first), IPv4Address(last)


def _routes(value: Any) -> tuple[tuple[IPv4Network, IPv4Address], ...]:
    out = []
    for item in _as_list(value):
        if isinstance(item, Mapping):
            dest, gw = item.get("to") or item.get("network"), item.get("via") or item.get("gateway")
        elif isinstance(item, list | tuple) and len(item) == 2:
            dest, gw = item
        else:
            raise ValueError(f'{item!r} is not a route (use ["198.18.5.0/24", "198.19.0.1"])')
        out.append((ipaddress.IPv4Network(str(dest), strict=False), _ip(gw)))
    return tuple(out)


def _options(problems: _Problems, where: str, raw: Any) -> tuple[tuple[int, bytes], ...]:
    """[dhcp.options]: "ntp-servers" = [...], "150" = "198.19.0.1", or {type=..., value=...}."""
    if not isinstance(raw, Mapping):
        problems.add(f"{where} options: must be a table of option = value")
        return ()
    out: list[tuple[int, bytes]] = []
    for key, value in raw.items():
        code: int | None
        if str(key).isdigit():
            code = int(key)
        elif str(key).startswith("option-") and str(key)[7:].isdigit():
            code = int(str(key)[7:])
        else:
            code = dopts.option_code_by_name(str(key))
        if code is None or not 1 <= code <= 254:
            problems.add(f"{where} options: {key!r} is not a known option name or a code 1..254")
            continue
        kind: dopts.OptionKind | None = None
        if isinstance(value, Mapping):
            kind_name = str(value.get("type", "")).upper().replace("-", "_")
            try:
                kind = dopts.OptionKind[kind_name]
            except KeyError:
                names = ", ".join(k.name.lower().replace("_", "-") for k in dopts.OptionKind)
                problems.add(
                    f"{where} options {key}: type {value.get('type')!r} is not one of {names}"
                )
                continue
            value = value.get("value")
        elif code not in dopts.OPTION_TABLE:
            problems.add(
                f"{where} options {key}: option {code} has no known type; "
                'write {{ type = "ip", value = ... }}'
            )
            continue
        try:
            out.append((code, dopts.encode_value(code, value, kind)))
        except (ValueError, TypeError) as exc:
            problems.add(f"{where} options {key}: {exc}")
    return tuple(out)


def _boot(problems: _Problems, t: Mapping[str, Any]) -> BootConfig:
    values: dict[str, Any] = {}
    for key in ("bios", "uefi_x64", "uefi_ia32", "uefi_arm64", "ipxe"):
        if key in t:
            v = t[key]
            if v is not None and (not isinstance(v, str) or not v or len(v.encode()) > 255):
                problems.add(f"[boot] {key}: {v!r} is not a file name")
            else:
                values[key] = v or None
    if "next_server" in t:
        values["next_server"] = problems.check("[boot] next_server", lambda: _ip(t["next_server"]))
    explicit = frozenset(values)
    return BootConfig(**values, explicit=explicit)


def _check_hosts(problems: _Problems, hosts: list[HostConfig], subnets: list[SubnetConfig]) -> None:
    owner: dict[IPv4Address, str] = {}
    for host in hosts:
        if host.ip is None:
            continue
        if host.ip in owner:
            problems.add(
                f"[[dhcp.host]] {host.mac}: address {host.ip} is already reserved "
                f"for {owner[host.ip]}"
            )
            continue
        owner[host.ip] = host.mac
        if subnets and not any(host.ip in s.network for s in subnets):
            nets = ", ".join(str(s.network) for s in subnets)
            problems.add(
                f"[[dhcp.host]] {host.mac}: address {host.ip} is outside every subnet ({nets})"
            )
        for s in subnets:
            if host.ip in (s.network.network_address, s.network.broadcast_address):
                problems.add(
                    f"[[dhcp.host]] {host.mac}: address {host.ip} is not a host address "
                    f"of {s.network}"
                )


def _is_url(name: str) -> bool:
    return "://" in name


def _check_boot_files(
    problems: _Problems,
    boot: BootConfig,
    hosts: list[HostConfig],
    tftp: TftpConfig,
    notes: list[str],
) -> BootConfig:
    """Configured boot files must exist under the TFTP root; unconfigured defaults are dropped.

    Defaults (pxelinux.0, ipxe.efi, boot.ipxe) point at a root made by `pxed stage`; when one
    is missing pxed says so and does not offer it, instead of sending clients to a 404.
    """
    if not tftp.enabled:
        return boot
    root = tftp.root
    if not root.is_dir():
        problems.add(f"[tftp] root: {root} is not a directory (create it, or pass --tftp-root DIR)")
        return boot
    store = FileStore.for_config(tftp)
    changes: dict[str, Any] = {}
    for key in ("bios", "uefi_x64", "uefi_ia32", "uefi_arm64", "ipxe"):
        name: str | None = getattr(boot, key)
        if name is None or _is_url(name):
            continue
        why = _not_served(store, name, root)
        if why is not None:
            if key in boot.explicit:
                problems.add(f"[boot] {key}: {why}")
            else:
                notes.append(f"default boot file ({key}): {why}; not offered")
                changes[key] = None
    for host in hosts:
        why = None if not host.boot or _is_url(host.boot) else _not_served(store, host.boot, root)
        if why is not None:
            problems.add(f"[[dhcp.host]] {host.mac} boot: {why}")
    if changes:
        return replace(boot, **changes)
    return boot


def _not_served(store: FileStore, name: str, root: Path) -> str | None:
    """Why the TFTP server would not serve ``name`` (found by the same lookup, checks and
    open as a request), or None when it would."""
    try:
        store.open(name).close()
    except FileRefused as exc:
        if exc.error_code == ErrorCode.FILE_NOT_FOUND:
            return f"{name!r} does not exist under the TFTP root {root}"
        return f"{name!r} under the TFTP root {root} is not served: {exc.reason}"
    return None


def load_config(
    path: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    lookup: InterfaceLookup = interface_info,
    notes: list[str] | None = None,
    warnings: list[str] | None = None,
) -> Config:
    """Load a TOML file (if given), apply overrides (command-line flags) and validate."""
    data: dict[str, Any] = load_file(Path(path)) if path is not None else {}
    if overrides:
        data = merge(data, overrides)
    return build_config(data, lookup=lookup, notes=notes, warnings=warnings)
