"""Several pxed on one network, sharing a PostgreSQL lease database: who answers whom.

Pure (no I/O). The servers find each other through their heartbeat rows in the database
(pxed.leases.pg.Heartbeat); a server whose row is older than ``[cluster] takeover`` seconds
is dead to the others until it beats again. The live servers, sorted by name, split the
work two ways, both a function of the same list, so that every server works it out alike
without talking to the others:

- clients, by RFC 3074: the Pearson hash of the client identifier (option 61, else chaddr)
  is a bucket 0-255, given to one live server by rendezvous hashing (Balance). It alone
  answers the client's DISCOVER and its broadcast REQUESTs (INIT-REBOOT, REBINDING), so one
  client gets one offer. A REQUEST that names a server (SELECTING) or is unicast to one
  (RENEWING) is answered by that server, whoever's bucket it is.
- free addresses: address ``a`` is offered only by the server of bucket ``a & 255``, so two
  servers never offer the same free address to two new clients. Addresses already bound
  stay with their client whoever bound them; the database has the last word on each write.

When a server stops beating, the list shrinks and the survivors take its buckets and its
share of the pool: its clients' rebinds and new clients are theirs. When it comes back it
joins the list again and gets a share as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b

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


def _weight(name: str, bucket: int) -> int:
    return int.from_bytes(blake2b(f"{bucket}/{name}".encode(), digest_size=8).digest(), "big")


class Balance:
    """The split of the work among the live servers, as seen by one of them.

    Bucket b goes to the live server with the highest weight for (b, its name): rendezvous
    hashing, so that when a server leaves only its buckets move (to the others, evenly) and
    when one joins it takes buckets from each; all the others stay where they were. Two
    servers that briefly disagree about who is alive (each sees a change at its own next
    heartbeat) then disagree about those buckets only, not about nearly all of them as with
    ``b % n``.
    """

    __slots__ = ("_owners", "me", "servers")

    def __init__(self, me: str, servers: tuple[str, ...]) -> None:
        self.me = me
        self.servers = servers
        """Live servers, sorted by name; ``me`` among them once it has joined."""
        self._owners = tuple(
            max(servers, key=lambda name: _weight(name, b)) if servers else "" for b in range(256)
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Balance) and (self.me, self.servers) == (other.me, other.servers)

    def __hash__(self) -> int:
        return hash((self.me, self.servers))

    def __repr__(self) -> str:
        return f"Balance(me={self.me!r}, servers={self.servers!r})"

    @property
    def alone(self) -> bool:
        return self.servers == (self.me,)

    def owner_of(self, b: int) -> str:
        """The server of bucket ``b`` ("" while no server is known)."""
        return self._owners[b]

    def serves(self, packet: DhcpPacket) -> bool:
        """This server answers the client's DISCOVER and broadcast REQUESTs (never while
        it is still joining: not among ``servers`` yet)."""
        return self._owners[bucket(packet)] == self.me

    def owner(self, packet: DhcpPacket) -> str:
        return self._owners[bucket(packet)]

    def mask(self) -> bytes:
        """256 flags, 1 for this server's buckets: a free address ``a`` is this server's to
        offer when ``mask[a & 255]`` (pxed.leases.table.LeaseTable.set_share)."""
        return bytes(int(owner == self.me) for owner in self._owners)


STALE = 3600.0
"""Seconds after which a heartbeat row no longer counts, even right after an outage."""


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
        rows = list(rows)
        live = {name for name, age in rows if age <= self.takeover} | {self.me}
        if not settled:
            # Also the servers seen in the last hour: right after an outage of the database
            # (or a start during one) every row is old, and a server that took itself for
            # alone would answer everybody beside the others.
            live |= set(self.balance.servers) | {n for n, age in rows if age <= STALE}
        if joining and live != {self.me}:
            live.discard(self.me)
        before = set(self.balance.servers)
        if live == before:
            return None
        self.balance = Balance(self.me, tuple(sorted(live)))
        return sorted(live - before), sorted(before - live)

    @staticmethod
    def share_of(balance: Balance) -> bytes | None:
        """The lease tables' share of the pool (Balance.mask); None when alone (the whole
        pool is ours) or still joining (it offers nothing then)."""
        if balance.alone or balance.me not in balance.servers:
            return None
        return balance.mask()
