"""The configuration model: frozen dataclasses, built in code or loaded from TOML.

Every problem found is reported as one line; a configuration with any problem is refused
as a whole (ConfigError carries all the lines, not just the first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Literal

Mode = Literal["dhcp", "proxy", "auto"]
LogFormat = Literal["console", "json"]


@dataclass(frozen=True, slots=True)
class HostConfig:
    """A per-MAC reservation / rule (``[[dhcp.host]]``)."""

    mac: str
    """Lower-case, colon separated (``52:54:00:12:34:56``)."""
    ip: IPv4Address | None = None
    hostname: str | None = None
    boot: str | None = None
    """Boot file this host always gets, whatever its firmware."""
    profile: str | None = None
    """The ``[[profile]]`` this host boots (its files rendered for it), by name."""


@dataclass(frozen=True, slots=True)
class SubnetConfig:
    """One subnet pxed serves addresses on."""

    network: IPv4Network
    ranges: tuple[tuple[IPv4Address, IPv4Address], ...]
    interface: str | None = None
    """The interface the subnet is on; None for a subnet reached only through relays."""
    router: tuple[IPv4Address, ...] = ()
    dns: tuple[IPv4Address, ...] = ()
    ntp: tuple[IPv4Address, ...] = ()
    domain: str | None = None
    mtu: int | None = None
    broadcast: IPv4Address | None = None
    routes: tuple[tuple[IPv4Network, IPv4Address], ...] = ()
    """Classless static routes (option 121): (destination, gateway)."""
    lease_time: int = 12 * 3600
    options: tuple[tuple[int, bytes], ...] = ()
    """Any other option by code, already encoded from its typed configuration value."""
    derived: bool = False
    """Derived from an interface's address (no range or network given): in proxy mode it
    says nothing about where the router's clients are."""

    @property
    def broadcast_address(self) -> IPv4Address:
        return self.broadcast or self.network.broadcast_address


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The Prometheus endpoint (``[metrics]``)."""

    listen: tuple[str, int] | None = None
    """Host and port scrapes are answered on; None: no endpoint."""


@dataclass(frozen=True, slots=True)
class LeasesConfig:
    """Where leases are kept (``[leases]``)."""

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    """"sqlite": a file under the state directory, this server's own. "postgresql": a
    database shared by every pxed serving the network (``dsn``)."""
    dsn: str | None = None
    """libpq connection string or URI of the PostgreSQL database (backend "postgresql")."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Several pxed sharing one PostgreSQL lease database (``[cluster]``)."""

    name: str = ""
    """This server's name among them (default: the host name); unique per server."""
    heartbeat: float = 1.0
    """Seconds between this server's heartbeat rows."""
    takeover: float = 10.0
    """Seconds without a heartbeat after which the others take a server's share over."""


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The HTTP boot server (``[http]``): the boot root over HTTP, beside TFTP."""

    listen: tuple[str, int] | None = None
    """Host and port files are served on; None: no HTTP server."""


@dataclass(frozen=True, slots=True)
class HooksConfig:
    """Programs run on events (``[hooks]``)."""

    lease: Path | None = None
    """Run on each lease change: ``add``/``old``/``del`` MAC IP [HOSTNAME], as dnsmasq's
    dhcp-script is."""
    boot: Path | None = None
    """Run once a machine's boot story is finished: ``boot OUTCOME MAC IP``."""
    timeout: float = 10.0
    """Seconds a hook may run before it is killed."""


@dataclass(frozen=True, slots=True)
class BootsConfig:
    """The boot timeline (``[boots]``)."""

    keep: int = 500
    """Recent boot stories kept (in memory and in the state directory); 0: no timeline."""
    quiet: float = 60.0
    """Seconds a machine stays quiet before its story is finished."""


@dataclass(frozen=True, slots=True)
class BootConfig:
    """Which boot file each kind of client gets (``[boot]``)."""

    bios: str | None = "pxelinux.0"
    uefi_x64: str | None = "ipxe.efi"
    uefi_ia32: str | None = None
    uefi_arm64: str | None = None
    ipxe: str | None = "boot.ipxe"
    next_server: IPv4Address | None = None
    """Where clients fetch boot files (siaddr); default: pxed's own address on the interface."""
    explicit: frozenset[str] = frozenset()
    """Which of the file keys the user set (those must exist; missing defaults are dropped)."""


TEMPLATE_KINDS = (
    "ipxe",
    "pxelinux",
    "grub",
    "preseed",
    "meta_data",
    "user_data",
    "vendor_data",
    "network_config",
)
"""The files rendered for each machine with a profile (``[[profile]] templates`` keys)."""


