"""DhcpEndpoint's read path on a loopback socket it opens: bursts, the read pause, shutdown.

The core here is a stand-in that answers every datagram to its sender: what is under test
is the glue (draining, pausing between wake-ups, stopping), not DHCP.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from ipaddress import IPv4Address

import pytest

from pxed.dhcp.options import MessageType
from pxed.dhcp.server import Destination, Outcome, Reply, Source
from pxed.net import dhcp as glue
from pxed.net.dhcp import DhcpEndpoint


class EchoCore:
    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def receive(self, data: bytes, source: Source, now: float) -> Outcome:
        self.seen.append(data)
        dest = Destination(source.address, source.port, source.interface)
        return Outcome(replies=[Reply(b"re:" + data, dest, MessageType.OFFER)])


@pytest.fixture
def client() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture
async def echo() -> AsyncIterator[tuple[EchoCore, DhcpEndpoint, tuple[str, int]]]:
    """An endpoint on loopback with the echo core, and the address to send it datagrams."""
    core = EchoCore()
    endpoint = DhcpEndpoint(core, None, "lo", port=0)
    await endpoint.start()
    assert endpoint.sock is not None
    try:
        yield core, endpoint, ("127.0.0.1", endpoint.sock.getsockname()[1])
    finally:
        await endpoint.close()


async def replies(sock: socket.socket, count: int, timeout: float = 2.0) -> list[bytes]:
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got.append(await loop.sock_recv(sock, 2048))
    return got


async def test_a_burst_is_answered_and_the_pause_lets_later_datagrams_through(
    client: socket.socket, echo: tuple[EchoCore, DhcpEndpoint, tuple[str, int]]
) -> None:
    _, _, server = echo
    # More than one wake-up's worth (MAX_BURST) at once: nothing is left unread.
    count = glue.MAX_BURST * 2 + 5
    for n in range(count):
        client.sendto(b"%d" % n, server)
    got = await replies(client, count)
    assert sorted(got) == sorted(b"re:%d" % n for n in range(count))
    # One at a time, each while the socket may be paused: each still answered.
    for n in range(5):
        client.sendto(b"late%d" % n, server)
        assert await replies(client, 1) == [b"re:late%d" % n]


async def test_stop_reading_during_a_pause_stays_stopped(
    client: socket.socket, echo: tuple[EchoCore, DhcpEndpoint, tuple[str, int]]
) -> None:
    core, endpoint, server = echo
    client.sendto(b"one", server)
    assert await replies(client, 1) == [b"re:one"]
    endpoint.stop_reading()  # the pause after "one" may still be pending
    await asyncio.sleep(glue.READ_PAUSE * 5)
    client.sendto(b"two", server)
    await asyncio.sleep(0.2)
    assert core.seen == [b"one"]


def test_source_objects_are_reused() -> None:
    endpoint = DhcpEndpoint(EchoCore(), None, "lo")
    a = endpoint._source("198.18.0.2", 67, b"")
    assert endpoint._source("198.18.0.2", 67, b"") is a
    assert a == Source("lo", IPv4Address("198.18.0.2"), 67, 67)
    # A relay's unicast says which of our addresses it reached; a broadcast says none.
    relayed = endpoint._source("198.18.0.2", 67, IPv4Address("198.18.4.1").packed)
    assert relayed.local == IPv4Address("198.18.4.1")
    assert endpoint._source("0.0.0.0", 68, b"\xff\xff\xff\xff").local is None
