"""Parse stage: a configuration mapping (the TOML's shape) -> what it states, typed.

Pure: no interface is looked up and no file is read but the TOML itself (load_file), so a
configuration parses the same on any machine, whichever interfaces it has. Every value is
checked for its own sake here; a subnet comes out as a SubnetSpec, whose network and pool
may still be missing for the derive stage to find on the interfaces, and the rules between
parts (hosts inside subnets, pools inside networks, boot files under the root) are the
check stage's, which runs on a Config however it was built.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from pxed.config.model import (
    TEMPLATE_KINDS,
    BootConfig,
    BootsConfig,
    ClusterConfig,
    Config,
    HooksConfig,
    HostConfig,
    HttpConfig,
    LeasesConfig,
    MetricsConfig,
    ProfileConfig,
    ProfileMatch,
    SubnetConfig,
    TftpConfig,
)
from pxed.config.problems import Problems
from pxed.dhcp import options as dopts
from pxed.errors import ConfigError

# The keys each table accepts; anything else is an "unknown key" problem.
SERVER_KEYS = {
    "interfaces",
    "mode",
    "state_dir",
    "log_format",
    "log_level",
    "dhcp_port",
    "probe_timeout",
    "stop_grace",
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
HOST_KEYS = {"mac", "ip", "hostname", "boot", "profile"}
PROFILE_KEYS = {"name", "kernel", "initrd", "cmdline", "vars", "templates", "match", "default"}
MATCH_KEYS = {"mac", "mac_prefix", "arch", "uuid", "hostname"}
ARCH_NAMES = ("bios", "uefi_x64", "uefi_ia32", "uefi_arm64")
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
HOOKS_KEYS = {"lease", "boot", "timeout"}
METRICS_KEYS = {"listen"}
HTTP_KEYS = {"listen"}
BOOTS_KEYS = {"keep", "quiet"}
LEASES_KEYS = {"backend", "dsn"}
CLUSTER_KEYS = {"name", "heartbeat", "takeover"}
TOP_KEYS = {
    "server", "dhcp", "boot", "tftp", "http", "hooks", "metrics", "boots", "profile", "leases",
    "cluster",
}  # fmt: skip

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MAC = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$")
# A subnet's settings are parsed before its network is known (the derive stage finds it):
# they ride on this placeholder until then, and on Config.derive_template while pxed waits.
_NOWHERE = ipaddress.IPv4Network("0.0.0.0/32")


@dataclass(frozen=True, slots=True)
class SubnetSpec:
    """A subnet as the configuration states it; the derive stage places it on an interface."""

    where: str
    """Where it is stated ("[dhcp]", "[[dhcp.subnet]] #2"): the prefix of its problem lines."""
    ranges: tuple[tuple[IPv4Address, IPv4Address], ...]
    network: IPv4Network | None
    """None: the network of the interface address whose subnet holds the range."""
    interface: str | None
    """As written (a value that is no interface name is refused by the derive stage)."""
    settings: SubnetConfig | None
    """Router, DNS, lease time, options... on a placeholder network; None if one was bad."""
    derived: bool
    """Neither range nor network given: both come from the first free interface."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a configuration states, before any interface is looked at."""

    config: Config
    """Everything but the subnets (none yet) and derive_on/derive_template; the boot files
    as named, not yet looked for under the TFTP root."""
    subnets: tuple[SubnetSpec, ...] = ()
    template: SubnetConfig | None = None
    """The ``[dhcp]`` settings when ``[dhcp]`` names no range, network or subnets: its one
    subnet is wholly derived from an interface, at load or once one has an address."""


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


def _unknown(problems: Problems, table: str, data: Mapping[str, Any], known: set[str]) -> None:
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


