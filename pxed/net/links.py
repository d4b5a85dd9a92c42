"""Following interfaces and addresses while pxed runs, as dnsmasq's ``--bind-dynamic`` does.

The kernel announces every link and address change on rtnetlink multicast groups. pxed
listens there (no polling) and treats a message as a cue only: after a short pause that
gathers a burst (``ip addr add`` of several addresses, a bridge coming up with its ports) it
reads the configured interfaces again and compares them with what it had. The comparison is
plain code (:func:`changes`), so tests run it without a kernel; the glue here only owns the
socket and the timer. IPv6 address groups are joined as well: a later listener for IPv6
needs no new watcher, only a reader of the v6 addresses in :func:`read_links`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Interface
from pathlib import Path

import structlog

from pxed.netinfo import InterfaceInfo, interface_info

log = structlog.get_logger("pxed.links")

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1  # linux/rtnetlink.h: link created, deleted, up or down
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
IFF_UP = 0x1
SETTLE = 0.05
"""Seconds between the first rtnetlink message of a burst and the read of the interfaces."""
POLL_EVERY = 2.0
"""Without rtnetlink (a sandbox that refuses the socket), how often to read them instead."""


@dataclass(frozen=True, slots=True)
class LinkState:
    """One interface as the kernel has it now."""

    info: InterfaceInfo
    index: int
    """The kernel's interface index: a new one means the interface was made again, and
    sockets bound to the old one (SO_BINDTODEVICE) hear nothing any more."""
    up: bool


class ChangeKind(Enum):
    APPEARED = "appeared"
    GONE = "gone"
    RECREATED = "recreated"
    ADDRESS_ADDED = "address-added"
    ADDRESS_REMOVED = "address-removed"
    LINK_UP = "link-up"
    LINK_DOWN = "link-down"


@dataclass(frozen=True, slots=True)
class Change:
    interface: str
    kind: ChangeKind
    address: IPv4Interface | None = None


def changes(old: Mapping[str, LinkState], new: Mapping[str, LinkState]) -> list[Change]:
    """What differs between two readings of the interfaces, in an order fit to act on:
    interfaces gone or made again first, then addresses, then link state."""
    out: list[Change] = []
    for name in old.keys() - new.keys():
        out.append(Change(name, ChangeKind.GONE))
    for name, now in new.items():
        was = old.get(name)
        if was is None:
            out.append(Change(name, ChangeKind.APPEARED))
            out.extend(Change(name, ChangeKind.ADDRESS_ADDED, a) for a in now.info.addresses)
            continue
        if was.index != now.index:
            out.append(Change(name, ChangeKind.RECREATED))
        before, after = set(was.info.addresses), set(now.info.addresses)
        out.extend(
            Change(name, ChangeKind.ADDRESS_REMOVED, a)
            for a in was.info.addresses
            if a not in after
        )
        out.extend(
            Change(name, ChangeKind.ADDRESS_ADDED, a) for a in now.info.addresses if a not in before
        )
        if was.up != now.up:
            out.append(Change(name, ChangeKind.LINK_UP if now.up else ChangeKind.LINK_DOWN))
    return out


def read_links(
    names: Iterable[str], lookup: Callable[[str], InterfaceInfo | None] = interface_info
) -> dict[str, LinkState]:
    """The named interfaces that exist now, with their addresses, index and link state."""
    found: dict[str, LinkState] = {}
    for name in names:
        info = lookup(name)
        if info is None:
            continue
        try:
            index = socket.if_nametoindex(name)
        except OSError:
            index = 0  # a made-up interface in tests, or gone between the two reads
        found[name] = LinkState(info, index, _is_up(name))
    return found


def _is_up(name: str) -> bool:
    try:
        return bool(int(Path(f"/sys/class/net/{name}/flags").read_text(), 16) & IFF_UP)
    except (OSError, ValueError):
        return True


class LinkWatcher:
    """Calls ``on_change(links, changes)`` on the loop whenever the named interfaces change."""

    def __init__(
        self,
        names: Iterable[str],
        current: Mapping[str, LinkState],
        on_change: Callable[[dict[str, LinkState], list[Change]], None],
        *,
        lookup: Callable[[str], InterfaceInfo | None] = interface_info,
    ) -> None:
        self.names = tuple(names)
        self.links = dict(current)
        self._on_change = on_change
        self._lookup = lookup
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: asyncio.TimerHandle | None = None
        self._poll: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            sock.setblocking(False)
            sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        except OSError as exc:
            log.warning("links.polling", error=str(exc), every=POLL_EVERY)
            self._poll = self._loop.call_later(POLL_EVERY, self._polled)
            return
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._readable)
        # A change between the caller's reading and the socket's bind would go unseen.
        self._schedule()

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # ENOBUFS: messages were lost; a fresh reading covers them
                log.debug("links.recv_error", error=str(exc))
                break
        self._schedule()

    def _schedule(self) -> None:
        if self._pending is None and self._loop is not None:
            self._pending = self._loop.call_later(SETTLE, self._rescan)

    def _polled(self) -> None:
        self._rescan()
        if self._loop is not None:
            self._poll = self._loop.call_later(POLL_EVERY, self._polled)

    def _rescan(self) -> None:
        self._pending = None
        new = read_links(self.names, self._lookup)
        found = changes(self.links, new)
        self.links = new
        if found:
            try:
                self._on_change(new, found)
            except Exception:
                log.exception("links.apply_failed")

    async def close(self) -> None:
        for handle in (self._pending, self._poll):
            if handle is not None:
                handle.cancel()
        self._pending = self._poll = None
        if self._sock is not None:
            if self._loop is not None:
                with contextlib.suppress(ValueError, OSError):
                    self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
