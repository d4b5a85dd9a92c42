"""Several servers sharing a database: RFC 3074 split, membership, the pool's split, and the
DHCP core answering only its share (two cores side by side, bytes in, bytes out)."""

from __future__ import annotations

import os
from collections import Counter
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from pxed.cluster import Balance, Membership, bucket, pearson
from pxed.dhcp.options import MessageType, OptionCode
from pxed.dhcp.packet import DhcpPacket, build, parse
from pxed.dhcp.server import Source
from pxed.leases import LeaseTable
from pxed.netinfo import InterfaceInfo
from tests.unit.test_dhcp_server import IFACE, NOW, SERVER_IP, make_server

OC = OptionCode


def packet(mac: bytes, mtype: MessageType = MessageType.DISCOVER, **opts: bytes) -> DhcpPacket:
    options = {OC.MESSAGE_TYPE: bytes([mtype]), **{int(k[1:]): v for k, v in opts.items()}}
    return DhcpPacket(op=1, xid=int.from_bytes(os.urandom(4), "big"), chaddr=mac,
                      options=options)  # fmt: skip


def test_pearson_hash_is_rfc_3074s_mixing_of_the_bytes_from_the_last() -> None:
    # Hand-computed from the RFC's table: an empty key hashes to its length, 0; one byte
    # b to T[1 ^ b]: T[1] = 175, T[0] = 251.
    assert pearson(b"") == 0
    assert pearson(b"\x00") == 175
    assert pearson(b"\x01") == 251
    assert pearson(b"\x01\x02") != pearson(b"\x02\x01")


def test_the_client_identifier_decides_else_chaddr() -> None:
    mac = bytes.fromhex("525400000001")
    assert bucket(packet(mac)) == pearson(mac)
    cid = b"\x01" + bytes.fromhex("525400000002")
    assert bucket(packet(mac, o61=cid)) == pearson(cid)


def test_buckets_split_random_clients_evenly_between_two_and_three_servers() -> None:
    macs = [os.urandom(6) for _ in range(6000)]
    for names in (("a", "b"), ("a", "b", "c")):
        balance = Balance("a", names)
        counts = Counter(balance.owner(packet(m)) for m in macs)
        n = len(names)
        assert set(counts) == set(names)
        assert all(abs(c - 6000 / n) < 0.2 * 6000 / n for c in counts.values()), counts


def test_a_server_leaving_moves_its_buckets_only() -> None:
    """Rendezvous hashing: two servers that see a change one heartbeat apart disagree about
    the leaving server's buckets only (with b % n they would about most of them)."""
    three, two = Balance("a", ("a", "b", "c")), Balance("a", ("a", "c"))
    moved = [b for b in range(256) if three.owner_of(b) != two.owner_of(b)]
    assert moved and all(three.owner_of(b) == "b" for b in moved)
    assert {two.owner_of(b) for b in moved} == {"a", "c"}


def test_membership_takeover_joining_and_outage() -> None:
    m = Membership("pxed-a", takeover=10)
    # Before its first heartbeat a server knows nobody, itself included: it answers no
    # DISCOVER (the others may be answering them all).
    assert not m.balance.serves(packet(os.urandom(6)))
    assert m.update([("pxed-a", 0.0), ("pxed-b", 1.0)]) == (["pxed-a", "pxed-b"], [])
    assert m.balance.servers == ("pxed-a", "pxed-b")
    assert m.update([("pxed-a", 0.0), ("pxed-b", 5.0)]) is None
    # b silent beyond the takeover: a takes everything.
    assert m.update([("pxed-a", 0.0), ("pxed-b", 11.0)]) == ([], ["pxed-b"])
    assert m.balance.alone and Membership.share_of(m.balance) is None
    # After the database was away, every row is old: nobody is taken for dead yet.
    m.update([("pxed-a", 0.0), ("pxed-b", 0.5)])
    assert m.update([("pxed-a", 0.0), ("pxed-b", 30.0)], settled=False) is None
    # A server still joining answers nobody's DISCOVER while others are alive...
    c = Membership("pxed-c", takeover=10)
    c.update([("pxed-a", 0.0), ("pxed-c", 0.0)], joining=True)
    assert c.balance.servers == ("pxed-a",)
    assert not c.balance.serves(packet(os.urandom(6)))
    assert Membership.share_of(c.balance) is None
    # ...and takes its share once the others have had time to see its row.
    assert c.update([("pxed-a", 0.0), ("pxed-c", 0.0)]) == (["pxed-c"], [])
    assert Membership.share_of(c.balance) == c.balance.mask()
    # Alone, it serves at once.
    d = Membership("pxed-d", takeover=10)
    d.update([("pxed-d", 0.0)], joining=True)
    assert d.balance.alone and d.balance.serves(packet(os.urandom(6)))