@dataclass(frozen=True, slots=True)
class ProfileMatch:
    """Which machines a profile is for (``[[profile]] match``): a machine matches when it
    matches every criterion given, and a criterion when it matches any of its values."""

    mac: tuple[str, ...] = ()
    """Whole MACs, lower-case, colon separated."""
    mac_prefix: tuple[str, ...] = ()
    """Leading octets (``52:54:00``), lower-case, colon separated."""
    arch: tuple[str, ...] = ()
    """Firmware kinds as ``[boot]`` names them: bios, uefi_x64, uefi_ia32, uefi_arm64."""
    uuid: tuple[str, ...] = ()
    """SMBIOS system UUIDs (DHCP option 97), lower-case with dashes."""
    hostname: tuple[str, ...] = ()
    """Shell patterns (``node-*``) over the host name."""


@dataclass(frozen=True, slots=True)
class ProfileConfig:
    """What a machine boots, and the files rendered for it (``[[profile]]``)."""

    name: str
    kernel: str | None = None
    """Under the boot root, or a URL; None: the profile boots the local disk."""
    initrd: tuple[str, ...] = ()
    cmdline: str = ""
    """Kernel arguments: a template, rendered with the machine's variables."""
    variables: tuple[tuple[str, object], ...] = ()
    """The profile's own template variables (``vars``), in the order given."""
    templates: tuple[tuple[str, Path], ...] = ()
    """Template files by kind (TEMPLATE_KINDS) in place of the built-in ones."""
    match: ProfileMatch | None = None
    default: bool = False
    """The profile of every machine no host entry and no match gives one."""

    @property
    def final_file(self) -> str | None:
        """The last file the profile's boot fetches (its last initrd, else its kernel):
        once it is sent, a boot-once machine has been handed its installer."""
        if self.initrd:
            return self.initrd[-1]
        return self.kernel


@dataclass(frozen=True, slots=True)
class TftpConfig:
    """The integrated TFTP server (``[tftp]``)."""

    root: Path = Path("/srv/tftp")
    enabled: bool = True
    port: int = 69
    single_port: bool = False
    """Serve every transfer from port 69 itself (firewalled hosts) instead of a port each."""
    port_range: tuple[int, int] | None = None
    """(first, last): the ports transfers are served from (a port each, for a firewall that
    opens only these); None lets the kernel pick any free port."""
    case_insensitive: bool = True
    """A name missing as spelt is matched ignoring case (Windows boot loaders)."""
    world_readable_only: bool = True
    """Running as root, serve only files everyone may read (``chmod o+r``): what the
    systemd unit's unprivileged user could read, and dnsmasq's rule as root."""
    per_client: str | None = None
    """"mac" or "ip": a file under ROOT/<client's MAC or IP>/ is served to that client in
    place of the same name under ROOT (per-host menus and scripts)."""
    max_blksize: int = 65464
    max_windowsize: int = 64
    default_timeout: float = 1.0
    retries: int = 5
    max_transfers: int = 500
    max_transfers_per_client: int = 16


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration of one pxed process."""

    interfaces: tuple[str, ...] = ()
    mode: Mode = "auto"
    """"dhcp" (authoritative), "proxy" (beside another server), "auto" (probe, then pick)."""
    probe_timeout: float = 5.0
    """Seconds auto mode listens for another DHCP server's offer before choosing."""
    stop_grace: float = 5.0
    """Seconds running TFTP transfers get to finish on SIGTERM before they are ended."""
    dhcp_enabled: bool = True
    """False runs the TFTP server alone (``--no-dhcp``, ``[dhcp] enabled = false``)."""
    state_dir: Path = Path("/var/lib/pxed")
    subnets: tuple[SubnetConfig, ...] = ()
    hosts: tuple[HostConfig, ...] = ()
    boot: BootConfig = field(default_factory=BootConfig)
    tftp: TftpConfig = field(default_factory=TftpConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    leases: LeasesConfig = field(default_factory=LeasesConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    boots: BootsConfig = field(default_factory=BootsConfig)
    profiles: tuple[ProfileConfig, ...] = ()
    log_format: LogFormat = "console"
    log_level: str = "info"
    dhcp_port: int = 67
    """Port the DHCP server listens on (67); tests may move it."""
    offer_hold: float = 60.0
    """Seconds an offered address stays held for the client it was offered to."""
    decline_quarantine: int = 600
    """Seconds an address stays out of the pool after a DHCPDECLINE."""
    known_only: bool = False
    """Answer only clients with a ``[[dhcp.host]]`` entry (a PXE network of known machines)."""
    new_clients_per_second: int = 0
    """At most this many new clients (no lease or offer yet) a second per interface; 0: no
    bound. Beyond it new clients get no answer (DHCP starvation by random MACs)."""
    derive_on: str | None = None
    """The interface whose subnet and pool are derived once it has an address (it was
    missing or had none when the configuration was loaded)."""
    derive_template: SubnetConfig | None = None
    """The ``[dhcp]`` settings (router, DNS, lease time...) that subnet gets; its network
    and pool are placeholders until then (pxed.config.derive.derive_subnet)."""
