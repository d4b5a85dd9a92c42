"""Hypothesis over the DHCP codec: hostile bytes raise only MalformedPacket, valid packets
round-trip, and whatever parse() accepts can be rebuilt and reparsed unchanged."""

from __future__ import annotations

import contextlib
import struct
from ipaddress import IPv4Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxed.dhcp.options import decode_options, decode_routes, parse_relay_agent_info
from pxed.dhcp.packet import DhcpPacket, build, parse
from pxed.errors import MalformedPacket

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])

COOKIE = b"\x63\x82\x53\x63"


def header(hlen: int = 6, sname: bytes = b"", file: bytes = b"") -> bytes:
    return struct.pack(
        "!BBBBIHH16s16s64s128s", 1, 1, hlen, 0, 0x1234, 0, 0, bytes(16), b"\x52" * 6, sname, file
    )


def parse_or_malformed(data: bytes) -> DhcpPacket | None:
    """parse(), where the only acceptable failure is MalformedPacket; checks what it accepts."""
    try:
        p = parse(data)
    except MalformedPacket as exc:
        assert str(exc)  # always says why
        return None
    exercise(p)
    return p


def exercise(p: DhcpPacket) -> None:
    """Every property of a parsed packet answers, and the packet rebuilds to itself."""
    for name in (
        "message_type", "mac", "broadcast_flag", "client_id", "requested_ip", "server_id",
        "lease_time", "parameter_request_list", "max_message_size", "client_arch",
        "vendor_class", "user_class", "is_ipxe", "hostname", "relay_agent_info",
    ):  # fmt: skip
        getattr(p, name)
    assert 52 not in p.options and 0 not in p.options and 255 not in p.options
    assert len(p.chaddr) == p.hlen <= 16
    assert parse(build(p, max_size=65535)) == p
    small = build(p)
    assert len(small) <= 548
    kept = parse(small)
    assert all(p.options[code] == value for code, value in kept.options.items())
    for code in (53, 54):
        assert kept.options.get(code) == p.options.get(code)


# --- random bytes -----------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=700))
def test_random_bytes(data: bytes) -> None:
    parse_or_malformed(data)


@FUZZ
@given(st.binary(max_size=400), st.integers(0, 20))
def test_random_options_area(options: bytes, hlen: int) -> None:
    parse_or_malformed(header(hlen) + COOKIE + options)


@FUZZ
@given(st.binary(max_size=64), st.binary(max_size=128), st.integers(0, 5), st.binary(max_size=60))
def test_random_overload_areas(sname: bytes, file: bytes, overload: int, options: bytes) -> None:
    top = b"\x35\x01\x01\x34\x01" + bytes([overload]) + options
    parse_or_malformed(header(6, sname, file) + COOKIE + top)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=8)), max_size=12), st.data())
def test_random_tlv_streams(items: list[tuple[int, bytes]], data: st.DataObject) -> None:
    # Well-framed TLVs with random codes: exercises the per-option rules, not just framing.
    body = b"".join(bytes((c, len(v))) + v if c not in (0, 255) else bytes((c,)) for c, v in items)
    cut = data.draw(st.integers(0, len(body)))
    parse_or_malformed(header() + COOKIE + body[:cut])


@FUZZ
@given(st.binary(max_size=64))
def test_sub_decoders(data: bytes) -> None:
    for decoder in (decode_options, parse_relay_agent_info, decode_routes):
        with contextlib.suppress(MalformedPacket):
            decoder(data)


# --- valid packets ----------------------------------------------------------------------------


def u16s(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


def valid_value(code: int) -> st.SearchStrategy[bytes]:
    """Values parse() accepts for ``code``."""
    if code == 53:
        return st.integers(1, 18).map(lambda v: bytes([v]))
    if code in (50, 51, 54, 58, 59):
        return st.binary(min_size=4, max_size=4)
    if code == 57:
        return st.integers(576, 0xFFFF).map(lambda v: v.to_bytes(2, "big"))
    if code == 61:
        return st.binary(min_size=2, max_size=20)
    if code == 55:
        return st.binary(min_size=1, max_size=40)
    if code == 93:
        return st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=4).map(u16s)
    if code == 82:
        sub = st.tuples(st.integers(0, 255), st.binary(max_size=16))
        return st.lists(sub, min_size=1, max_size=3).map(
            lambda subs: b"".join(bytes((c, len(v))) + v for c, v in subs)
        )
    # Anything else is opaque; long values exercise RFC 3396 splitting.
    return st.one_of(st.binary(max_size=24), st.binary(min_size=250, max_size=600))