def test_two_tables_offer_disjoint_halves_of_the_pool_and_one_alone_all_of_it() -> None:
    net = IPv4Network("198.19.0.0/24")
    ranges = [(IPv4Address("198.19.0.10"), IPv4Address("198.19.0.49"))]
    a, b = LeaseTable(net, ranges), LeaseTable(net, ranges)
    split = Balance("x", ("x", "y"))
    mask_a = split.mask()
    mask_b = bytes(1 - flag for flag in mask_a)
    a.set_share(mask_a)
    b.set_share(mask_b)
    mine_a = {ranges[0][0] + i for i in range(40) if mask_a[(int(ranges[0][0]) + i) & 255]}
    got_a = {a.offer(bytes([1, i]), "m", None, NOW, 60) for i in range(41)}
    got_b = {b.offer(bytes([2, i]), "m", None, NOW, 60) for i in range(41)}
    assert None in got_a and None in got_b  # each has its share of the 40 addresses
    got_a.discard(None)
    got_b.discard(None)
    assert got_a == mine_a and len(got_a) + len(got_b) == 40 and not got_a & got_b
    # b is taken over: a alone now finds b's half too, though its walk had passed it.
    a.set_share(None)
    more = {a.offer(bytes([3, i]), "m", None, NOW, 60) for i in range(20)}
    assert more == got_b


def test_merge_takes_another_servers_binding_and_forgets_ours() -> None:
    net = IPv4Network("198.19.0.0/24")
    ranges = [(IPv4Address("198.19.0.10"), IPv4Address("198.19.0.19"))]
    a, b = LeaseTable(net, ranges), LeaseTable(net, ranges)
    ip = IPv4Address("198.19.0.10")
    theirs, _ = b.bind(b"\x01b", "m", ip, None, NOW, 3600)
    ours, _ = a.bind(b"\x01a", "m", ip, None, NOW + 1, 3600)
    assert a.merge([theirs]) == 0  # ours is newer: kept (a refusal forces it)
    assert a.by_ip(ip) == ours
    assert a.merge([theirs], force=True) == 1
    assert a.by_ip(ip) == theirs and a.by_client(b"\x01a") is None
    assert not a.available_for(ip, b"\x01a", NOW + 2)


class Pair:
    """Two DHCP cores on one segment, as two servers sharing a database would run."""

    def __init__(self) -> None:
        self.cores = {"pxed-a": make_server(ranges=(("198.19.1.0", "198.19.1.249"),)),
                      "pxed-b": make_server(ranges=(("198.19.1.0", "198.19.1.249"),))}  # fmt: skip
        # Each server on the segment has an address of its own (its server identifier).
        self.cores["pxed-b"].set_interfaces({IFACE: InterfaceInfo(
            IFACE, "02:00:00:00:00:03", (IPv4Interface("198.19.0.3/16"),), 1500)})  # fmt: skip
        servers = tuple(self.cores)
        for name, core in self.cores.items():
            core.balance = Balance(name, servers)
            core.tables[str(next(iter(core.tables)))].set_share(
                Membership.share_of(core.balance)
            )

    def send(self, p: DhcpPacket, source: Source | None = None) -> dict[str, list[DhcpPacket]]:
        src = source or Source(IFACE, IPv4Address(0), 68)
        return {
            name: [parse(r.data) for r in core.receive(build(p), src, NOW).replies]
            for name, core in self.cores.items()
        }


