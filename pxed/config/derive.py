"""Derive stage: what the configuration states + the interfaces present now -> Config.

Each subnet is placed on an interface: its network is the subnet of the interface address
that holds its range, or, with neither range nor network given, the first free interface's
subnet with a default pool in it. An interface that is missing or has no address yet is a
warning, not a refusal; its subnet is derived once it has one (Config.derive_on,
derive_subnet, called by pxed.Server). The interfaces come from a lookup function, so the
stage runs on made-up interfaces in the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

from pxed.config.model import Config, SubnetConfig
from pxed.config.parse import Parsed, SubnetSpec
from pxed.config.problems import Problems
from pxed.netinfo import InterfaceInfo, interface_info

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
    """No pool holds pxed's own address on the subnet's interface (the one rule between the
    parts that needs the interfaces: pxed.Server runs it too, once it has read them).
    Raises ConfigError; given ``problems``, adds to it instead."""
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
