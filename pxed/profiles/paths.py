"""The names rendered files are served under, the same over TFTP and HTTP.

Each machine's files are under ``pxed/<mac with dashes>/`` (``boot.ipxe``, ``grub.cfg``,
``preseed.cfg`` and cloud-init NoCloud's ``meta-data``, ``user-data``, ``vendor-data``,
``network-config``): stable URLs to give an installer or cloud-init. Boot loaders that look
a machine's file up by their own rule get it there too: PXELINUX asks for
``pxelinux.cfg/01-<mac>`` and GRUB for ``grub.cfg-01-<mac>``, each beside itself (so under
any directory).
"""

from __future__ import annotations

import re

from pxed.files import canonical

MACHINE_FILES = {
    "boot.ipxe": "ipxe",
    "grub.cfg": "grub",
    "preseed.cfg": "preseed",
    "meta-data": "meta_data",
    "user-data": "user_data",
    "vendor-data": "vendor_data",
    "network-config": "network_config",
}
"""File name in a machine's directory -> template kind."""

_MAC = r"([0-9a-f]{2}(?:-[0-9a-f]{2}){5})"
_MACHINE = re.compile(rf"^pxed/{_MAC}/([a-z.-]+)$")
_PXELINUX = re.compile(rf"^(?:.*/)?pxelinux\.cfg/01-{_MAC}$")
_GRUB = re.compile(rf"^(?:.*/)?grub\.cfg-01-{_MAC}$")


def machine_dir(mac: str) -> str:
    """``52:54:00:12:34:56`` -> ``pxed/52-54-00-12-34-56``."""
    return "pxed/" + mac.lower().replace(":", "-")


def machine_file(mac: str, kind: str) -> str:
    """The name a machine's rendered file of ``kind`` is served under."""
    for name, k in MACHINE_FILES.items():
        if k == kind:
            return f"{machine_dir(mac)}/{name}"
    if kind == "pxelinux":
        return "pxelinux.cfg/01-" + mac.lower().replace(":", "-")
    raise ValueError(f"no file of kind {kind!r}")


def rendered(name: str) -> tuple[str, str] | None:
    """``(mac, kind)`` when ``name`` (as a client sent it) is a rendered file's name."""
    clean = canonical(name).lower()
    m = _MACHINE.match(clean)
    if m is not None:
        kind = MACHINE_FILES.get(m.group(2))
        return (m.group(1).replace("-", ":"), kind) if kind is not None else None
    for pattern, kind in ((_PXELINUX, "pxelinux"), (_GRUB, "grub")):
        m = pattern.match(clean)
        if m is not None:
            return m.group(1).replace("-", ":"), kind
    return None
