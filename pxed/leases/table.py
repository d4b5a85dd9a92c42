"""Address allocation for one subnet: pure, no I/O, time passed in.

Addresses are handled as ints inside the table: ``IPv4Address.__hash__`` hashes a hex
string, so ints are several times cheaper as dict keys, and ``int(address)`` returns the
int the address object already holds, so keying by it costs no extra memory.

Free addresses have no object of their own (a 65024-address pool must not cost 65024
objects). They are found through three structures, each checked lazily when popped, so
nothing has to be removed from them when an address gets used some other way:

- a cursor walking the ranges once: addresses never used since start-up, in order;
- ``_returned``: addresses that were only ever held (an OFFER nobody took up);
- ``_reuse``: a min-heap of every stored record by the moment its address comes (came)
  free: expiry of ACTIVE and DECLINED records, release time of RELEASED ones. The top is
  the least recently used address (RFC 2131 §4.3.1 prefers those: a client that still
  remembers an old address has the best chance of getting it back).

Heap entries are single ints, ``millis << 32 | address``: about a third of the memory of a
``(float, int)`` tuple, and compared without a tuple's element-by-element dance.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType

from pxed.leases.model import Lease, LeaseConflict, LeaseState, TableStats

_NO_RESERVATIONS: Mapping[IPv4Address, bytes] = MappingProxyType({})
_IP_MASK = 0xFFFFFFFF


def _millis(t: float) -> int:
    # Floor, and the same function everywhere: entries are recognised as current by
    # comparing the value stored in them with the one computed from the record now.
    return math.floor(t * 1000.0)


def _rank(lease: Lease) -> tuple[bool, float, float]:
    """Which of a key's records is its current one: a binding first, then the latest.

    A newer RELEASED record elsewhere does not end a binding (the key may have been given
    that address back since), so ACTIVE ranks above any time.
    """
    return (lease.state is LeaseState.ACTIVE, lease.updated, lease.expires)


def _free_since(lease: Lease) -> float:
    """When the address of a stored record is (or was) free for any client again.

    The reuse heap's order. A RELEASED address is free whatever this says (see ``_is_free``):
    its time may lie a little ahead of ``now`` after a wall-clock step back.
    """
    if lease.state is LeaseState.RELEASED:
        return min(lease.expires, lease.updated)
    return lease.expires


def _is_free(lease: Lease, now: float) -> bool:
    """Is the address of this stored record free for any client at ``now``?"""
    return lease.state is LeaseState.RELEASED or lease.expires <= now


class LeaseTable:
    """Leases, holds and the free pool of one subnet.

    Invariants the methods keep (and the tests check): an address is never held or bound
    for two client keys at once; a reserved address is never offered or bound to any key
    but its own; network and broadcast addresses are never handed out.
    """

    __slots__ = (
        "_cursor",
        "_cursor_range",
        "_hold_by_key",
        "_hold_expiry",
        "_holds",
        "_lease_by_key",
        "_leases",
        "_net_hi",
        "_net_lo",
        "_range_ends",
        "_range_starts",
        "_reserved",
        "_reserved_by_key",
        "_returned",
        "_reuse",
        "_share",
        "_size",
        "_subnet",
        "network",
    )

    def __init__(
        self,
        network: IPv4Network,
        ranges: Sequence[tuple[IPv4Address, IPv4Address]],
        reserved: Mapping[IPv4Address, bytes] = _NO_RESERVATIONS,
    ) -> None:
        self.network = network
        # One shared string for every Lease of this subnet (100000 leases, one object).
        self._subnet = str(network)
        net_lo = int(network.network_address)
        net_hi = int(network.broadcast_address)
        self._net_lo, self._net_hi = net_lo, net_hi
        if network.prefixlen < 31:
            # RFC 3021: /31 and /32 have no network or broadcast address to keep out.
            net_lo, net_hi = net_lo + 1, net_hi - 1

        spans: list[tuple[int, int]] = []
        for start, end in ranges:
            lo, hi = int(start), int(end)
            if lo > hi:
                raise ValueError(f"range {start}-{end} of {network}: start after end")
            if start not in network or end not in network:
                raise ValueError(f"range {start}-{end} is not inside {network}")
            # Clip rather than refuse: the network and broadcast addresses can never be
            # leased, so a range written as the whole network means its host addresses.
            lo, hi = max(lo, net_lo), min(hi, net_hi)
            if lo <= hi:
                spans.append((lo, hi))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self._range_starts = [lo for lo, _ in merged]
        self._range_ends = [hi for _, hi in merged]
        self._size = sum(hi - lo + 1 for lo, hi in merged)

        self._reserved: dict[int, bytes] = {}
        self._reserved_by_key: dict[bytes, list[int]] = {}
        for address, key in reserved.items():
            ipi = int(address)
            if not net_lo <= ipi <= net_hi:
                raise ValueError(f"reserved address {address} is not a host address of {network}")
            if not key:
                raise ValueError(f"reserved address {address} has an empty client key")
            self._reserved[ipi] = key
            self._reserved_by_key.setdefault(key, []).append(ipi)
        for addresses in self._reserved_by_key.values():
            addresses.sort()

        self._leases: dict[int, Lease] = {}
        """Stored records (ACTIVE, RELEASED, DECLINED) by address."""
        self._lease_by_key: dict[bytes, int] = {}
        """Each key's current or most recent record."""
        self._holds: dict[int, Lease] = {}
        """OFFERED holds by address; at most one per key."""
        self._hold_by_key: dict[bytes, int] = {}
        self._hold_expiry: list[int] = []
        """Min-heap of ``millis(expires) << 32 | address`` for holds, to return them to the pool."""
        self._reuse: list[int] = []
        self._returned: list[int] = []
        self._cursor_range = 0
        self._cursor = self._range_starts[0] if merged else 0
        self._share: bytes | None = None
        """256 flags: only free addresses ``a`` with ``share[a & 255]`` set are offered
        (pxed.cluster: servers sharing a database split the pool); None: all of them."""

    # ----------------------------------------------------------------- queries

    def __len__(self) -> int:
        """Stored lease records (holds are not stored, so not counted)."""
        return len(self._leases)

    def records(self) -> list[Lease]:
        """Every lease on record (bound, released, declined, expired), in no order."""
        return list(self._leases.values())

    def by_client(self, key: bytes) -> Lease | None:
        """The key's stored record (current or previous lease), else its hold, else None.

        No clock here: check ``expires``/``is_bound(now)``; use ``available_for`` to decide.
        """
        ipi = self._lease_by_key.get(key)
        if ipi is not None:
            return self._leases[ipi]
        ipi = self._hold_by_key.get(key)
        return self._holds[ipi] if ipi is not None else None

    def by_ip(self, ip: IPv4Address) -> Lease | None:
        """The address's stored record, else the hold on it, else None (see ``by_client``)."""
        ipi = int(ip)
        lease = self._leases.get(ipi)
        return lease if lease is not None else self._holds.get(ipi)

    def holding(self, ip: IPv4Address, now: float) -> Lease | None:
        """The offer or binding that holds ``ip`` at ``now``, if any.

        What a DHCPDECLINE or DHCPRELEASE is checked against: only the client given an
        address may decline or release it.
        """
        ipi = int(ip)
        hold = self._holds.get(ipi)
        if hold is not None and hold.expires > now:
            return hold
        lease = self._leases.get(ipi)
        if lease is not None and lease.is_bound(now):
            return lease
        return None

    def in_ranges(self, ip: IPv4Address) -> bool:
        return self._in_ranges(int(ip))

    def available_for(self, ip: IPv4Address, key: bytes, now: float) -> bool:
        """May ``ip`` be offered to / bound for ``key`` at ``now``?"""
        return self._available(int(ip), key, now)

    def expired_between(self, since: float, now: float) -> list[Lease]:
        """The bindings that ran out in (since, now]: ACTIVE records whose end passed then
        (a renewed one ends later, a released one is no longer ACTIVE). O(leases): for a scan
        every few seconds, not per packet."""
        return [
            lease
            for lease in self._leases.values()
            if lease.state is LeaseState.ACTIVE and since < lease.expires <= now
        ]

    def stats(self, now: float) -> TableStats:
        """Counts for logs and metrics; O(leases + holds), meant for occasional calls."""
        busy: set[int] = {ipi for ipi in self._reserved if self._in_ranges(ipi)}
        reserved = len(busy)
        active = declined = held = 0
        for ipi, lease in self._leases.items():
            if lease.state is LeaseState.ACTIVE and lease.expires > now:
                active += 1
            elif lease.state is LeaseState.DECLINED and lease.expires > now:
                declined += 1
            else:
                continue
            if self._in_ranges(ipi):
                busy.add(ipi)
        for ipi, hold in self._holds.items():
            if hold.expires > now:
                held += 1
                if self._in_ranges(ipi):
                    busy.add(ipi)
        return TableStats(
            size=self._size,
            active=active,
            free=self._size - len(busy),
            held=held,
            declined=declined,
            reserved=reserved,
        )

    # ----------------------------------------------------------------- changes

    def load(self, leases: Iterable[Lease]) -> None:
        """Take records from the store (at start-up); other subnets' records are skipped.

        A key has one binding per subnet: ``bind`` releases the key's other address, and the
        store does the same to the stored rows when it writes the new lease. Should a key
        still come back with several ACTIVE rows (a database written otherwise), only the
        most recently updated one stays bound; the others are loaded as RELEASED.
        """
        for lease in leases:
            ipi = int(lease.ip)
            if lease.subnet != self._subnet or not self._net_lo <= ipi <= self._net_hi:
                continue
            if lease.state is LeaseState.OFFERED:
                continue  # never stored; ignore one that was anyway
            self._leases[ipi] = lease

        newest: dict[bytes, int] = {}
        for ipi, lease in self._leases.items():
            key = lease.client_key
            if lease.state is LeaseState.DECLINED or not key:
                continue
            other = newest.get(key)
            if other is None:
                newest[key] = ipi
                continue
            if _rank(lease) > _rank(self._leases[other]):
                newest[key] = ipi
        for ipi, lease in list(self._leases.items()):
            key = lease.client_key
            if lease.state is LeaseState.ACTIVE and key and newest.get(key) != ipi:
                until = self._leases[newest[key]].updated
                self._leases[ipi] = replace(
                    lease, state=LeaseState.RELEASED, expires=min(lease.expires, until)
                )
        self._lease_by_key = newest
        self._rebuild_reuse()

    def reshaped(
        self,
        ranges: Sequence[tuple[IPv4Address, IPv4Address]],
        reserved: Mapping[IPv4Address, bytes] = _NO_RESERVATIONS,
    ) -> LeaseTable:
        """A table for the same network with new ranges and reservations (a reload), holding
        this one's records and holds: no client loses its lease or the address it was just
        offered. A hold on an address now reserved for another client is dropped (that
        client's REQUEST is then NAKed and it starts over); a binding is kept whatever the
        new rules say, as the store keeps it, until it ends or its client moves."""
        table = LeaseTable(self.network, ranges, reserved)
        table.load(self._leases.values())
        for ipi, hold in self._holds.items():
            owner = table._reserved.get(ipi)
            if owner is not None and owner != hold.client_key:
                continue
            table._holds[ipi] = hold
            table._hold_by_key[hold.client_key] = ipi
            heapq.heappush(table._hold_expiry, _millis(hold.expires) << 32 | ipi)
        table.set_share(self._share)
        return table

    def set_share(self, share: bytes | None) -> None:
        """Offer only this server's share of the free addresses from now on (None: all).

        The free-address search drops addresses outside the share as it meets them; here it
        starts over (cursor back at the start, reuse heap rebuilt), so an address that just
        became ours is found again. O(records), once per change of the servers alive.
        """
        if share == self._share:
            return
        self._share = share
        self._cursor_range = 0
        self._cursor = self._range_starts[0] if self._range_starts else 0
        self._rebuild_reuse()

    def merge(self, leases: Iterable[Lease], *, force: bool = False) -> int:
        """Take records another server wrote to the shared database; returns how many
        changed the table. A record replaces this table's for its address when it is newer
        (``updated``), or always with ``force`` (the database refused this table's write:
        its record is the truth). Other subnets' records are skipped."""
        changed = 0
        for lease in leases:
            ipi = int(lease.ip)
            if lease.subnet != self._subnet or not self._net_lo <= ipi <= self._net_hi:
                continue
            if lease.state is LeaseState.OFFERED:
                continue
            mine = self._leases.get(ipi)
            if mine == lease or (mine is not None and not force and mine.updated > lease.updated):
                continue
            if (
                mine is not None
                and mine.client_key != lease.client_key
                and self._lease_by_key.get(mine.client_key) == ipi
            ):
                del self._lease_by_key[mine.client_key]
            self._leases[ipi] = lease
            key = lease.client_key
            if key and lease.state is not LeaseState.DECLINED:
                current = self._lease_by_key.get(key)
                if current is None or current == ipi or _rank(lease) > _rank(self._leases[current]):
                    self._lease_by_key[key] = ipi
            hold = self._holds.get(ipi)
            if hold is not None and hold.client_key != key and lease.is_bound(hold.updated):
                # Offered here, bound elsewhere meanwhile: the offer is void.
                self._drop_hold(ipi, give_back=False)
            self._track(ipi)
            changed += 1
        return changed

    def offer(
        self,
        key: bytes,
        mac: str,
        requested: IPv4Address | None,
        now: float,
        hold: float,
    ) -> IPv4Address | None:
        """Choose an address for ``key`` and hold it for ``hold`` seconds; None if exhausted.

        Order (RFC 2131 §4.3.1, a host reservation being the client's manual binding): its
        reservation; its current binding; the address already held for it (a retransmitted
        DISCOVER gets the same OFFER); its previous address; the requested address if in the
        ranges; an address never used; the one free for the longest time.
        """
        self._reap_holds(now)
        ipi = self._choose(key, requested, now)
        if ipi is None:
            return None
        address = IPv4Address(ipi)
        old = self._hold_by_key.get(key)
        if old is not None and old != ipi:
            self._drop_hold(old)
        other = self._holds.get(ipi)
        if other is not None and other.client_key != key:
            # An expired hold not reaped yet (reaping stops at sub-millisecond ties).
            self._drop_hold(ipi, give_back=False)
        expires = now + hold
        self._holds[ipi] = Lease(
            ip=address,
            client_key=key,
            mac=mac,
            hostname=None,
            expires=expires,
            state=LeaseState.OFFERED,
            subnet=self._subnet,
            updated=now,
        )
        self._hold_by_key[key] = ipi
        heapq.heappush(self._hold_expiry, _millis(expires) << 32 | ipi)
        return address

    def bind(
        self,
        key: bytes,
        mac: str,
        ip: IPv4Address,
        hostname: str | None,
        now: float,
        lease_time: int,
        *,
        arch: int | None = None,
        boot_file: str | None = None,
    ) -> tuple[Lease, Lease | None]:
        """Bind ``ip`` to ``key``; returns (new lease, the key's released other lease or None).

        ``arch`` and ``boot_file`` are recorded for people (`pxed leases`); no decision here
        depends on them.

        Both are what to persist, in that order of importance. Drops the key's hold, and
        releases the key's lease on another address: a client has one binding per subnet.
        Raises LeaseConflict when ``ip`` is not ``available_for`` the key; the server must
        check that first and NAK.
        """
        ipi = int(ip)
        if not self._available(ipi, key, now):
            raise LeaseConflict(f"{ip} is not available to client {key.hex()}")
        if lease_time < 0:
            raise ValueError(f"negative lease time {lease_time}")
        held = self._hold_by_key.get(key)
        if held is not None:
            self._drop_hold(held, give_back=held != ipi)
        if ipi in self._holds:
            # Another key's hold that has run out (available_for said so): superseded.
            self._drop_hold(ipi, give_back=False)

        released = None
        previous = self._lease_by_key.get(key)
        if previous is not None and previous != ipi:
            old = self._leases[previous]
            if old.state is LeaseState.ACTIVE:
                released = replace(
                    old, state=LeaseState.RELEASED, expires=min(old.expires, now), updated=now
                )
                self._leases[previous] = released
                self._track(previous)
        before = self._leases.get(ipi)
        if (
            before is not None
            and before.client_key != key
            and self._lease_by_key.get(before.client_key) == ipi
        ):
            # The previous owner's "previous address" is gone to someone else.
            del self._lease_by_key[before.client_key]

        lease = Lease(
            ip=ip,
            client_key=key,
            mac=mac,
            hostname=hostname,
            expires=now + lease_time,
            state=LeaseState.ACTIVE,
            subnet=self._subnet,
            updated=now,
            arch=arch,
            boot_file=boot_file,
        )
        self._leases[ipi] = lease
        self._lease_by_key[key] = ipi
        self._track(ipi)
        return lease, released

    def release(self, key: bytes, ip: IPv4Address, now: float) -> Lease | None:
        """DHCPRELEASE: give ``ip`` back if it is bound to ``key``; returns the record to store.

        None (nothing to store) when the address is not the key's, or already not ACTIVE.
        The record keeps the key so the client gets the address back next time if free.
        """
        ipi = int(ip)
        hold = self._holds.get(ipi)
        if hold is not None and hold.client_key == key:
            self._drop_hold(ipi)
        lease = self._leases.get(ipi)
        if lease is None or lease.client_key != key or lease.state is not LeaseState.ACTIVE:
            return None
        released = replace(
            lease,
            state=LeaseState.RELEASED,
            expires=min(lease.expires, now),
            updated=now,
        )
        self._leases[ipi] = released
        self._track(ipi)
        return released

    def decline(
        self, ip: IPv4Address, now: float, quarantine: int, mac: str = ""
    ) -> Lease | None:
        """DHCPDECLINE: keep ``ip`` out of the pool until ``now + quarantine``, whoever had it.

        Returns the DECLINED record to store; None for an address not in this subnet.
        ``mac``: the decliner's, kept on the record (a shared database accepts a quarantine
        of a bound address only from the MAC it is bound to).
        """
        ipi = int(ip)
        if not self._host(ipi):
            return None
        if ipi in self._holds:
            self._drop_hold(ipi, give_back=False)
        before = self._leases.get(ipi)
        if before is not None and self._lease_by_key.get(before.client_key) == ipi:
            del self._lease_by_key[before.client_key]
        lease = Lease(
            ip=ip,
            client_key=b"",
            mac=mac,
            hostname=None,
            expires=now + quarantine,
            state=LeaseState.DECLINED,
            subnet=self._subnet,
            updated=now,
        )
        self._leases[ipi] = lease
        self._track(ipi)
        return lease

    # ----------------------------------------------------------------- internals

    def _host(self, ipi: int) -> bool:
        """A host address of the network (not its network or broadcast address)."""
        if not self._net_lo <= ipi <= self._net_hi:
            return False
        if self._net_hi - self._net_lo < 2:
            return True  # /31 and /32 (RFC 3021)
        return self._net_lo < ipi < self._net_hi

    def _in_ranges(self, ipi: int) -> bool:
        i = bisect.bisect_right(self._range_starts, ipi) - 1
        return i >= 0 and ipi <= self._range_ends[i]

    def _available(self, ipi: int, key: bytes, now: float) -> bool:
        if not self._host(ipi):
            return False
        owner = self._reserved.get(ipi)
        if owner is not None and owner != key:
            return False
        hold = self._holds.get(ipi)
        if hold is not None and hold.expires > now and hold.client_key != key:
            return False
        lease = self._leases.get(ipi)
        if lease is not None:
            if lease.state is LeaseState.DECLINED and lease.expires > now:
                return False
            if lease.is_bound(now) and lease.client_key != key:
                return False
        if owner is not None or self._in_ranges(ipi):
            return True
        # Outside the ranges (e.g. the ranges shrank): only keep what the key already has.
        if hold is not None and hold.expires > now and hold.client_key == key:
            return True
        return lease is not None and lease.state is LeaseState.ACTIVE and lease.client_key == key

    def _choose(self, key: bytes, requested: IPv4Address | None, now: float) -> int | None:
        for ipi in self._reserved_by_key.get(key, ()):
            if self._available(ipi, key, now):
                return ipi
        current = self._lease_by_key.get(key)
        bound = current is not None and self._leases[current].is_bound(now)
        if current is not None and bound and self._available(current, key, now):
            return current
        held = self._hold_by_key.get(key)
        if held is not None and self._holds[held].expires > now and self._available(held, key, now):
            return held
        if current is not None and self._available(current, key, now):
            return current
        if requested is not None:
            ipi = int(requested)
            if self._in_ranges(ipi) and self._available(ipi, key, now):
                return ipi
        return self._take_free(now)

    def _unclaimed(self, ipi: int, now: float) -> bool:
        """Neither reserved nor held: the pool may hand out this (otherwise free) address."""
        if ipi in self._reserved:
            return False
        hold = self._holds.get(ipi)
        return hold is None or hold.expires <= now

    def _take_free(self, now: float) -> int | None:
        # 1. Never used: walk the ranges once. Addresses with a record are skipped for
        # good, because the reuse heap tracks every record.
        share = self._share
        ends = self._range_ends
        while self._cursor_range < len(ends):
            ipi = self._cursor
            if ipi > ends[self._cursor_range]:
                self._cursor_range += 1
                if self._cursor_range < len(ends):
                    self._cursor = self._range_starts[self._cursor_range]
                continue
            self._cursor = ipi + 1
            if share is not None and not share[ipi & 255]:
                continue  # another server's to offer (set_share starts the walk over)
            if ipi not in self._leases and self._unclaimed(ipi, now):
                return ipi
        # 2. Never leased, only held by someone who did not come back.
        returned = self._returned
        while returned:
            ipi = returned.pop()
            if share is not None and not share[ipi & 255]:
                continue  # the cursor finds it again if it becomes ours (set_share)
            if ipi not in self._leases and self._unclaimed(ipi, now):
                return ipi
        # 3. Leased before: the one free for the longest time.
        reuse = self._reuse
        while reuse:
            entry = reuse[0]
            ipi = entry & _IP_MASK
            lease = self._leases.get(ipi)
            if lease is None or _millis(_free_since(lease)) != entry >> 32:
                heapq.heappop(reuse)  # stale: the record changed and was pushed again
                continue
            if not _is_free(lease, now):
                # The oldest record is not free yet, so none is. Leave it in place.
                return None
            heapq.heappop(reuse)
            if share is not None and not share[ipi & 255]:
                continue  # set_share rebuilds the heap when the share changes
            if self._unclaimed(ipi, now):
                return ipi
            # Held (via a requested/previous address): it comes back when the hold ends.
        return None

    def _track(self, ipi: int) -> None:
        """Put a changed record's address (back) into the reuse heap."""
        if ipi in self._reserved or not self._in_ranges(ipi):
            return  # never part of the dynamic pool
        heapq.heappush(self._reuse, _millis(_free_since(self._leases[ipi])) << 32 | ipi)
        # Renewals leave stale entries behind; rebuild when they outnumber live ones, which
        # keeps both memory and the amortised cost per change bounded.
        if len(self._reuse) > 2 * len(self._leases) + 1024:
            self._rebuild_reuse()

    def _rebuild_reuse(self) -> None:
        self._reuse = [
            _millis(_free_since(lease)) << 32 | ipi
            for ipi, lease in self._leases.items()
            if ipi not in self._reserved and self._in_ranges(ipi)
        ]
        heapq.heapify(self._reuse)

    def _give_back(self, ipi: int) -> None:
        """An address stopped being held: make the free-address search see it again."""
        if ipi in self._leases:
            self._track(ipi)
        elif ipi not in self._reserved and self._in_ranges(ipi):
            self._returned.append(ipi)
            if len(self._returned) > self._size + 1024:
                self._returned = sorted(set(self._returned), reverse=True)

    def _drop_hold(self, ipi: int, *, give_back: bool = True) -> None:
        hold = self._holds.pop(ipi)
        if self._hold_by_key.get(hold.client_key) == ipi:
            del self._hold_by_key[hold.client_key]
        if give_back:
            self._give_back(ipi)

    def _reap_holds(self, now: float) -> None:
        """Return the addresses of holds that ran out to the pool."""
        heap = self._hold_expiry
        while heap:
            entry = heap[0]
            ipi = entry & _IP_MASK
            hold = self._holds.get(ipi)
            if hold is None or _millis(hold.expires) != entry >> 32:
                heapq.heappop(heap)  # dropped or refreshed since
                continue
            if hold.expires > now:
                return
            heapq.heappop(heap)
            self._drop_hold(ipi)