option_codes = st.one_of(
    st.sampled_from([53, 54, 50, 51, 57, 58, 59, 61, 55, 93, 82, 12, 43, 60, 77]),
    st.integers(1, 254).filter(lambda c: c != 52),
)
options = st.lists(option_codes, unique=True, max_size=12).flatmap(
    lambda codes: st.tuples(*(valid_value(c) for c in codes)).map(
        lambda values: dict(zip(codes, values, strict=True))
    )
)
addresses = st.integers(0, 2**32 - 1).map(IPv4Address)
no_trailing_nul = st.binary  # trailing NULs are field padding: strip them before comparing


@st.composite
def packets(draw: st.DrawFn) -> DhcpPacket:
    hlen = draw(st.integers(0, 16))
    return DhcpPacket(
        op=draw(st.sampled_from([1, 2])),
        htype=draw(st.integers(0, 255)),
        hlen=hlen,
        hops=draw(st.integers(0, 255)),
        xid=draw(st.integers(0, 2**32 - 1)),
        secs=draw(st.integers(0, 0xFFFF)),
        flags=draw(st.integers(0, 0xFFFF)),
        ciaddr=draw(addresses),
        yiaddr=draw(addresses),
        siaddr=draw(addresses),
        giaddr=draw(addresses),
        chaddr=draw(st.binary(min_size=hlen, max_size=hlen)),
        sname=draw(st.one_of(st.just(b""), st.binary(max_size=64))).rstrip(b"\x00"),
        file=draw(st.one_of(st.just(b""), st.binary(max_size=128))).rstrip(b"\x00"),
        options=draw(options),
    )


@ROUND_TRIP
@given(packets())
def test_valid_packets_round_trip(p: DhcpPacket) -> None:
    data = build(p, max_size=65535)
    assert len(data) >= 300
    q = parse(data)
    assert q == p
    assert list(q.options) == list(p.options)


@ROUND_TRIP
@given(packets(), st.sampled_from([576, 700, 1024, 1500]))
def test_valid_packets_within_budget(p: DhcpPacket, max_size: int) -> None:
    data = build(p, max_size=max_size)
    assert len(data) <= max_size - 28
    q = parse(data)
    kept = [code for code in p.options if code in q.options]
    assert list(q.options) == kept  # order kept, nothing invented
    assert all(q.options[c] == p.options[c] for c in kept)
    for code in (53, 54):
        assert (code in q.options) == (code in p.options)
    if len(kept) == len(p.options):
        assert q == p


# --- mutated valid packets --------------------------------------------------------------------

Mutation = tuple[str, int, int | bytes]  # kind, position, argument

mutation: st.SearchStrategy[Mutation] = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 8)),
)


def mutate(data: bytes, steps: list[Mutation], floor: int = 0) -> bytes:
    """Apply ``steps`` at positions at or past ``floor`` (240: the options area only)."""
    buf = bytearray(data)
    for kind, where, arg in steps:
        floor = min(floor, len(buf))
        pos = floor + where % (len(buf) - floor + 1)
        if isinstance(arg, bytes):
            buf[pos:pos] = arg  # insert
        elif kind == "flip" and pos < len(buf):
            buf[pos] ^= 1 << arg
        elif kind == "set" and pos < len(buf):
            buf[pos] = arg
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "delete":
            del buf[pos : pos + arg]
    return bytes(buf)


@FUZZ
@given(
    packets(),
    st.lists(mutation, min_size=1, max_size=5),
    st.booleans(),
    st.sampled_from([0, 240]),
)
def test_mutated_packets(
    p: DhcpPacket, steps: list[Mutation], small: bool, floor: int
) -> None:
    # A small budget makes overloaded packets to mutate; floor 240 keeps the header intact
    # so that most mutations reach the option rules instead of the cookie check.
    data = build(p) if small else build(p, max_size=65535)
    parse_or_malformed(mutate(data, steps, floor))


@FUZZ
@given(st.lists(mutation, min_size=1, max_size=3))
def test_mutated_overloaded_packet(steps: list[Mutation]) -> None:
    # 9 options fill the options field, 3 the file, 1 the sname.
    opts = {53: b"\x05", 54: bytes(4)} | {c: bytes([c]) * 30 for c in range(200, 213)}
    data = build(DhcpPacket(op=2, chaddr=bytes(6), options=opts))
    assert parse(data).options == opts  # the seed really is valid...
    assert decode_options(data[240:])[52] == b"\x03"  # ...and overloaded
    parse_or_malformed(mutate(data, steps))
