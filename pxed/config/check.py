"""Check stage: the rules between the parts of a whole Config, and the boot files.

It runs on a Config however it was built: load_config runs it after the derive stage
(the rules need the subnets' networks, which may come from the interfaces), and
pxed.Server on the Config it is given, so that a program building its Config in code is
refused with the same lines as `pxed check`. Values on their own (a port number, a MAC's
spelling) are the parse stage's: a Config built in code has its types for those.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pxed import chain
from pxed.config.model import BootConfig, Config, HostConfig, SubnetConfig, TftpConfig
from pxed.config.problems import Problems
from pxed.files import FileRefused, FileStore, Refusal

_FILE_KEYS = ("bios", "uefi_x64", "uefi_ia32", "uefi_arm64", "ipxe")
_DEFAULT_BOOT = BootConfig()


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
    _check_profiles(problems, config)
    if config.leases.backend == "postgresql" and importlib.util.find_spec("psycopg") is None:
        problems.add(
            "[leases] backend = 'postgresql' needs psycopg: pip install 'pxed[postgresql]'"
        )
    boot = config.boot
    if files:
        boot = _check_boot_files(problems, boot, config.hosts, config.tftp, notes)
        _check_profile_files(problems, config)
        _check_hook(problems, "[hooks] lease", config.hooks.lease)
        _check_hook(problems, "[hooks] boot", config.hooks.boot)

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


def _check_profiles(problems: Problems, config: Config) -> None:
    from pxed.profiles.select import LOCAL_DISK

    names: set[str] = set()
    defaults: list[str] = []
    for profile in config.profiles:
        if profile.name in names:
            problems.add(f"[[profile]] {profile.name}: the name is used by another profile")
        names.add(profile.name)
        if profile.default:
            defaults.append(profile.name)
    if len(defaults) > 1:
        problems.add(f"[[profile]]: default = true on more than one ({', '.join(defaults)})")
    known = names | {LOCAL_DISK.name}
    for host in config.hosts:
        if host.profile is None:
            continue
        if host.profile not in known:
            listed = ", ".join(sorted(known))
            problems.add(
                f"[[dhcp.host]] {host.mac} profile: no [[profile]] named {host.profile!r} "
                f"(there are: {listed})"
            )
        if host.boot:
            problems.add(
                f"[[dhcp.host]] {host.mac}: boot and profile both say what it boots; keep one"
            )


def _check_profile_files(problems: Problems, config: Config) -> None:
    """Each profile's kernel and initrds are served from the root, and every template
    renders for a sample machine (an undefined variable is refused here, not found in a
    boot file)."""
    from pxed.profiles.render import check_profile

    tftp = config.tftp
    store = FileStore.for_config(tftp) if tftp.root.is_dir() else None
    for profile in config.profiles:
        for key, names in (("kernel", [profile.kernel]), ("initrd", profile.initrd)):
            for name in names:
                if name is None or _is_url(name) or store is None:
                    continue
                why = _not_served(store, name, tftp.root)
                if why is not None:
                    problems.add(f"[[profile]] {profile.name} {key}: {why}")
        for line in check_profile(profile, config.http.listen):
            problems.add(line)


def _check_hook(problems: Problems, key: str, path: Path | None) -> None:
    if path is not None and not (path.is_file() and os.access(path, os.X_OK)):
        problems.add(f"{key}: {path} is not an executable file")


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
    # A file the configuration names must be there. Built in code, a BootConfig says what
    # it sets only by its values: one that differs from the default was set.
    explicit = boot.explicit | {
        key for key in _FILE_KEYS if getattr(boot, key) != getattr(_DEFAULT_BOOT, key)
    }
    root = tftp.root
    if not root.is_dir():
        problems.add(f"[tftp] root: {root} is not a directory (create it, or pass --tftp-root DIR)")
        return boot
    store = FileStore.for_config(tftp)
    changes: dict[str, Any] = {}
    for key in _FILE_KEYS:
        name: str | None = getattr(boot, key)
        if name is None or _is_url(name):
            continue
        why = _not_served(store, name, root)
        if why is not None:
            if key in explicit:
                problems.add(f"[boot] {key}: {why}")
            else:
                notes.append(f"default boot file ({key}): {why}; not offered")
                changes[key] = None
    # `pxed stage --secure-boot` (x64) or `--arch arm64` staged a signed chain: it boots
    # with Secure Boot on or off, where iPXE's unsigned build is refused with it on.
    for key, shim, what in (("uefi_x64", chain.SHIM, "UEFI x64"),
                            ("uefi_arm64", chain.SHIM_ARM64, "UEFI arm64")):  # fmt: skip
        if key in explicit or _not_served(store, shim, root) is not None:
            continue
        broken = chain_problems(shim, store, root)
        if broken:
            notes.append(f"{shim} in the root, not offered: " + "; ".join(broken))
        else:
            changes[key] = shim
            notes.append(f"{what} machines get {shim} (the signed chain in the root)")
    for key in _FILE_KEYS:
        name = changes.get(key, getattr(boot, key))
        if key in explicit and name and not _is_url(name) and chain.is_shim(name):
            for line in chain_problems(name, store, root):
                problems.add(f"[boot] {key}: {line}")
    for host in hosts:
        why = None if not host.boot or _is_url(host.boot) else _not_served(store, host.boot, root)
        if why is not None:
            problems.add(f"[[dhcp.host]] {host.mac} boot: {why}")
        elif host.boot and not _is_url(host.boot) and chain.is_shim(host.boot):
            for line in chain_problems(host.boot, store, root):
                problems.add(f"[[dhcp.host]] {host.mac} boot: {line}")
    if changes:
        return replace(boot, **changes)
    return boot


def chain_problems(shim: str, store: FileStore, root: Path) -> list[str]:
    """pxed.chain.chain_problems against the root, through the same lookup as a request."""

    def read(name: str) -> str | None:
        try:
            f = store.open(name)
        except (FileRefused, OSError):
            return None
        try:
            return bytes(f.data).decode("utf-8", "replace")
        finally:
            f.close()

    return chain.chain_problems(shim, lambda name: _not_served(store, name, root), read)


def _not_served(store: FileStore, name: str, root: Path) -> str | None:
    """Why the TFTP server would not serve ``name`` (found by the same lookup, checks and
    open as a request), or None when it would."""
    try:
        store.open(name).close()
    except FileRefused as exc:
        if exc.kind == Refusal.NOT_FOUND:
            return f"{name!r} does not exist under the TFTP root {root}"
        return f"{name!r} under the TFTP root {root} is not served: {exc.reason}"
    return None
