"""Finding other DHCP servers on a segment: the start-up probe of auto mode, and the watcher.

pxed must never become a second, rogue DHCP server on someone's LAN by accident. In auto mode
it sends one DHCPDISCOVER per interface before deciding and listens a few seconds: any OFFER
means a server is already there, so pxed runs as ProxyDHCP. In full mode a watcher on port 68
logs every other server it hears (OFFER/ACK broadcasts), once per server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address

import structlog

from pxed.dhcp.options import MessageType, OptionCode
from pxed.dhcp.packet import DhcpPacket, build, parse
from pxed.errors import MalformedPacket
from pxed.events import Event, Notice
from pxed.net.dhcp import open_dhcp_socket
from pxed.netinfo import InterfaceInfo

log = structlog.get_logger("pxed.probe")

CLIENT_PORT = 68
SERVER_PORT = 67


@dataclass(frozen=True, slots=True)
class ProbeOffer:
    """Another server's answer to the probe: who it is, and where it puts its clients."""

    interface: str
    server: IPv4Address
    address: IPv4Address
    """The address it offered (yiaddr): ProxyDHCP answers from its own address in that
    subnet, the one the router's clients will be in."""


def drain_replies(sock: socket.socket) -> Iterator[tuple[DhcpPacket, str]]:
    """Every well-formed BOOTREPLY waiting on the socket, with its source address."""
    while True:
        try:
            data, (addr, _port) = sock.recvfrom(4096)
        except OSError:  # BlockingIOError: drained
            return
        try:
            p = parse(data)
        except MalformedPacket:
            continue
        if p.op == 2:
            yield p, addr


def probe_packet(info: InterfaceInfo, xid: int) -> bytes:
    mac = bytes.fromhex((info.mac or "02:00:00:00:00:00").replace(":", ""))
    return build(
        DhcpPacket(
            op=1,
            xid=xid,
            flags=0x8000,  # ask for broadcast replies: the probe has no address to be reached at
            chaddr=mac,
            options={
                OptionCode.MESSAGE_TYPE: bytes([MessageType.DISCOVER]),
                OptionCode.CLIENT_ID: b"\x01" + mac,
                OptionCode.PARAMETER_REQUEST_LIST: bytes([1, 3, 6]),
                OptionCode.VENDOR_CLASS_ID: b"pxed-probe",
            },
        )
    )


async def probe(
    info: InterfaceInfo,
    timeout: float = 3.0,
    *,
    client_port: int = CLIENT_PORT,
    server_port: int = SERVER_PORT,
) -> list[ProbeOffer]:
    """Send one DISCOVER on the interface; return the offers of other servers."""
    loop = asyncio.get_running_loop()
    xid = int.from_bytes(os.urandom(4), "big")
    found: list[ProbeOffer] = []
    try:
        sock = open_dhcp_socket(info.name, client_port)
    except OSError as exc:
        log.warning("probe.failed", iface=info.name, error=str(exc))
        return found

    def readable() -> None:
        for p, addr in drain_replies(sock):
            if p.xid == xid and p.message_type is MessageType.OFFER:
                server = p.server_id or IPv4Address(addr)
                if all(o.server != server for o in found):
                    found.append(ProbeOffer(info.name, server, p.yiaddr))
                    log.info("probe.offer", iface=info.name, server=str(server), ip=str(p.yiaddr))

    loop.add_reader(sock.fileno(), readable)
    try:
        packet = probe_packet(info, xid)
        # A lost DISCOVER would make pxed a second server: send it again halfway through.
        for _attempt in range(2):
            try:
                sock.sendto(packet, ("255.255.255.255", server_port))
            except OSError as exc:
                log.warning("probe.send_failed", iface=info.name, error=str(exc))
            await asyncio.sleep(timeout / 2)
            if found:
                break
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
    return found


class ForeignServerWatcher:
    """Logs a warning, once per server, for every other DHCP server heard on the interface."""

    def __init__(
        self,
        info: InterfaceInfo,
        own: set[IPv4Address],
        port: int = CLIENT_PORT,
        publish: Callable[[list[Event]], None] | None = None,
    ):
        self.info = info
        self.own = own
        self.port = port
        self.publish = publish
        """The event stream (``dhcp.other_server`` as an event); None: logged directly."""
        self.seen: set[IPv4Address] = set()
        self.sock: socket.socket | None = None

    async def start(self) -> None:
        try:
            self.sock = open_dhcp_socket(self.info.name, self.port)
        except OSError as exc:
            # Not fatal: another program holds the client port without SO_REUSEADDR.
            log.warning("watch.unavailable", iface=self.info.name, error=str(exc))
            return
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        if self.sock is None:
            return
        for p, addr in drain_replies(self.sock):
            if p.message_type not in (MessageType.OFFER, MessageType.ACK):
                continue
            server = p.server_id or IPv4Address(addr)
            if server in self.own or server in self.seen:
                continue
            self.seen.add(server)
            fields = {
                "iface": self.info.name,
                "server": str(server),
                "msg_type": p.message_type.name if p.message_type else None,
                "detail": "another DHCP server answers on this segment; consider mode = 'proxy'",
            }
            if self.publish is not None:
                self.publish([Notice("dhcp.other_server", logging.WARNING, fields)])
            else:
                log.warning("dhcp.other_server", **fields)

    async def close(self) -> None:
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