def test_each_discover_gets_one_offer_and_the_servers_share_the_clients() -> None:
    pair = Pair()
    offers: Counter[str] = Counter()
    addresses: list[IPv4Address] = []
    for _ in range(150):
        answers = pair.send(packet(os.urandom(6)))
        (who,) = [name for name, replies in answers.items() if replies]
        offers[who] += 1
        addresses.append(answers[who][0].yiaddr)
    assert offers["pxed-a"] > 40 and offers["pxed-b"] > 40, offers
    # A free address is offered by one server only (its share of the pool): no two
    # clients were offered the same one.
    assert len(set(addresses)) == len(addresses)


def test_requests_go_to_the_named_server_the_addressed_one_or_the_bucket_owner() -> None:
    pair = Pair()
    mac = os.urandom(6)
    answers = pair.send(packet(mac))
    (owner,) = [name for name, replies in answers.items() if replies]
    other = next(name for name in pair.cores if name != owner)
    offer = answers[owner][0]
    # SELECTING names the server (option 54): that one alone, whoever's bucket.
    select = packet(mac, MessageType.REQUEST, o50=offer.yiaddr.packed,
                    o54=offer.options[OC.SERVER_ID])  # fmt: skip
    got = pair.send(select)
    assert [m.message_type for m in got[owner]] == [MessageType.ACK] and got[other] == []
    # RENEWING: unicast from the client to one server's address: that server answers,
    # though the client is the other's (here: the owner died and the client was told of
    # the survivor by nothing but its own retries).
    renew = DhcpPacket(op=1, xid=1, chaddr=mac, ciaddr=offer.yiaddr,
                       options={OC.MESSAGE_TYPE: bytes([MessageType.REQUEST])})  # fmt: skip
    other_ip = SERVER_IP if other == "pxed-a" else IPv4Address("198.19.0.3")
    unicast = Source(IFACE, offer.yiaddr, 68, local=other_ip)
    only_other = {other: pair.cores[other]}
    pair.cores = only_other
    got = pair.send(renew, unicast)
    assert [m.message_type for m in got[other]] == [MessageType.ACK]
    # REBINDING (broadcast): only the bucket owner among the live servers answers.
    pair = Pair()
    pair.send(packet(mac))
    pair.send(select)
    rebind = DhcpPacket(op=1, xid=2, chaddr=mac, ciaddr=offer.yiaddr, flags=0x8000,
                        options={OC.MESSAGE_TYPE: bytes([MessageType.REQUEST])})  # fmt: skip
    got = pair.send(rebind)
    assert [m.message_type for m in got[owner]] == [MessageType.ACK] and got[other] == []


def test_no_offer_while_the_store_is_down_but_a_reserved_host_boots() -> None:
    from pxed.config import HostConfig

    host = HostConfig(mac="52:54:00:00:00:42", ip=IPv4Address("198.19.5.5"))
    core = make_server(hosts=(host,))
    core.store_down = True
    assert core.receive(build(packet(os.urandom(6))), Source(IFACE, IPv4Address(0), 68),
                        NOW).replies == []  # fmt: skip
    mac = bytes.fromhex("525400000042")
    out = core.receive(build(packet(mac)), Source(IFACE, IPv4Address(0), 68), NOW)
    (offer,) = [parse(r.data) for r in out.replies]
    assert offer.yiaddr == host.ip
    req = packet(mac, MessageType.REQUEST, o50=host.ip.packed, o54=SERVER_IP.packed)
    out = core.receive(build(req), Source(IFACE, IPv4Address(0), 68), NOW)
    assert [parse(r.data).message_type for r in out.replies] == [MessageType.ACK]
    assert out.writes == [] and out.background  # stored, but the ACK does not wait
