"""Lease values shared by the allocation table and the SQLite store.

Times are wall-clock epoch seconds (``time.time()``), not the event loop's monotonic clock:
leases outlive the process, so they must mean the same thing after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Address

from pxed.errors import PxedError


class LeaseState(Enum):
    """Where an address stands for one client.

    There is no EXPIRED state: an ACTIVE lease whose ``expires <= now`` is expired. Deriving
    it from the clock means nothing has to run at expiry time to keep the table true.
    """

    OFFERED = "offered"
    """Held for a client between OFFER and REQUEST; in memory only, never stored."""
    ACTIVE = "active"
    """Bound to the client (DHCPACK sent) until ``expires``."""
    RELEASED = "released"
    """The client gave it back (DHCPRELEASE, or it was acknowledged another address).

    The record is kept so the client gets the same address again next time (RFC 2131
    §4.3.1 "previous address"), as long as nobody else took it in between.
    """
    DECLINED = "declined"
    """Another host answered on the address (DHCPDECLINE): out of the pool until ``expires``.

    ``client_key`` is empty: the address belongs to nobody while it is quarantined.
    """


@dataclass(frozen=True, slots=True)
class Lease:
    """One address's record: who has (or last had) it, and until when."""

    ip: IPv4Address
    client_key: bytes
    """Client identifier (option 61) when the client sent one, else ``b"\\x01" + chaddr``.

    Computed by the DHCP server; empty for a DECLINED address.
    """
    mac: str
    """Lower-case, colon separated; informational (the key is what identifies the client)."""
    hostname: str | None
    expires: float
    """Epoch seconds: end of the binding (ACTIVE), of the hold (OFFERED), of the quarantine
    (DECLINED), or the moment it was given back (RELEASED)."""
    state: LeaseState
    subnet: str
    """The subnet's network as text (``"198.19.0.0/16"``): the store keys rows by it."""
    updated: float
    """Epoch seconds of the last change to this record."""
    arch: int | None = None
    """Client architecture (option 93, first value) of the request that bound it; None when
    the client sent none, or for a record no DHCPREQUEST bound (a declined address)."""
    boot_file: str | None = None
    """The boot file the ACK that bound it named; None when it got none."""
    server: str | None = None
    """The pxed that wrote the record, when the store is shared by several (PostgreSQL);
    None in a store of one server's own (SQLite). Set by the store, not by the table."""

    def is_bound(self, now: float) -> bool:
        """True while the address is bound to ``client_key`` (ACTIVE and not yet expired)."""
        return self.state is LeaseState.ACTIVE and self.expires > now


@dataclass(frozen=True, slots=True)
class TableStats:
    """Counts for one subnet's table at one moment (for logs and metrics)."""

    size: int
    """Addresses in the dynamic ranges (network and broadcast addresses excluded)."""
    active: int
    """ACTIVE leases not yet expired (in or out of the ranges)."""
    free: int
    """Addresses in the ranges a new client could be offered now."""
    held: int
    """Live OFFERED holds."""
    declined: int
    """Addresses still in DECLINED quarantine."""
    reserved: int
    """Reserved (host reservation) addresses inside the ranges: never in the dynamic pool."""


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What one ``commit()`` of a lease store did."""

    written: int
    """Rows stored (durable now)."""
    refused: dict[tuple[str, int], Lease | None]
    """(subnet, address as int) of the staged writes the database refused, with the record
    it holds for that address: another server bound the address to another client first. A
    store of one server's own refuses nothing. Every refused write is dropped, not retried,
    and its ACK must not be sent."""


class LeaseConflict(PxedError):
    """``bind`` was asked to bind an address that is not available to that client.

    The server checks ``LeaseTable.available_for`` first and answers DHCPNAK; reaching this
    means that check was skipped, and binding anyway could give one address to two clients.
    """
