"""What pxed needs to know about a local interface, read through netifaces.

Kept apart from config validation so that tests can hand the validator made-up interfaces.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import netifaces


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    name: str
    mac: str | None
    addresses: tuple[IPv4Interface, ...]
    mtu: int | None

    @property
    def primary(self) -> IPv4Interface | None:
        return self.addresses[0] if self.addresses else None

    def address_in_same_net(self, peer: IPv4Address) -> IPv4Address | None:
        """Our address on the peer's subnet (to answer from the address the peer can reach)."""
        for iface in self.addresses:
            if peer in iface.network:
                return iface.ip
        return None

    def address_in(self, network: IPv4Network) -> IPv4Address | None:
        for iface in self.addresses:
            if iface.ip in network:
                return iface.ip
        return None


def interface_info(name: str) -> InterfaceInfo | None:
    """The interface's IPv4 addresses, MAC and MTU; None when there is no such interface."""
    if name not in netifaces.interfaces():
        return None
    addrs = netifaces.ifaddresses(name)
    v4: list[IPv4Interface] = []
    for entry in addrs.get(netifaces.AF_INET, []):
        try:
            v4.append(ipaddress.IPv4Interface(f"{entry['addr']}/{entry['netmask']}"))
        except (KeyError, ValueError):
            continue
    link = addrs.get(netifaces.AF_LINK, [])
    mac = str(link[0]["addr"]).lower() if link and link[0].get("addr") else None
    return InterfaceInfo(name=name, mac=mac, addresses=tuple(v4), mtu=_mtu(name))


def _mtu(name: str) -> int | None:
    try:
        return int(Path(f"/sys/class/net/{name}/mtu").read_text().strip())
    except (OSError, ValueError):
        return None
