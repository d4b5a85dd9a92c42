"""Several pxed on one network, sharing a PostgreSQL lease database: who answers whom.

Pure (no I/O). The servers find each other through their heartbeat rows in the database
(pxed.leases.pg.Heartbeat); a server whose row is older than ``[cluster] takeover`` seconds
is dead to the others until it beats again. The live servers, sorted by name, split the
work two ways, both a function of the same list, so that every server works it out alike
without talking to the others:

- clients, by RFC 3074: the Pearson hash of the client identifier (option 61, else chaddr)
  is a bucket 0-255, and bucket b is the ``b % n``-th live server's. That server alone
  answers the client's DISCOVER and its broadcast REQUESTs (INIT-REBOOT, REBINDING), so one
  client gets one offer. A REQUEST that names a server (SELECTING) or is unicast to one
  (RENEWING) is answered by that server, whoever's bucket it is.
- free addresses: address ``a`` is offered only by the ``a % n``-th live server, so two
  servers never offer the same free address to two new clients. Addresses already bound
  stay with their client whoever bound them; the database has the last word on each write.

When a server stops beating, the list shrinks and the survivors take its buckets and its
share of the pool: its clients' rebinds and new clients are theirs. When it comes back it
joins the list again and gets a share as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pxed.dhcp.packet import DhcpPacket

# RFC 3074 section 6: a "mixing table" of the 256 byte values in pseudo-random order.
_MIX = bytes(
    (
        251, 175, 119, 215, 81, 14, 79, 191, 103, 49, 181, 143, 186, 157, 0, 232, 31, 32,
        55, 60, 152, 58, 17, 237, 174, 70, 160, 144, 220, 90, 57, 223, 59, 3, 18, 140, 111,
        166, 203, 196, 134, 243, 124, 95, 222, 179, 197, 65, 180, 48, 36, 15, 107, 46, 233,
        130, 165, 30, 123, 161, 209, 23, 97, 16, 40, 91, 219, 61, 100, 10, 210, 109, 250,
        127, 22, 138, 29, 108, 244, 67, 207, 9, 178, 204, 74, 98, 126, 249, 167, 116, 34,
        77, 193, 200, 121, 5, 20, 113, 71, 35, 128, 13, 182, 94, 25, 226, 227, 199, 75, 27,
        41, 245, 230, 224, 43, 225, 177, 26, 155, 150, 212, 142, 218, 115, 241, 73, 88, 105,
        39, 114, 62, 255, 192, 201, 145, 214, 168, 158, 221, 148, 154, 122, 12, 84, 82, 163,
        44, 139, 228, 236, 205, 242, 217, 11, 187, 146, 159, 64, 86, 239, 195, 42, 106, 198,
        118, 112, 184, 172, 87, 2, 173, 117, 176, 229, 247, 253, 137, 185, 99, 164, 102, 147,
        45, 66, 231, 52, 141, 211, 194, 206, 246, 238, 56, 110, 78, 248, 63, 240, 189, 93,
        92, 51, 53, 183, 19, 171, 72, 50, 33, 104, 101, 69, 8, 252, 83, 120, 76, 135, 85, 54,
        202, 125, 188, 213, 96, 235, 136, 208, 162, 129, 190, 132, 156, 38, 47, 1, 7, 254,
        24, 4, 216, 131, 89, 21, 28, 133, 37, 153, 149, 80, 170, 68, 6, 169, 234, 151,
    )
)  # fmt: skip


def pearson(key: bytes) -> int:
    """RFC 3074's hash: start from the length, mix in the bytes from the last to the first."""
    h = len(key) & 0xFF
    for byte in reversed(key):
        h = _MIX[h ^ byte]
    return h


def bucket(packet: DhcpPacket) -> int:
    """The client's RFC 3074 bucket: the hash of option 61's value, else of chaddr."""
    return pearson(packet.client_id or packet.chaddr)


@dataclass(frozen=True, slots=True)
class Balance:
    """The split of the work among the live servers, as seen by one of them."""

    me: str
    servers: tuple[str, ...]
    """Live servers, sorted by name; ``me`` among them."""

    @property
    def index(self) -> int:
        return self.servers.index(self.me)

    @property
    def count(self) -> int:
        return len(self.servers)

    @property
    def alone(self) -> bool:
        return self.servers == (self.me,)

    def serves(self, packet: DhcpPacket) -> bool:
        """This server answers the client's DISCOVER and broadcast REQUESTs (never while
        it is still joining: not among ``servers`` yet)."""
        if self.me not in self.servers:
            return False
        return bucket(packet) % len(self.servers) == self.index

    def owner(self, packet: DhcpPacket) -> str:
        return self.servers[bucket(packet) % len(self.servers)]


class Membership:
    """Which servers are alive, from the heartbeat rows (name, seconds since seen)."""

    def __init__(self, me: str, takeover: float) -> None:
        self.me = me
        self.takeover = takeover
        # No servers known before the first heartbeat: answer nobody's DISCOVER yet (the
        # others may be answering them all).
        self.balance = Balance(me, ())

    def update(
        self,
        rows: Iterable[tuple[str, float]],
        *,
        joining: bool = False,
        settled: bool = True,
    ) -> tuple[list[str], list[str]] | None:
        """Take the heartbeat rows; (joined, left) when the live set changed, else None.

        This server counts as alive whatever its row says: it only reads rows right after
        writing its own, and while it cannot write, it can acknowledge nothing anyway.
        ``joining``: it started less than two heartbeats ago, so the others may not have
        seen its row yet and still answer its share; it takes none while others are alive
        (two offers for one client otherwise), all of it when it is alone.
        ``settled``: this server's own heartbeats have gone through for ``takeover`` seconds.
        Until then nobody is taken for dead: after an outage of the database every row is
        old, and the others were as cut off as this server, not dead.
        """
        live = {name for name, age in rows if age <= self.takeover} | {self.me}
        if not settled:
            live |= set(self.balance.servers)
        if joining and live != {self.me}:
            live.discard(self.me)
        before = set(self.balance.servers)
        if live == before:
            return None
        self.balance = Balance(self.me, tuple(sorted(live)))
        return sorted(live - before), sorted(before - live)

    @staticmethod
    def share_of(balance: Balance) -> tuple[int, int] | None:
        """(index, count) for the lease tables; None when alone (the whole pool is ours)
        or still joining (it offers nothing then)."""
        if balance.alone or balance.me not in balance.servers:
            return None
        return (balance.index, balance.count)
