"""What a reload changes: which settings differ and which sockets must be opened again.

Pure: two Configs in, a plan out. pxed.Server.reload carries the plan out; keeping the
decision here lets it be tested without sockets (and read in one place).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pxed.config import Config

NEEDS_RESTART: dict[str, str] = {
    "mode": "[server] mode",
    "dhcp_enabled": "[dhcp] enabled",
    "state_dir": "[server] state_dir",
    "log_format": "[server] log_format",
    "log_level": "[server] log_level",
    "metrics": "[metrics] listen",
    "http": "[http] listen",
    "boots": "[boots]",
    "leases": "[leases]",
    "cluster": "[cluster]",
}
"""Settings a running pxed cannot take over: the lease store and its lock, which cores
exist at all, the process's logging. A reload changing one is refused as a whole."""

TFTP_SOCKET_KEYS = ("enabled", "port", "single_port", "port_range")
"""What a TFTP endpoint's sockets are made of: a change opens every TFTP endpoint again
(their running transfers end). Everything else in ``[tftp]`` is taken over in place."""


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    problems: tuple[str, ...]
    """Why the new configuration cannot be taken over without a restart (empty: it can)."""
    changed: tuple[str, ...]
    """The settings that differ, as dotted names (``hosts``, ``tftp.root``): for the log."""
    added: tuple[str, ...]
    """Interfaces to serve that were not served."""
    removed: tuple[str, ...]
    """Interfaces no longer served."""
    restart_dhcp: bool
    """The DHCP port changed: the DHCP sockets of the interfaces kept are opened again."""
    restart_tftp: bool
    """A TFTP socket setting changed: the TFTP endpoints are opened again."""

    @property
    def noop(self) -> bool:
        return not self.changed


def _value(value: Any) -> str:
    return str(value) if not isinstance(value, tuple) else ", ".join(map(str, value)) or "none"


def differences(old: Config, new: Config) -> list[str]:
    """Dotted names of the settings that differ; ``boot`` and ``tftp`` key by key."""
    out: list[str] = []
    for f in fields(Config):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        if f.name in ("boot", "tftp"):
            out.extend(
                f"{f.name}.{g.name}"
                for g in fields(type(a))
                if getattr(a, g.name) != getattr(b, g.name)
            )
        else:
            out.append(f.name)
    return out


def plan(old: Config, new: Config) -> ReloadPlan:
    changed = differences(old, new)
    problems = [
        f"{NEEDS_RESTART[name]}: changing it ({_value(getattr(old, name))} -> "
        f"{_value(getattr(new, name))}) needs a restart"
        for name in changed
        if name in NEEDS_RESTART
    ]
    if bool(old.interfaces) != bool(new.interfaces):
        # Without interfaces TFTP listens on every address of the host, with them per
        # interface and DHCP follows them: a different server, not a changed one.
        problems.append(
            "[server] interfaces: going between none and some "
            f"({_value(old.interfaces)} -> {_value(new.interfaces)}) needs a restart"
        )
    return ReloadPlan(
        problems=tuple(problems),
        changed=tuple(changed),
        added=tuple(n for n in new.interfaces if n not in old.interfaces),
        removed=tuple(n for n in old.interfaces if n not in new.interfaces),
        restart_dhcp=old.dhcp_port != new.dhcp_port,
        restart_tftp=any(
            getattr(old.tftp, key) != getattr(new.tftp, key) for key in TFTP_SOCKET_KEYS
        ),
    )
