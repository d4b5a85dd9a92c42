"""What the link watcher makes of two readings of the interfaces (no kernel needed)."""

from __future__ import annotations

from ipaddress import IPv4Interface

from pxed.net.links import Change, ChangeKind, LinkState, changes
from pxed.netinfo import InterfaceInfo


def link(name: str, *addrs: str, index: int = 7, up: bool = True) -> LinkState:
    info = InterfaceInfo(name, "02:00:00:00:00:01", tuple(IPv4Interface(a) for a in addrs), 1500)
    return LinkState(info, index, up)


def test_nothing_changed() -> None:
    a = {"pxs0": link("pxs0", "198.18.0.1/24")}
    assert changes(a, dict(a)) == []


def test_addresses_added_and_removed() -> None:
    old = {"pxs0": link("pxs0", "198.18.0.1/24", "198.19.0.1/16")}
    new = {"pxs0": link("pxs0", "198.18.0.1/24", "198.19.20.1/24")}
    assert changes(old, new) == [
        Change("pxs0", ChangeKind.ADDRESS_REMOVED, IPv4Interface("198.19.0.1/16")),
        Change("pxs0", ChangeKind.ADDRESS_ADDED, IPv4Interface("198.19.20.1/24")),
    ]


def test_interfaces_appear_go_and_are_made_again() -> None:
    old = {"pxs0": link("pxs0", "198.18.0.1/24"), "br0": link("br0", index=9)}
    new = {"pxs0": link("pxs0", "198.18.0.1/24", index=12), "vlan5": link("vlan5", "198.18.5.1/24")}
    got = changes(old, new)
    assert got == [
        Change("br0", ChangeKind.GONE),
        Change("pxs0", ChangeKind.RECREATED),
        Change("vlan5", ChangeKind.APPEARED),
        Change("vlan5", ChangeKind.ADDRESS_ADDED, IPv4Interface("198.18.5.1/24")),
    ]


def test_link_down_and_up() -> None:
    up = {"pxs0": link("pxs0", "198.18.0.1/24")}
    down = {"pxs0": link("pxs0", "198.18.0.1/24", up=False)}
    assert changes(up, down) == [Change("pxs0", ChangeKind.LINK_DOWN)]
    assert changes(down, up) == [Change("pxs0", ChangeKind.LINK_UP)]