def parse(
    data: Mapping[str, Any], problems: Problems | None = None, *, base: Path | None = None
) -> Parsed:
    """What a configuration mapping (the TOML's shape) states, every value checked.

    ``base``: the directory relative template paths are under (the configuration file's;
    the working directory when None).

    Raises ConfigError with every problem; given ``problems``, adds to it instead and
    returns what could be parsed (load_config runs the next stages on it, to tell all).
    """
    own = problems is None
    problems = Problems() if problems is None else problems
    _unknown(problems, "config", data, TOP_KEYS)
    server = _table(problems, data, "server")
    dhcp = _table(problems, data, "dhcp")
    boot_t = _table(problems, data, "boot")
    tftp_t = _table(problems, data, "tftp")
    hooks_t = _table(problems, data, "hooks")
    metrics_t = _table(problems, data, "metrics")
    http_t = _table(problems, data, "http")
    _unknown(problems, "[http]", http_t, HTTP_KEYS)
    boots_t = _table(problems, data, "boots")
    _unknown(problems, "[metrics]", metrics_t, METRICS_KEYS)
    _unknown(problems, "[boots]", boots_t, BOOTS_KEYS)
    _unknown(problems, "[server]", server, SERVER_KEYS)
    _unknown(problems, "[hooks]", hooks_t, HOOKS_KEYS)
    _unknown(problems, "[dhcp]", dhcp, DHCP_KEYS)
    _unknown(problems, "[boot]", boot_t, BOOT_KEYS)
    _unknown(problems, "[tftp]", tftp_t, TFTP_KEYS)
    leases_t = _table(problems, data, "leases")
    _unknown(problems, "[leases]", leases_t, LEASES_KEYS)
    cluster_t = _table(problems, data, "cluster")
    _unknown(problems, "[cluster]", cluster_t, CLUSTER_KEYS)

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
    stop_grace = problems.check(
        "[server] stop_grace", partial(parse_duration, server.get("stop_grace", 5))
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

    tftp = _tftp(problems, tftp_t)
    hosts = _hosts(problems, dhcp)
    subnets = _subnets(problems, dhcp) if dhcp_enabled else []
    boot = _boot(problems, boot_t)
    hooks = _hooks(problems, hooks_t)
    metrics = MetricsConfig(listen=_listen(problems, "[metrics]", metrics_t, "127.0.0.1:9167"))
    http = HttpConfig(listen=_listen(problems, "[http]", http_t, "0.0.0.0:8080"))
    boots = _boots(problems, boots_t)
    leases = _leases(problems, leases_t)
    cluster = _cluster(problems, cluster_t, leases)
    profiles = _profiles(problems, data.get("profile", []), base or Path.cwd())

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
    # Only [dhcp] itself, with neither range nor network nor [[dhcp.subnet]]: then its one
    # subnet can wait for an interface that has no address yet (Config.derive_template).
    template = None
    if subnets and not {"range", "network"} & dhcp.keys() and not dhcp.get("subnet"):
        template = subnets[0].settings

    if own:
        problems.raise_any()
    config = Config(
        interfaces=interfaces,
        mode=mode,
        probe_timeout=float(probe_timeout or 5),
        stop_grace=float(stop_grace if stop_grace is not None else 5),
        dhcp_enabled=dhcp_enabled,
        state_dir=Path(str(server.get("state_dir", "/var/lib/pxed"))),
        hosts=tuple(hosts),
        boot=boot,
        tftp=tftp,
        hooks=hooks,
        metrics=metrics,
        http=http,
        boots=boots,
        leases=leases,
        cluster=cluster,
        profiles=tuple(profiles),
        log_format=log_format,
        log_level=log_level,
        dhcp_port=dhcp_port,
        offer_hold=float(offer_hold or 60),
        decline_quarantine=int(quarantine or 600),
        known_only=known_only,
        new_clients_per_second=rate,
    )
    return Parsed(config=config, subnets=tuple(subnets), template=template)


def _listen(
    problems: Problems, table: str, t: Mapping[str, Any], example: str
) -> tuple[str, int] | None:
    """A table's ``listen = "HOST:PORT"`` (an IP address; ``[::1]:PORT`` for IPv6)."""
    listen = t.get("listen")
    if listen is None:
        return None
    host, sep, port = str(listen).rpartition(":")
    if not isinstance(listen, str) or not sep or not port.isdigit() or not 0 < int(port) < 65536:
        problems.add(f"{table} listen: {listen!r} is not HOST:PORT (like '{example}')")
        return None
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        problems.add(f"{table} listen: {host!r} is not an IP address")
        return None
    return host.strip("[]"), int(port)


def _hooks(problems: Problems, t: Mapping[str, Any]) -> HooksConfig:
    paths: dict[str, Path | None] = {}
    for key in ("lease", "boot"):
        value = t.get(key)
        paths[key] = None
        if value is None:
            continue
        if not isinstance(value, str) or not value.startswith("/"):
            problems.add(f"[hooks] {key}: {value!r} is not an absolute path to a program")
        else:
            paths[key] = Path(value)
    timeout = problems.check("[hooks] timeout", partial(parse_duration, t.get("timeout", 10)))
    return HooksConfig(lease=paths["lease"], boot=paths["boot"], timeout=float(timeout or 10))


def _boots(problems: Problems, t: Mapping[str, Any]) -> BootsConfig:
    keep = t.get("keep", 500)
    if not isinstance(keep, int) or isinstance(keep, bool) or not 0 <= keep <= 100_000:
        problems.add(f"[boots] keep: {keep!r} is not a count of stories (0 = no timeline)")
        keep = 500
    quiet = problems.check("[boots] quiet", partial(parse_duration, t.get("quiet", 60)))
    if quiet is not None and quiet < 1:
        problems.add("[boots] quiet: must be at least 1s")
        quiet = 60
    return BootsConfig(keep=keep, quiet=float(quiet or 60))


def _leases(problems: Problems, t: Mapping[str, Any]) -> LeasesConfig:
    backend = t.get("backend", "sqlite")
    if backend not in ("sqlite", "postgresql"):
        problems.add(f"[leases] backend: {backend!r} is not 'sqlite' or 'postgresql'")
        return LeasesConfig()
    dsn = t.get("dsn")
    if dsn is not None and (not isinstance(dsn, str) or not dsn.strip()):
        problems.add(f"[leases] dsn: {dsn!r} is not a PostgreSQL connection string")
        dsn = None
    if backend == "postgresql" and dsn is None:
        problems.add(
            "[leases] backend = 'postgresql' needs dsn (like 'postgresql://pxed@db.lan/pxed')"
        )
    if backend == "sqlite" and dsn is not None:
        problems.add("[leases] dsn: only for backend = 'postgresql' (SQLite lives in state_dir)")
    return LeasesConfig(backend=backend, dsn=dsn)


def _cluster(problems: Problems, t: Mapping[str, Any], leases: LeasesConfig) -> ClusterConfig:
    if t and leases.backend != "postgresql":
        problems.add("[cluster]: servers share leases only through [leases] backend = 'postgresql'")
    name = t.get("name", socket.gethostname())
    if not isinstance(name, str) or not name.strip() or len(name) > 63:
        problems.add(f"[cluster] name: {name!r} is not a server name (1-63 characters)")
        name = socket.gethostname()
    heartbeat = problems.check(
        "[cluster] heartbeat", partial(parse_duration, t.get("heartbeat", 1))
    )
    takeover = problems.check("[cluster] takeover", partial(parse_duration, t.get("takeover", 10)))
    if heartbeat is not None and heartbeat < 1:
        problems.add("[cluster] heartbeat: must be at least 1s")
        heartbeat = None
    if heartbeat is not None and takeover is not None and takeover < 3 * heartbeat:
        # One late heartbeat (a busy database, a pause) must not look like a dead server.
        problems.add(
            f"[cluster] takeover: {takeover}s is under three heartbeats ({3 * heartbeat}s)"
        )
        takeover = None
    return ClusterConfig(
        name=name.strip(), heartbeat=float(heartbeat or 1), takeover=float(takeover or 10)
    )


def _table(problems: Problems, data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        problems.add(f"[{name}]: must be a table")
        return {}
    return value


def _port_range(problems: Problems, value: Any) -> tuple[int, int] | None:
    """``"FIRST-LAST"`` or ``[FIRST, LAST]``: the ports transfers are served from (whether
    they clash with the listening port is the check stage's rule)."""
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
    return (first, last)


def _per_client(problems: Problems, value: Any) -> str | None:
    if value is None:
        return None
    if value in ("ip", "mac"):
        return str(value)
    problems.add(f'[tftp] per_client: {value!r} is not "mac" or "ip"')
    return None


def _tftp(problems: Problems, t: Mapping[str, Any]) -> TftpConfig:
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
        port_range=_port_range(problems, t.get("port_range")),
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


def _hosts(problems: Problems, dhcp: Mapping[str, Any]) -> list[HostConfig]:
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
            profile = h.get("profile")
            if profile is not None and not isinstance(profile, str):
                problems.add(f"{where} profile: {profile!r} is not a profile name")
                profile = None
            hosts.append(HostConfig(mac=mac, ip=ip, hostname=hostname, boot=h.get("boot"),
                                    profile=profile))  # fmt: skip
    return hosts


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MAC_PREFIX = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){0,5}$")
_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _strings(problems: Problems, where: str, value: Any) -> tuple[str, ...]:
    """A string or an array of strings."""
    items = _as_list(value)
    if not all(isinstance(i, str) for i in items):
        problems.add(f"{where}: {value!r} is not a string or an array of strings")
        return ()
    return tuple(items)


def _profiles(problems: Problems, raw: Any, base: Path) -> list[ProfileConfig]:
    profiles: list[ProfileConfig] = []
    if not isinstance(raw, list):
        problems.add("[[profile]]: must be an array of tables")
        return profiles
    for n, t in enumerate(raw, 1):
        where = f"[[profile]] #{n}"
        if not isinstance(t, Mapping):
            problems.add(f"{where}: must be a table")
            continue
        _unknown(problems, where, t, PROFILE_KEYS)
        name = t.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            problems.add(f"{where} name: {name!r} is not a name (letters, digits, . _ -)")
            continue
        where = f"[[profile]] {name}"
        kernel = t.get("kernel")
        if kernel is not None and (not isinstance(kernel, str) or not kernel):
            problems.add(f"{where} kernel: {kernel!r} is not a file name or URL")
            kernel = None
        initrd = _strings(problems, f"{where} initrd", t.get("initrd", []))
        if initrd and kernel is None:
            problems.add(f"{where} initrd: an initrd needs a kernel")
        cmdline = t.get("cmdline", "")
        if not isinstance(cmdline, str):
            problems.add(f"{where} cmdline: {cmdline!r} is not a string")
            cmdline = ""
        variables = t.get("vars", {})
        if not isinstance(variables, Mapping):
            problems.add(f"{where} vars: must be a table")
            variables = {}
        for key in variables:
            if not _VAR.match(key):
                problems.add(f"{where} vars: {key!r} is not a template variable name")
        templates = t.get("templates", {})
        if not isinstance(templates, Mapping):
            problems.add(f"{where} templates: must be a table")
            templates = {}
        files: list[tuple[str, Path]] = []
        for kind, path in templates.items():
            if kind not in TEMPLATE_KINDS:
                known = ", ".join(TEMPLATE_KINDS)
                problems.add(f"{where} templates: {kind!r} is not one of {known}")
            elif not isinstance(path, str) or not path:
                problems.add(f"{where} templates {kind}: {path!r} is not a file name")
            else:
                files.append((kind, base / path))
        default = t.get("default", False)
        if not isinstance(default, bool):
            problems.add(f"{where} default: {default!r} is not true or false")
            default = False
        match = _match(problems, where, t["match"]) if "match" in t else None
        profiles.append(ProfileConfig(
            name=name, kernel=kernel, initrd=initrd, cmdline=cmdline,
            variables=tuple(variables.items()), templates=tuple(files), match=match,
            default=default,
        ))  # fmt: skip
    return profiles


def _match(problems: Problems, where: str, t: Any) -> ProfileMatch | None:
    where = f"{where} match"
    if not isinstance(t, Mapping):
        problems.add(f"{where}: must be a table")
        return None
    _unknown(problems, where, t, MATCH_KEYS)
    macs = [m.lower().replace("-", ":") for m in _strings(problems, f"{where} mac", t.get("mac"))]
    for mac in macs:
        if not _MAC.match(mac):
            problems.add(f"{where} mac: {mac!r} is not a MAC address")
    prefixes = [
        m.lower().replace("-", ":")
        for m in _strings(problems, f"{where} mac_prefix", t.get("mac_prefix"))
    ]
    for prefix in prefixes:
        if not _MAC_PREFIX.match(prefix):
            problems.add(f"{where} mac_prefix: {prefix!r} is not leading octets (52:54:00)")
    arch = _strings(problems, f"{where} arch", t.get("arch"))
    for a in arch:
        if a not in ARCH_NAMES:
            problems.add(f"{where} arch: {a!r} is not one of {', '.join(ARCH_NAMES)}")
    uuids = [u.lower() for u in _strings(problems, f"{where} uuid", t.get("uuid"))]
    for u in uuids:
        if not _UUID.match(u):
            problems.add(f"{where} uuid: {u!r} is not a UUID")
    hostnames = _strings(problems, f"{where} hostname", t.get("hostname"))
    match = ProfileMatch(tuple(macs), tuple(prefixes), arch, tuple(uuids), hostnames)
    if match == ProfileMatch():
        problems.add(f"{where}: names no criterion (mac, mac_prefix, arch, uuid, hostname)")
        return None
    return match


def _subnets(problems: Problems, dhcp: Mapping[str, Any]) -> list[SubnetSpec]:
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
    return [_subnet(problems, where, t) for where, t in tables]


def _subnet(problems: Problems, where: str, t: Mapping[str, Any]) -> SubnetSpec:
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
    settings = _subnet_settings(problems, where, t)
    return SubnetSpec(
        where=where,
        ranges=tuple(ranges),
        network=network,
        interface=t.get("interface"),
        settings=SubnetConfig(network=_NOWHERE, ranges=(), **settings) if settings else None,
        derived="range" not in t and "network" not in t,
    )


def _subnet_settings(problems: Problems, where: str, t: Mapping[str, Any]) -> dict[str, Any] | None:
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


def _options(problems: Problems, where: str, raw: Any) -> tuple[tuple[int, bytes], ...]:
    """[dhcp.options]: "ntp-servers" = [...], "150" = "198.19.0.1", or {type=..., value=...}.

    Only the TOML's shape is read here: which key is an option, which value is a table
    with a type. The types and their wire bytes have one home, the option codec
    (pxed/dhcp/options.py: OptionKind, OPTION_TABLE, encode_value), not this stage: an
    option's type is a fact of the DHCP option space, the same for every way a value gets
    there, and the codec's tests pin each one to its RFC layout.
    """
    if not isinstance(raw, Mapping):
        problems.add(f"{where} options: must be a table of option = value")
        return ()
    out: list[tuple[int, bytes]] = []
    for key, value in raw.items():
        code = dopts.option_code_by_name(str(key))  # names, aliases, "150", "option-150"
        if code is None:
            problems.add(f"{where} options: {key!r} is not a known option name or a code 1..254")
            continue
        kind: dopts.OptionKind | None = None
        if isinstance(value, Mapping):
            # A type is spelt as the codec's OptionKind values ("ip-list"), any case, - or _.
            try:
                kind = dopts.OptionKind(str(value.get("type", "")).lower().replace("_", "-"))
            except ValueError:
                names = ", ".join(k.value for k in dopts.OptionKind)
                problems.add(
                    f"{where} options {key}: type {value.get('type')!r} is not one of {names}"
                )
                continue
            value = value.get("value")
        elif code not in dopts.OPTION_TABLE:
            problems.add(
                f"{where} options {key}: option {code} has no known type; "
                'write { type = "ip", value = ... }'
            )
            continue
        try:
            out.append((code, dopts.encode_value(code, value, kind)))
        except (ValueError, TypeError) as exc:
            problems.add(f"{where} options {key}: {exc}")
    return tuple(out)


def _boot(problems: Problems, t: Mapping[str, Any]) -> BootConfig:
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
