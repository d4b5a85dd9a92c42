"""One transfer's state machine against an in-memory client: options, windows, loss, rollover.

The client here is a faithful RFC 1350 / RFC 7440 receiver; the two ends exchange bytes through
a "network" that can drop datagrams, and time is simulated (no sleeps, no sockets).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxed.errors import MalformedPacket
from pxed.tftp import packet as tp
from pxed.tftp.transfer import Burst, Outcome, Settings, State, Transfer, negotiate


@dataclass
class MemFile:
    content: bytes
    name: str = "file.bin"
    closed: int = 0

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def data(self) -> memoryview:
        return memoryview(self.content)

    def close(self) -> None:
        self.closed += 1


def rrq(**options: object) -> tp.ReadRequest:
    return tp.ReadRequest("file.bin", "octet", tuple((k, str(v)) for k, v in options.items()))


def make(content: bytes, settings_: Settings | None = None, **options: object) -> Transfer:
    return Transfer(
        ("198.18.0.2", 5000), rrq(**options), MemFile(content), settings_ or Settings(), 0.0
    )


def flat(burst: Burst) -> list[bytes]:
    return [b"".join(bytes(b) for b in dgram) for dgram in burst]


@dataclass
class Client:
    """An RFC 7440 receiver: ACK at the end of each window, on a gap, and on the last block."""

    windowsize: int = 1
    blksize: int = 512
    received: bytearray = field(default_factory=bytearray)
    expected: int = 1
    in_window: int = 0
    done: bool = False
    oack: dict[str, str] | None = None
    acks: int = 0

    def feed(self, datagram: bytes) -> list[bytes]:
        pkt = tp.decode(datagram)
        if isinstance(pkt, tp.OptionAck):
            self.oack = dict(pkt.options)
            if "blksize" in self.oack:
                self.blksize = int(self.oack["blksize"])
            if "windowsize" in self.oack:
                self.windowsize = int(self.oack["windowsize"])
            return [self.ack(0)]
        assert isinstance(pkt, tp.Data), pkt
        if self.done:
            return [self.ack(self.expected - 1)]
        if pkt.block != self.expected & 0xFFFF:
            # A gap or a duplicate: ACK the last block received in order (RFC 7440 §4).
            self.in_window = 0
            return [self.ack(self.expected - 1)]
        assert len(pkt.payload) <= self.blksize
        self.received += pkt.payload
        self.expected += 1
        self.in_window += 1
        if len(pkt.payload) < self.blksize:
            self.done = True
            return [self.ack(self.expected - 1)]
        if self.in_window >= self.windowsize:
            self.in_window = 0
            return [self.ack(self.expected - 1)]
        return []

    def ack(self, block: int) -> bytes:
        self.acks += 1
        return tp.encode_ack(block)


def run(
    transfer: Transfer,
    client: Client,
    *,
    loss: float = 0.0,
    seed: int = 1,
    mtu: int | None = None,
    rtt: float = 0.001,
    max_rounds: int = 2_000_000,
) -> float:
    """Drive both ends until the transfer finishes; returns the simulated time taken."""
    rng = random.Random(seed)
    now = 0.0
    to_client = flat(transfer.start(now, mtu))
    rounds = 0
    while not transfer.finished:
        rounds += 1
        assert rounds < max_rounds
        to_server: list[bytes] = []
        for datagram in to_client:
            if rng.random() >= loss:
                to_server += client.feed(datagram)
        now += rtt
        to_client = []
        for datagram in to_server:
            if rng.random() >= loss:
                to_client += flat(transfer.receive(datagram, now))
        if not to_client and not transfer.finished:
            deadline = transfer.next_timer()
            assert deadline is not None
            now = max(now, deadline)
            to_client = flat(transfer.on_timer(now))
    return now


def pattern(size: int) -> bytes:
    return bytes((i * 7 + i // 251) & 0xFF for i in range(size))


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 1024, 5000])
def test_plain_rfc1350_without_options(size: int) -> None:
    content = pattern(size)
    t = make(content)
    first = flat(t.start(0.0))
    assert len(first) == 1 and first[0][:4] == b"\x00\x03\x00\x01"  # DATA 1, no OACK
    assert t.state is State.SENDING
    t2 = make(content)
    client = Client()
    run(t2, client)
    assert bytes(client.received) == content
    assert t2.state is State.DONE and t2.outcome == "ok"
    assert t2.blocks == size // 512 + 1  # an exact multiple ends with an empty block
    assert t2.retransmissions == 0


def test_oack_values() -> None:
    t = make(b"x" * 3000, blksize=1468, tsize=0, timeout=3, windowsize=16, foo="bar")
    burst = flat(t.start(0.0, mtu=1500))
    assert len(burst) == 1
    oack = tp.decode(burst[0])
    assert oack == tp.OptionAck(
        (("blksize", "1468"), ("tsize", "3000"), ("timeout", "3"), ("windowsize", "16"))
    )
    assert t.state is State.OACK_SENT
    # ACK 0 starts the data: one window of 3 blocks (the file is shorter than the window).
    data = flat(t.receive(tp.encode_ack(0), 0.001))
    assert [d[:4] for d in data] == [b"\x00\x03\x00\x01", b"\x00\x03\x00\x02", b"\x00\x03\x00\x03"]
    assert [len(d) for d in data] == [1472, 1472, 4 + 3000 - 2 * 1468]


def test_blksize_capped_by_mtu_config_and_request() -> None:
    t = make(b"", blksize=65464)
    assert tp.decode(flat(t.start(0.0, mtu=1500))[0]) == tp.OptionAck((("blksize", "1468"),))
    t = make(b"", blksize=65464)
    t.start(0.0, mtu=9000)
    assert t.blksize == 8968
    t = make(b"", blksize=1024)
    t.start(0.0, mtu=1500)
    assert t.blksize == 1024  # never more than asked
    t = make(b"", Settings(max_blksize=1400), blksize=1468)
    t.start(0.0, mtu=1500)
    assert t.blksize == 1400
    t = make(b"", blksize=8)
    t.start(0.0, mtu=65536)
    assert t.blksize == 8


def test_windowsize_capped() -> None:
    t = make(b"", Settings(max_windowsize=8), windowsize=64)
    t.start(0.0)
    assert t.windowsize == 8
    t = make(b"", windowsize=4)
    t.start(0.0)
    assert t.windowsize == 4
    # A window never outgrows a client's default receive buffer.
    t = make(b"", blksize=65464, windowsize=64)
    t.start(0.0, mtu=65536)
    assert t.windowsize * t.blksize <= 256 * 1024


def test_only_unknown_options_means_plain_transfer() -> None:
    t = make(b"abc", foo="1", multicast="")
    first = flat(t.start(0.0))
    assert first == [b"\x00\x03\x00\x01abc"]


def test_tsize_only() -> None:
    t = make(b"abc", tsize=0)
    assert tp.decode(flat(t.start(0.0))[0]) == tp.OptionAck((("tsize", "3"),))


def test_tsize_left_out_for_an_empty_file() -> None:
    # curl refuses "tsize 0" in an OACK: an empty file answers without it.
    t = make(b"", tsize=0, blksize=1468)
    assert tp.decode(flat(t.start(0.0, 1500))[0]) == tp.OptionAck((("blksize", "1468"),))
    t = make(b"", tsize=0)
    assert flat(t.start(0.0)) == [b"\x00\x03\x00\x01"]  # nothing left to agree: plain DATA


@pytest.mark.parametrize("windowsize", [1, 2, 16, 64])
@pytest.mark.parametrize("blksize", [512, 1468])
def test_windowed_transfer_intact(windowsize: int, blksize: int) -> None:
    content = pattern(blksize * 100 + 17)
    t = make(content, blksize=blksize, windowsize=windowsize)
    client = Client()
    run(t, client, mtu=1500)
    assert bytes(client.received) == content
    assert t.outcome == "ok" and t.retransmissions == 0


@pytest.mark.parametrize("windowsize", [1, 64])
def test_block_numbers_roll_over(windowsize: int) -> None:
    # 70 000 blocks of 8 octets: past 65535 and back through 0.
    content = pattern(8 * 70_000 + 3)
    t = make(content, blksize=8, windowsize=windowsize)
    client = Client()
    run(t, client)
    assert t.blocks == 70_001
    assert bytes(client.received) == content


@pytest.mark.parametrize("windowsize", [1, 4, 16])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loss_both_ways(windowsize: int, seed: int) -> None:
    content = pattern(512 * 300 + 5)
    t = make(content, windowsize=windowsize, tsize=0)
    client = Client()
    run(t, client, loss=0.1, seed=seed)
    assert bytes(client.received) == content
    assert t.retransmissions > 0
    assert t.outcome == "ok"


def test_loss_with_rollover() -> None:
    content = pattern(8 * 66_000)
    t = make(content, blksize=8, windowsize=8)
    client = Client()
    run(t, client, loss=0.02, seed=5)
    assert bytes(client.received) == content


def test_duplicate_and_late_acks_never_resend() -> None:
    content = pattern(512 * 10)
    t = make(content)
    t.start(0.0)
    assert flat(t.receive(tp.encode_ack(1), 0.01))[0][:4] == b"\x00\x03\x00\x02"
    # Sorcerer's Apprentice: the same ACK again, an older one, one for a block never sent.
    assert t.receive(tp.encode_ack(1), 0.02) == []
    assert t.receive(tp.encode_ack(0), 0.03) == []
    assert t.receive(tp.encode_ack(7), 0.04) == []
    assert t.duplicates == 3
    assert flat(t.receive(tp.encode_ack(2), 0.05))[0][:4] == b"\x00\x03\x00\x03"


def test_partial_ack_restarts_window_after_it() -> None:
    content = pattern(512 * 40)
    t = make(content, windowsize=8)
    t.start(0.0)
    window = flat(t.receive(tp.encode_ack(0), 0.001))
    assert len(window) == 8
    # The client got 1..3 then a gap: it ACKs 3, the server sends 4..11.
    again = flat(t.receive(tp.encode_ack(3), 0.002))
    assert [int.from_bytes(d[2:4], "big") for d in again] == list(range(4, 12))
    # A late ACK from before (block 2) changes nothing.
    assert t.receive(tp.encode_ack(2), 0.003) == []


def test_timeout_resumes_from_last_ack_with_backoff() -> None:
    content = pattern(512 * 40)
    t = make(content, Settings(default_timeout=1.0, retries=2, min_rto=0.02), windowsize=4)
    t.start(0.0)
    t.receive(tp.encode_ack(0), 0.01)  # first RTT sample: 10 ms
    t.receive(tp.encode_ack(4), 0.02)  # window 1..4 acknowledged, 5..8 sent
    deadlines = []
    now = 0.02
    blocks_sent: list[list[int]] = []
    while not t.finished:
        deadline = t.next_timer()
        assert deadline is not None
        assert t.on_timer(deadline - 1e-6) == []  # not yet
        deadlines.append(round(deadline - now, 4))
        now = deadline
        burst = flat(t.on_timer(now))
        if burst:
            blocks_sent.append([int.from_bytes(d[2:4], "big") for d in burst])
    # Every retransmission starts again after the last ACK (block 4).
    assert all(blocks == [5, 6, 7, 8] for blocks in blocks_sent)
    # The waits double (adaptive start, capped at 4x the timeout), then the transfer gives up.
    assert deadlines == sorted(deadlines)
    assert deadlines[0] < 1.0
    assert max(deadlines) <= 4.0
    assert t.outcome == "timeout" and t.state is State.FAILED
    assert t.retransmissions == 4 * len(blocks_sent)
    assert t.next_timer() is None


def test_negotiated_timeout_caps_the_wait() -> None:
    t = make(b"x" * 2000, Settings(retries=1), timeout=2)
    t.start(0.0)
    waits = []
    now = 0.0
    while not t.finished:
        deadline = t.next_timer()
        assert deadline is not None
        waits.append(deadline - now)
        now = deadline
        t.on_timer(now)
    assert max(waits) == pytest.approx(2.0)


def test_oack_is_retransmitted_then_given_up() -> None:
    t = make(b"abc", Settings(retries=1), blksize=1024)
    t.start(0.0)
    now = 0.0
    sent = 0
    while not t.finished:
        deadline = t.next_timer()
        assert deadline is not None
        now = deadline
        burst = flat(t.on_timer(now))
        if burst:
            assert tp.decode(burst[0]) == tp.OptionAck((("blksize", "1024"),))
            sent += 1
    assert sent == 1 and t.outcome == "timeout"  # retries=1: one retransmission


def test_client_error_ends_transfer() -> None:
    t = make(b"x" * 5000, tsize=0)
    t.start(0.0)
    # Firmware asks tsize only, then aborts with ERROR 8 after reading the OACK.
    assert t.receive(tp.encode_error(8, "got tsize"), 0.1) == []
    assert t.finished and t.outcome == "declined"  # logged as tftp.declined, at info
    assert t.client_error == (8, "got tsize")
    assert t.receive(tp.encode_ack(0), 0.2) == []


@pytest.mark.parametrize("code", [0, 1, 8])
def test_an_error_other_than_8_to_the_oack_or_any_during_data_is_a_client_error(
    code: int,
) -> None:
    t = make(b"x" * 5000, tsize=0)
    t.start(0.0)
    if code == 8:  # 8 once data flows is not declining options any more
        t.receive(tp.encode_ack(0), 0.1)
    t.receive(tp.encode_error(code, "stop"), 0.2)
    assert t.finished and t.outcome == "client-error"


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"\x00",
        b"\x00\x04",
        b"\x00\x04\x00",
        b"\x00\x05\x00",
        b"\x00\x03\x00\x01data",
        b"\x00\x01f\x00octet\x00",
        b"\xff\xff\xff\xff",
        b"\x00\x06tsize\x001\x00",
    ],
)
def test_junk_is_ignored_and_transfer_goes_on(junk: bytes) -> None:
    content = pattern(2000)
    t = make(content)
    t.start(0.0)
    assert t.receive(junk, 0.001) == []
    assert not t.finished
    client = Client()
    client.feed(b"\x00\x03\x00\x01" + content[:512])
    assert flat(t.receive(tp.encode_ack(1), 0.002))[0][:4] == b"\x00\x03\x00\x02"


def test_abort_returns_error_once() -> None:
    t = make(b"abc")
    t.start(0.0)
    assert flat(t.abort(0, "server shutting down", 1.0, Outcome.SHUTDOWN)) == [
        tp.encode_error(0, "server shutting down")
    ]
    assert t.outcome == "shutdown"
    assert t.abort(0, "again", 2.0) == []


def test_summary_fields() -> None:
    t = make(pattern(1000), blksize=600)
    client = Client()
    run(t, client)
    s = t.summary()
    for key in (
        "client",
        "file",
        "bytes",
        "blksize",
        "windowsize",
        "seconds",
        "retransmissions",
        "outcome",
    ):
        assert key in s
    assert s["bytes"] == 1000 and s["blksize"] == 600 and s["outcome"] == "ok"


def test_rto_adapts_to_round_trip() -> None:
    t = make(pattern(512 * 200), Settings(min_rto=0.001))
    client = Client()
    run(t, client, rtt=0.005)
    assert 0.005 <= t.rto < 0.05


_datagrams = st.one_of(
    st.binary(max_size=40),
    st.integers(0, 0xFFFF).map(tp.encode_ack),
    st.builds(tp.encode_error, st.integers(0, 0xFFFF), st.text(max_size=5)),
)


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(0, 5000),
    blksize=st.sampled_from([8, 9, 512, 1468]),
    windowsize=st.integers(1, 8),
    steps=st.lists(
        st.tuples(st.booleans(), st.floats(0, 3, allow_nan=False), _datagrams), max_size=60
    ),
)
def test_random_input_never_breaks_invariants(
    size: int, blksize: int, windowsize: int, steps: list[tuple[bool, float, bytes]]
) -> None:
    t = make(pattern(size), Settings(retries=2), blksize=blksize, windowsize=windowsize)
    now = 0.0
    t.start(now, 1500)
    acked = 0
    for is_timer, dt, datagram in steps:
        now += dt
        burst = t.on_timer(now) if is_timer else t.receive(datagram, now)
        blocks = [int.from_bytes(bytes(d[0][2:4]), "big") for d in burst if len(d) == 2]
        # Nothing already acknowledged is ever sent again.
        for wire in blocks:
            absolute = t.acked_blocks + ((wire - t.acked_blocks) & 0xFFFF)
            assert absolute > t.acked_blocks
        assert t.acked_blocks >= acked
        acked = t.acked_blocks
        if t.finished:
            assert t.next_timer() is None
            break
        assert t.next_timer() is not None


def test_tsize_beyond_64_bits_is_refused() -> None:
    ok = tp.ReadRequest("f", "octet", (("tsize", str(2**64 - 1)),))
    assert negotiate(ok).tsize
    with pytest.raises(MalformedPacket):
        negotiate(tp.ReadRequest("f", "octet", (("tsize", str(2**64)),)))


def test_each_outcome_carries_its_event_and_level() -> None:
    assert (Outcome.OK.event, Outcome.OK.level) == ("tftp.done", logging.INFO)
    assert (Outcome.DECLINED.event, Outcome.DECLINED.level) == ("tftp.declined", logging.INFO)
    for failed in set(Outcome) - {Outcome.OK, Outcome.DECLINED}:
        assert (failed.event, failed.level) == ("tftp.failed", logging.WARNING)
    assert Outcome.CLIENT_ERROR == "client-error"  # the value is what the log line says
