"""LeaseTable: allocation order, holds, reservations, exhaustion, decline, release, load."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pxed.leases import Lease, LeaseConflict, LeaseState, LeaseTable

NET = IPv4Network("198.19.0.0/24")
T0 = 1_700_000_000.0
HOLD = 60.0
LEASE = 3600


def ip(last: int) -> IPv4Address:
    return IPv4Address(f"198.19.0.{last}")


def key(n: int) -> bytes:
    return b"\x01" + bytes([0x52, 0x54, 0, 0, 0, n])


def mac(n: int) -> str:
    return f"52:54:00:00:00:{n:02x}"


def table(
    lo: int = 10, hi: int = 19, reserved: dict[IPv4Address, bytes] | None = None
) -> LeaseTable:
    return LeaseTable(NET, [(ip(lo), ip(hi))], reserved or {})


def bind(t: LeaseTable, n: int, now: float = T0, requested: IPv4Address | None = None) -> Lease:
    """DISCOVER/OFFER then REQUEST/ACK for client n."""
    offered = t.offer(key(n), mac(n), requested, now, HOLD)
    assert offered is not None
    return t.bind(key(n), mac(n), offered, f"h{n}", now, LEASE)[0]


# ------------------------------------------------------------------ construction


def test_ranges_validated_merged_and_clipped() -> None:
    with pytest.raises(ValueError, match="not inside"):
        LeaseTable(NET, [(ip(1), IPv4Address("198.19.1.5"))])
    with pytest.raises(ValueError, match="start after end"):
        LeaseTable(NET, [(ip(9), ip(1))])
    with pytest.raises(ValueError, match="reserved"):
        LeaseTable(NET, [(ip(1), ip(9))], {IPv4Address("10.0.0.1"): key(1)})
    whole = LeaseTable(NET, [(ip(0), ip(255))])
    assert whole.stats(T0).size == 254  # network and broadcast clipped
    merged = LeaseTable(NET, [(ip(10), ip(20)), (ip(15), ip(30)), (ip(31), ip(31))])
    assert merged.stats(T0).size == 22


def test_network_and_broadcast_never_available() -> None:
    t = LeaseTable(NET, [(ip(0), ip(255))])
    assert not t.available_for(ip(0), key(1), T0)
    assert not t.available_for(ip(255), key(1), T0)
    assert not t.available_for(IPv4Address("198.19.1.1"), key(1), T0)
    assert t.decline(IPv4Address("10.0.0.1"), T0, 600) is None


# ------------------------------------------------------------------ allocation order


def test_never_used_addresses_first_in_order() -> None:
    t = table()
    assert [bind(t, n).ip for n in range(3)] == [ip(10), ip(11), ip(12)]


def test_current_binding_is_offered_again_over_requested() -> None:
    t = table()
    lease = bind(t, 1)
    assert t.offer(key(1), mac(1), ip(15), T0 + 10, HOLD) == lease.ip


def test_previous_address_after_expiry_and_after_release() -> None:
    t = table()
    first = bind(t, 1)
    bind(t, 2)
    # expired: the client comes back much later and gets its old address
    later = T0 + LEASE + 100
    assert t.offer(key(1), mac(1), ip(17), later, HOLD) == first.ip
    t.bind(key(1), mac(1), first.ip, None, later, LEASE)
    released = t.release(key(1), first.ip, later + 1)
    assert released is not None and released.state is LeaseState.RELEASED
    assert t.offer(key(1), mac(1), None, later + 2, HOLD) == first.ip


def test_requested_address_when_no_history() -> None:
    t = table()
    assert t.offer(key(1), mac(1), ip(17), T0, HOLD) == ip(17)
    # outside the ranges (inside the network) is not honoured
    assert t.offer(key(2), mac(2), ip(50), T0, HOLD) == ip(10)
    # taken by someone else: not honoured either
    assert t.offer(key(3), mac(3), ip(17), T0, HOLD) == ip(11)


def test_oldest_free_address_is_reused_first() -> None:
    t = table(10, 12)
    for n in range(3):
        bind(t, n)
    t.release(key(1), ip(11), T0 + 5)
    t.release(key(0), ip(10), T0 + 7)
    t.release(key(2), ip(12), T0 + 6)
    # new clients: least recently used first, so returning clients find theirs longest
    got = [t.offer(key(10 + n), mac(10 + n), None, T0 + 10, HOLD) for n in range(3)]
    assert got == [ip(11), ip(12), ip(10)]


def test_retransmitted_discover_gets_the_same_offer() -> None:
    t = table()
    first = t.offer(key(1), mac(1), None, T0, HOLD)
    assert t.offer(key(1), mac(1), None, T0 + 1, HOLD) == first
    assert t.offer(key(1), mac(1), ip(15), T0 + 2, HOLD) == first
    # one hold per client: the pool only lost one address
    assert t.stats(T0 + 2).held == 1


# ------------------------------------------------------------------ holds


def test_hold_prevents_double_offer_until_it_runs_out() -> None:
    t = table(10, 10)
    assert t.offer(key(1), mac(1), None, T0, HOLD) == ip(10)
    assert not t.available_for(ip(10), key(2), T0 + 1)
    assert t.offer(key(2), mac(2), ip(10), T0 + 1, HOLD) is None
    held = t.by_ip(ip(10))
    assert held is not None and held.state is LeaseState.OFFERED and held.client_key == key(1)
    assert len(t) == 0  # holds are not stored leases
    # the hold runs out: the address goes to the next client
    assert t.offer(key(2), mac(2), None, T0 + HOLD, HOLD) == ip(10)
    assert not t.available_for(ip(10), key(1), T0 + HOLD + 1)


def test_ack_of_another_clients_held_address_is_refused() -> None:
    t = table()
    offered = t.offer(key(1), mac(1), None, T0, HOLD)
    assert offered is not None
    with pytest.raises(LeaseConflict):
        t.bind(key(2), mac(2), offered, None, T0 + 1, LEASE)
    lease = t.bind(key(1), mac(1), offered, "pc", T0 + 1, LEASE)[0]
    assert lease.state is LeaseState.ACTIVE and lease.expires == T0 + 1 + LEASE
    assert lease.subnet == "198.19.0.0/24" and lease.hostname == "pc"


def test_new_offer_moves_the_hold_and_frees_the_old_address() -> None:
    t = table(10, 11)
    assert t.offer(key(1), mac(1), None, T0, HOLD) == ip(10)
    # the client asks for another address; its first hold is let go
    t.decline(ip(10), T0 + 1, 1)  # pretend 10 is gone for a moment
    assert t.offer(key(1), mac(1), None, T0 + 2, HOLD) == ip(11)
    assert t.offer(key(2), mac(2), None, T0 + 3, HOLD) == ip(10)


def test_hold_moving_to_the_reservation_frees_the_first_address() -> None:
    # 10 is reserved for client 1 but still leased to client 2 from before the reservation
    t = table(10, 11, reserved={ip(10): key(1)})
    t.load([Lease(ip(10), key(2), mac(2), None, T0 + 100, LeaseState.ACTIVE, str(NET), T0)])
    assert t.offer(key(1), mac(1), None, T0, HOLD) == ip(11)
    assert t.release(key(2), ip(10), T0 + 1) is not None
    assert t.offer(key(1), mac(1), None, T0 + 2, HOLD) == ip(10)  # its reservation now
    assert t.offer(key(3), mac(3), None, T0 + 3, HOLD) == ip(11)  # the first hold let go


def test_ack_releases_the_clients_other_address() -> None:
    t = table()
    first = bind(t, 1)
    assert t.offer(key(1), mac(1), None, T0 + 1, HOLD) == first.ip
    # INIT-REBOOT style: the client REQUESTs another free address directly
    second = t.bind(key(1), mac(1), ip(15), None, T0 + 2, LEASE)[0]
    old = t.by_ip(first.ip)
    assert old is not None and old.state is LeaseState.RELEASED
    assert t.by_client(key(1)) == second
    assert t.available_for(first.ip, key(2), T0 + 3)
    assert t.stats(T0 + 3).active == 1


# ------------------------------------------------------------------ reservations


def test_reservation_never_given_to_others() -> None:
    t = table(10, 11, reserved={ip(10): key(9), ip(50): key(8)})
    assert t.offer(key(1), mac(1), ip(10), T0, HOLD) == ip(11)
    assert t.offer(key(2), mac(2), None, T0, HOLD) is None  # 10 is not in the pool
    assert not t.available_for(ip(10), key(1), T0)
    with pytest.raises(LeaseConflict):
        t.bind(key(1), mac(1), ip(10), None, T0, LEASE)
    # the owner gets it, first, whatever it asks for
    assert t.offer(key(9), mac(9), ip(11), T0, HOLD) == ip(10)
    # outside the ranges: only the owner
    assert t.offer(key(8), mac(8), None, T0, HOLD) == ip(50)
    assert t.available_for(ip(50), key(8), T0)
    assert not t.available_for(ip(50), key(1), T0)
    assert t.stats(T0).reserved == 1


def test_outside_ranges_kept_only_by_the_key_that_has_it() -> None:
    t = table(10, 19)
    t.load(
        [
            Lease(ip(50), key(1), mac(1), None, T0 + 100, LeaseState.ACTIVE, str(NET), T0),
            Lease(ip(51), key(2), mac(2), None, T0, LeaseState.RELEASED, str(NET), T0),
        ]
    )
    assert t.available_for(ip(50), key(1), T0)  # renewal after the ranges shrank
    assert not t.available_for(ip(50), key(3), T0 + 1000)
    assert t.offer(key(1), mac(1), None, T0, HOLD) == ip(50)
    assert not t.available_for(ip(51), key(2), T0)  # released: move into the ranges
    assert t.offer(key(2), mac(2), None, T0, HOLD) == ip(10)


# ------------------------------------------------------------------ exhaustion and reuse


def test_exhausted_pool_returns_none_then_reuses_expired_and_released() -> None:
    t = table(10, 13)
    leases = [bind(t, n) for n in range(4)]
    assert t.offer(key(20), mac(20), None, T0 + 1, HOLD) is None
    assert t.stats(T0 + 1).free == 0
    t.release(key(2), leases[2].ip, T0 + 2)
    assert t.offer(key(20), mac(20), None, T0 + 3, HOLD) == leases[2].ip
    assert t.offer(key(21), mac(21), None, T0 + 3, HOLD) is None
    # lease 0 expires: handed out again
    expired = T0 + LEASE + 1
    assert t.offer(key(21), mac(21), None, expired, HOLD) is not None
    assert t.by_client(key(21)) is not None


def test_unclaimed_hold_returns_to_the_pool() -> None:
    t = table(10, 11)
    assert t.offer(key(1), mac(1), None, T0, HOLD) == ip(10)
    assert t.offer(key(2), mac(2), None, T0, HOLD) == ip(11)
    assert t.offer(key(3), mac(3), None, T0 + 1, HOLD) is None
    assert t.offer(key(3), mac(3), None, T0 + HOLD + 1, HOLD) in {ip(10), ip(11)}
    assert t.offer(key(4), mac(4), None, T0 + HOLD + 1, HOLD) in {ip(10), ip(11)}
    assert t.offer(key(5), mac(5), None, T0 + HOLD + 1, HOLD) is None


def test_renewals_do_not_grow_the_reuse_heap_without_bound() -> None:
    t = table(10, 19)
    lease = bind(t, 1)
    for i in range(5000):
        lease = t.bind(key(1), mac(1), lease.ip, None, T0 + i, LEASE)[0]
    assert len(t._reuse) <= 2 * len(t) + 1024 + 1


# ------------------------------------------------------------------ decline, release


def test_decline_quarantines_even_a_leased_address() -> None:
    t = table(10, 10)
    lease = bind(t, 1)
    declined = t.decline(lease.ip, T0 + 5, 600)
    assert declined is not None
    assert declined.state is LeaseState.DECLINED and declined.client_key == b""
    assert declined.expires == T0 + 605
    assert t.by_client(key(1)) is None
    for who in (1, 2):
        assert not t.available_for(lease.ip, key(who), T0 + 604)
        assert t.offer(key(who), mac(who), lease.ip, T0 + 604, HOLD) is None
    assert t.stats(T0 + 604).declined == 1
    assert t.offer(key(2), mac(2), None, T0 + 605, HOLD) == lease.ip


def test_decline_drops_a_hold() -> None:
    t = table(10, 11)
    assert t.offer(key(1), mac(1), None, T0, HOLD) == ip(10)
    t.decline(ip(10), T0 + 1, 600)
    assert t.offer(key(1), mac(1), None, T0 + 2, HOLD) == ip(11)


def test_release_only_by_the_owner() -> None:
    t = table()
    lease = bind(t, 1)
    assert t.release(key(2), lease.ip, T0 + 1) is None
    assert t.release(key(1), ip(18), T0 + 1) is None
    released = t.release(key(1), lease.ip, T0 + 1)
    assert released is not None
    assert released.client_key == key(1) and released.expires == T0 + 1
    assert released.updated == T0 + 1
    assert t.release(key(1), lease.ip, T0 + 2) is None  # already released: nothing to store
    assert t.available_for(lease.ip, key(2), T0 + 2)


# ------------------------------------------------------------------ load


def test_load_round_trip_and_filtering() -> None:
    t = table()
    a = bind(t, 1)
    b = bind(t, 2)
    c = t.decline(ip(15), T0, 600)
    t.release(key(2), b.ip, T0 + 1)
    stored = [t.by_ip(a.ip), t.by_ip(b.ip), c]
    other = Lease(
        IPv4Address("198.19.1.5"),
        key(3),
        mac(3),
        None,
        T0 + 9,
        LeaseState.ACTIVE,
        "198.19.1.0/24",
        T0,
    )
    stray = Lease(
        IPv4Address("10.0.0.5"), key(4), mac(4), None, T0 + 9, LeaseState.ACTIVE, str(NET), T0
    )
    offered = Lease(ip(17), key(5), mac(5), None, T0 + 9, LeaseState.OFFERED, str(NET), T0)

    fresh = table()
    fresh.load([x for x in stored if x is not None] + [other, stray, offered])
    assert len(fresh) == 3
    for lease in stored:
        assert lease is not None and fresh.by_ip(lease.ip) == lease
    assert fresh.by_client(key(1)) == a
    assert fresh.by_ip(ip(17)) is None
    # loaded leases are respected by allocation
    assert not fresh.available_for(a.ip, key(9), T0 + 2)
    assert not fresh.available_for(ip(15), key(9), T0 + 2)
    assert fresh.offer(key(2), mac(2), None, T0 + 3, HOLD) == b.ip  # previous address
    new = fresh.offer(key(9), mac(9), None, T0 + 3, HOLD)
    assert new not in {a.ip, b.ip, ip(15)}


def test_load_keeps_only_the_newest_active_lease_of_a_key() -> None:
    # ack() released the old address in memory, but only the new lease was persisted.
    old = Lease(ip(10), key(1), mac(1), None, T0 + 3600, LeaseState.ACTIVE, str(NET), T0)
    new = Lease(ip(11), key(1), mac(1), None, T0 + 3700, LeaseState.ACTIVE, str(NET), T0 + 100)
    t = table()
    t.load([new, old])
    assert t.by_client(key(1)) == new
    was = t.by_ip(ip(10))
    assert was is not None and was.state is LeaseState.RELEASED and was.expires == T0 + 100
    assert t.available_for(ip(10), key(2), T0 + 200)
    assert t.stats(T0 + 200).active == 1


def test_load_a_binding_outranks_a_newer_released_record() -> None:
    # Bound to 11, released it, then bound to 10 by an ack after the wall clock stepped
    # back: the binding has the older ``updated``, and is still the binding.
    bound = Lease(ip(10), key(1), mac(1), None, T0 + 3600, LeaseState.ACTIVE, str(NET), T0)
    newer = Lease(ip(11), key(1), mac(1), None, T0 + 50, LeaseState.RELEASED, str(NET), T0 + 50)
    t = table()
    t.load([newer, bound])
    assert t.by_client(key(1)) == bound
    assert t.by_ip(ip(10)) == bound
    assert not t.available_for(ip(10), key(2), T0 + 60)


def test_load_forgets_a_previous_address_taken_by_another_client() -> None:
    t = table(10, 10)
    bind(t, 1)
    t.release(key(1), ip(10), T0 + 1)
    bind(t, 2, T0 + 2)  # the only address goes to client 2
    assert t.by_client(key(1)) is None
    t.decline(ip(10), T0 + 3, 10)
    assert t.by_client(key(2)) is None


def test_load_then_expiry_reuse_and_cursor_skip() -> None:
    t = table(10, 12)
    t.load(
        [
            Lease(ip(10), key(1), mac(1), None, T0 + 50, LeaseState.ACTIVE, str(NET), T0),
            Lease(ip(12), key(2), mac(2), None, T0 + 40, LeaseState.ACTIVE, str(NET), T0),
        ]
    )
    assert t.offer(key(3), mac(3), None, T0, HOLD) == ip(11)
    assert t.offer(key(4), mac(4), None, T0, HOLD) is None
    assert t.offer(key(4), mac(4), None, T0 + 45, HOLD) == ip(12)


def test_stats() -> None:
    t = table(10, 19, reserved={ip(19): key(9)})
    bind(t, 1)
    t.offer(key(2), mac(2), None, T0, HOLD)
    t.decline(ip(18), T0, 600)
    s = t.stats(T0 + 1)
    assert (s.size, s.active, s.held, s.declined, s.reserved) == (10, 1, 1, 1, 1)
    assert s.free == 10 - 4
    later = t.stats(T0 + LEASE + 1)
    assert (later.active, later.held, later.declined, later.free) == (0, 0, 0, 9)


def test_large_pool_is_fast_enough_to_be_linear_overall() -> None:
    # 65024 addresses, every one allocated and then every one reused after expiry; a
    # linear scan per offer would take minutes here, the free structures take about a second.
    net = IPv4Network("198.18.0.0/15")
    t = LeaseTable(net, [(IPv4Address("198.19.0.0"), IPv4Address("198.19.253.255"))])
    size = t.stats(T0).size
    assert size == 65024
    seen = set()
    for n in range(size):
        k = n.to_bytes(7, "big")
        got = t.offer(k, "m", None, T0, HOLD)
        assert got is not None
        seen.add(got)
        t.bind(k, "m", got, None, T0, 10)
    assert len(seen) == size
    assert t.offer(b"late", "m", None, T0 + 1, HOLD) is None
    for n in range(size):
        k = (size + n).to_bytes(7, "big")
        assert t.offer(k, "m", None, T0 + 20, HOLD) is not None
    assert t.offer(b"late", "m", None, T0 + 20, HOLD) is None


# ------------------------------------------------------------------ state machine

ADDRS = [ip(n) for n in range(8, 15)]  # a few outside the range 10-13, one reserved
RANGE = {ip(n) for n in range(10, 14)}
RESERVED = {ip(12): key(0), ip(14): key(1)}
KEYS = [key(n) for n in range(5)]


class TableMachine(RuleBasedStateMachine):
    """Random DHCP traffic against a tiny pool, checked against a plain model.

    The model knows, per address, who holds or binds it until when. Every address the table
    hands out (offer or ack) must be free of any other key's live hold/binding in the model,
    never another key's reservation; and the table must say "exhausted" only when the model
    agrees nothing is left for that key.
    """

    def __init__(self) -> None:
        super().__init__()
        self.t = LeaseTable(NET, [(ip(10), ip(13))], RESERVED)
        self.now = T0
        self.holds: dict[IPv4Address, tuple[bytes, float]] = {}
        self.binds: dict[IPv4Address, tuple[bytes, float]] = {}
        self.quarantine: dict[IPv4Address, float] = {}
        self.persisted: dict[IPv4Address, Lease] = {}
        """What the server would have stored: the leases the table returned."""

    def busy_for(self, address: IPv4Address, k: bytes) -> bool:
        owner = RESERVED.get(address)
        if owner is not None and owner != k:
            return True
        if self.quarantine.get(address, 0.0) > self.now:
            return True
        for table in (self.holds, self.binds):
            who, until = table.get(address, (k, 0.0))
            if who != k and until > self.now:
                return True
        return False

    def give(self, address: IPv4Address, k: bytes, lease: bool, until: float) -> None:
        assert not self.busy_for(address, k), (address, k)
        for a, (who, _) in list(self.holds.items()):
            if who == k:
                del self.holds[a]
        if lease:
            for a, (who, _) in list(self.binds.items()):
                if who == k:
                    del self.binds[a]
            self.binds[address] = (k, until)
        else:
            self.holds[address] = (k, until)

    def persist_binding(self, lease: Lease) -> None:
        """What LeaseStore.commit does with a new ACTIVE lease (one binding per key)."""
        for address, row in list(self.persisted.items()):
            if row.client_key == lease.client_key and row.state is LeaseState.ACTIVE:
                self.persisted[address] = replace(
                    row,
                    state=LeaseState.RELEASED,
                    expires=min(row.expires, lease.updated),
                    updated=lease.updated,
                )
        self.persisted[lease.ip] = lease

    @rule(k=st.sampled_from(KEYS), requested=st.none() | st.sampled_from(ADDRS))
    def offer(self, k: bytes, requested: IPv4Address | None) -> None:
        got = self.t.offer(k, "m", requested, self.now, 30.0)
        if got is None:
            assert all(
                self.busy_for(a, k) for a in RANGE | {a for a, o in RESERVED.items() if o == k}
            )
            return
        assert got in RANGE or RESERVED.get(got) == k or self.binds.get(got, (b"",))[0] == k
        self.give(got, k, lease=False, until=self.now + 30.0)

    @rule(k=st.sampled_from(KEYS), address=st.sampled_from(ADDRS), time=st.sampled_from([0, 60]))
    def request(self, k: bytes, address: IPv4Address, time: int) -> None:
        if self.t.available_for(address, k, self.now):
            lease = self.t.bind(k, "m", address, None, self.now, time)[0]
            assert lease.client_key == k and lease.state is LeaseState.ACTIVE
            self.persist_binding(lease)
            self.give(address, k, lease=True, until=self.now + time)
        else:
            with pytest.raises(LeaseConflict):
                self.t.bind(k, "m", address, None, self.now, time)

    @precondition(lambda self: bool(self.binds))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        address = data.draw(st.sampled_from(sorted(self.binds)))
        k = data.draw(st.sampled_from(KEYS))
        lease = self.t.release(k, address, self.now)
        owner, _ = self.binds[address]
        if owner == k:
            assert lease is not None and lease.state is LeaseState.RELEASED
            del self.binds[address]
            self.persist_binding(lease)
        else:
            assert lease is None
        self.holds = {a: h for a, h in self.holds.items() if not (a == address and h[0] == k)}

    @rule(address=st.sampled_from(ADDRS))
    def decline(self, address: IPv4Address) -> None:
        lease = self.t.decline(address, self.now, 45)
        assert lease is not None
        self.persisted[address] = lease
        self.quarantine[address] = self.now + 45
        self.binds.pop(address, None)
        self.holds.pop(address, None)

    @rule(seconds=st.sampled_from([0.0, 0.0004, 1.0, 29.9995, 31.0, 100.0]))
    def tick(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def restart(self) -> None:
        """Reload from what the server would have persisted (holds are lost: fine)."""
        fresh = LeaseTable(NET, [(ip(10), ip(13))], RESERVED)
        fresh.load(self.persisted.values())
        self.t = fresh
        self.holds.clear()

    @invariant()
    def table_agrees_with_model(self) -> None:
        for address, (k, until) in self.binds.items():
            if until > self.now:
                lease = self.t.by_ip(address)
                assert lease is not None and lease.client_key == k and lease.is_bound(self.now)
                assert not any(
                    self.t.available_for(address, other, self.now) for other in KEYS if other != k
                )
        for address, (k, until) in self.holds.items():
            if until > self.now:
                assert not any(
                    self.t.available_for(address, other, self.now) for other in KEYS if other != k
                )


TestTableMachine = TableMachine.TestCase
TestTableMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_lease_values_are_frozen() -> None:
    lease = Lease(ip(1), key(1), mac(1), None, T0, LeaseState.ACTIVE, str(NET), T0)
    with pytest.raises(AttributeError):
        lease.ip = ip(2)  # type: ignore[misc]
    assert replace(lease, state=LeaseState.RELEASED).state is LeaseState.RELEASED


def test_expired_between_names_the_bindings_that_ran_out_then() -> None:
    t = table()
    first, _ = t.bind(key(1), mac(1), ip(10), None, T0, 60)
    t.bind(key(2), mac(2), ip(11), None, T0, 600)
    t.bind(key(3), mac(3), ip(12), None, T0, 60)
    t.release(key(3), ip(12), T0 + 10)  # released: it does not expire
    assert t.expired_between(T0, T0 + 59) == []
    assert [lease.ip for lease in t.expired_between(T0 + 59, T0 + 61)] == [first.ip]
    assert t.expired_between(T0 + 61, T0 + 120) == []  # told once, in its window
    t.bind(key(2), mac(2), ip(11), None, T0 + 300, 600)  # renewed before it ran out
    assert t.expired_between(T0 + 590, T0 + 610) == []
