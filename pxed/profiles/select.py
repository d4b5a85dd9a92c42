"""Which profile a machine boots: one function, asked by DHCP and by the file servers.

In order: the machine's boot-once state (``pxed host MAC --next PROFILE``, or local disk
once that install was handed out), its ``[[dhcp.host]] profile``, the first profile whose
``match`` it matches, the ``default = true`` profile; else none, and the machine boots what
``[boot]`` gives without a profile.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from pxed.config import HostConfig, ProfileConfig, ProfileMatch

LOCAL_DISK = ProfileConfig(name="local")
"""The built-in profile ``local``: boot from the local disk (a ``[[profile]]`` named
``local`` replaces it)."""


@dataclass(frozen=True, slots=True)
class Machine:
    """What selection and templates know of a machine."""

    mac: str
    arch: str | None = None
    """Firmware kind as [boot] names it (bios, uefi_x64, ...), from its last DHCP request."""
    uuid: str | None = None
    hostname: str | None = None
    ip: str | None = None


def by_name(profiles: Sequence[ProfileConfig], name: str) -> ProfileConfig | None:
    for profile in profiles:
        if profile.name == name:
            return profile
    return LOCAL_DISK if name == LOCAL_DISK.name else None


def matches(match: ProfileMatch, machine: Machine) -> bool:
    mac = machine.mac.lower()
    if match.mac and mac not in match.mac:
        return False
    if match.mac_prefix and not any(mac.startswith(p) for p in match.mac_prefix):
        return False
    if match.arch and machine.arch not in match.arch:
        return False
    if match.uuid and (machine.uuid or "").lower() not in match.uuid:
        return False
    return not match.hostname or any(
        fnmatch.fnmatchcase((machine.hostname or "").lower(), p.lower()) for p in match.hostname
    )


def select(
    profiles: Sequence[ProfileConfig],
    host: HostConfig | None,
    machine: Machine,
    next_boot: str | None = None,
) -> ProfileConfig | None:
    """The profile ``machine`` boots now; ``next_boot``: its boot-once state's profile."""
    if next_boot is not None:
        chosen = by_name(profiles, next_boot)
        if chosen is not None:
            return chosen
    if host is not None and host.profile is not None:
        return by_name(profiles, host.profile)
    for profile in profiles:
        if profile.match is not None and matches(profile.match, machine):
            return profile
    for profile in profiles:
        if profile.default:
            return profile
    return None
