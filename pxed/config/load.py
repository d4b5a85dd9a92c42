"""Loading configuration: TOML or a mapping -> Config, one line per problem.

The parse stage (pxed/config/parse.py) reads what the configuration states, with no
interface looked at; here the subnets are placed on the interfaces present now and the
rules between the parts are checked (boot files under the root, hosts inside subnets).
The stages share one list of problems, so that a configuration is refused with all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from pxed.config.model import BootConfig, Config, HostConfig, SubnetConfig, TftpConfig
from pxed.config.parse import Parsed, SubnetSpec, load_file, merge, parse
from pxed.config.problems import Problems
from pxed.netinfo import InterfaceInfo, interface_info
from pxed.tftp.files import FileRefused, FileStore
from pxed.tftp.packet import ErrorCode

InterfaceLookup = Callable[[str], InterfaceInfo | None]

Located = tuple[IPv4Network, InterfaceInfo | None, list[tuple[IPv4Address, IPv4Address]]]


def derive(
    parsed: Parsed,
    lookup: InterfaceLookup = interface_info,
    *,
    problems: Problems | None = None,
    notes: list[str] | None = None,
    warnings: list[str] | None = None,
    where: list[str] | None = None,
) -> Config:
    """The Config of ``parsed`` on the interfaces ``lookup`` finds now.

    ``notes`` collects what was derived (a pool chosen from an interface's subnet),
    ``warnings`` the interfaces still missing or without an address, ``where`` where each
    of the Config's subnets is stated (the check stage names them so). Raises ConfigError
    with every problem; given ``problems``, adds to it instead.
    """
    own = problems is None
    problems = Problems() if problems is None else problems
    notes = notes if notes is not None else []
    warnings = warnings if warnings is not None else []
    where = where if where is not None else []
    cfg = parsed.config
    infos: dict[str, InterfaceInfo] = {}
    waiting: list[str] = []
    for name in cfg.interfaces:
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

    subnets: list[SubnetConfig] = []
    used_ifaces: set[str] = set()
    for spec in parsed.subnets:
        sub = _subnet(problems, spec, infos, notes, used_ifaces)
        if sub is not None:
            subnets.append(sub)
            where.append(spec.where)
    check_addresses(subnets, infos, problems=problems, where=where)
    # A subnet still to be derived from an interface that has no address yet: nothing
    # could be derived at load, and [dhcp] states no more than its settings.
    derive_on = None
    derive_template: SubnetConfig | None = None
    if waiting and not subnets and parsed.template is not None:
        derive_on = waiting[0]
        derive_template = replace(parsed.template, interface=derive_on, derived=True)
    if own:
        problems.raise_any()
    return replace(
        cfg, subnets=tuple(subnets), derive_on=derive_on, derive_template=derive_template
    )


def check_addresses(
    subnets: Sequence[SubnetConfig],
    infos: Mapping[str, InterfaceInfo],
    *,
    problems: Problems | None = None,
    where: Sequence[str] = (),
) -> None:
    """No pool holds pxed's own address on the subnet's interface (the one rule that needs
    the interfaces; pxed.Server runs it too, on a Config built in code). Raises ConfigError;
    given ``problems``, adds to it instead."""
    own = problems is None
    problems = Problems() if problems is None else problems
    for n, sub in enumerate(subnets):
        info = infos.get(sub.interface) if sub.interface is not None else None
        mine = info.address_in(sub.network) if info is not None else None
        if mine is None:
            continue
        label = where[n] if n < len(where) else f"subnet {sub.network}"
        for first, last in sub.ranges:
            if first <= mine <= last:
                problems.add(f"{label} range: {first}-{last} includes pxed's own address {mine}")
    if own:
        problems.raise_any()


def _subnet(
    problems: Problems,
    spec: SubnetSpec,
    infos: Mapping[str, InterfaceInfo],
    notes: list[str],
    used_ifaces: set[str],
) -> SubnetConfig | None:
    located = _locate(problems, spec, infos, notes, used_ifaces)
    if located is None or spec.settings is None:
        return None
    network, info, ranges = located
    return replace(
        spec.settings,
        network=network,
        ranges=tuple(ranges),
        interface=info.name if info else None,
        derived=spec.derived,
    )


def _locate(
    problems: Problems,
    spec: SubnetSpec,
    infos: Mapping[str, InterfaceInfo],
    notes: list[str],
    used_ifaces: set[str],
) -> Located | None:
    """The subnet's network, its interface and pool: given, or derived from the interfaces."""
    where = spec.where
    ranges = list(spec.ranges)
    network = spec.network
    iface_name = spec.interface
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
    if info is not None:
        used_ifaces.add(info.name)
    return network, info, ranges


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


def check(
    config: Config,
    *,
    problems: Problems | None = None,
    notes: list[str] | None = None,
    where: Sequence[str] = (),
    files: bool = True,
) -> Config:
    """``config`` with the default boot files missing under the TFTP root left out.

    ``where`` names each of config.subnets as the configuration states it ("[dhcp]",
    "[[dhcp.subnet]] #2"); a subnet built in code is named by its network. ``notes``
    collects the default boot files left out. Raises ConfigError with every problem; given
    ``problems``, adds to it instead.
    """
    own = problems is None
    problems = Problems() if problems is None else problems
    notes = notes if notes is not None else []
    _check_port_range(problems, config.tftp)
    _check_macs(problems, config.hosts)
    _check_subnets(problems, config.subnets, where)
    if config.known_only and not config.hosts:
        problems.add("[dhcp] known_only: no [[dhcp.host]] entries, so nobody would be answered")
    _check_hosts(problems, config.hosts, config.subnets)
    boot = config.boot
    if files:
        boot = _check_boot_files(problems, boot, config.hosts, config.tftp, notes)

    # Said only when nothing else is wrong: another problem is usually why (a bad range).
    dhcp = config.dhcp_enabled
    if dhcp and not config.interfaces and config.mode != "dhcp" and not problems.lines:
        problems.add(f"[server] interfaces: mode {config.mode!r} needs an interface (--iface)")
    if (
        dhcp
        and not config.subnets
        and config.mode == "dhcp"
        and not config.derive_on
        and not problems.lines
    ):
        problems.add(
            "[dhcp] range: no address pool (give --iface, or a range inside an interface's subnet)"
        )
    if own:
        problems.raise_any()
    return config if boot is config.boot else replace(config, boot=boot)


def _check_port_range(problems: Problems, tftp: TftpConfig) -> None:
    if tftp.port_range is None:
        return
    first, last = tftp.port_range
    where, port = "[tftp] port_range", tftp.port
    if tftp.single_port:
        problems.add(f"{where}: not with single_port = true (every transfer is on port {port})")
    elif first <= port <= last:
        problems.add(f"{where}: {first}-{last} holds the listening port {port}")


def _check_macs(problems: Problems, hosts: Sequence[HostConfig]) -> None:
    seen_mac: dict[str, int] = {}
    for n, host in enumerate(hosts, 1):
        if host.mac in seen_mac:
            problems.add(
                f"[[dhcp.host]] #{n}: mac {host.mac} is already used by host #{seen_mac[host.mac]}"
            )
        seen_mac.setdefault(host.mac, n)


def _check_subnets(
    problems: Problems, subnets: Sequence[SubnetConfig], where: Sequence[str]
) -> None:
    for n, sub in enumerate(subnets):
        label = where[n] if n < len(where) else f"subnet {sub.network}"
        network = sub.network
        for first, last in sub.ranges:
            if first not in network or last not in network:
                problems.add(f"{label} range: {first}-{last} is not inside the subnet {network}")
            elif first == network.network_address or last == network.broadcast_address:
                problems.add(
                    f"{label} range: {first}-{last} includes the subnet's network or "
                    "broadcast address"
                )
    for i, a in enumerate(subnets):
        for b in subnets[i + 1 :]:
            if a.network.overlaps(b.network):
                problems.add(f"[dhcp] subnets {a.network} and {b.network} overlap")


def _check_hosts(
    problems: Problems, hosts: Sequence[HostConfig], subnets: Sequence[SubnetConfig]
) -> None:
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
    problems: Problems,
    boot: BootConfig,
    hosts: Sequence[HostConfig],
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
    (the daemon logs them), such as a pool chosen from the interface's subnet; ``warnings``
    what may need attention but is no refusal (an interface that is not there yet).
    """
    problems = Problems()
    notes = notes if notes is not None else []
    where: list[str] = []
    parsed = parse(data, problems)
    config = derive(parsed, lookup, problems=problems, notes=notes, warnings=warnings, where=where)
    config = check(config, problems=problems, notes=notes, where=where, files=check_files)
    problems.raise_any()
    return config


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
