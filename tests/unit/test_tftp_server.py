"""The TFTP server core: requests to transfers, refusals, limits, timers; hostile input."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxed.config import TftpConfig
from pxed.files import FileRefused, FileStore, Refusal
from pxed.tftp import packet as tp
from pxed.tftp.packet import ErrorCode
from pxed.tftp.server import Accepted, Duplicate, RefusalReason, Refused, TftpServer
from pxed.tftp.transfer import Outcome

CLIENT = ("198.18.0.2", 40000)


@dataclass
class MemFile:
    name: str
    content: bytes
    closed: int = 0

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def data(self) -> memoryview:
        return memoryview(self.content)

    def close(self) -> None:
        self.closed += 1


class MemFiles:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.opened: list[MemFile] = []
        self.unders: list[str | None] = []

    def open(self, name: str, *, netascii: bool = False, under: str | None = None) -> MemFile:
        self.unders.append(under)
        if name not in self.files:
            raise FileRefused("file not found", Refusal.NOT_FOUND)
        f = MemFile(name, self.files[name])
        self.opened.append(f)
        return f


def rrq(name: str = "pxelinux.0", *opts: str, mode: str = "octet") -> bytes:
    return b"\x00\x01" + b"\x00".join(x.encode() for x in (name, mode, *opts)) + b"\x00"


def server(**cfg: object) -> tuple[TftpServer, MemFiles]:
    files = MemFiles({"pxelinux.0": b"P" * 2000, "empty": b""})
    return TftpServer(TftpConfig(**cfg), files), files  # type: ignore[arg-type]


def error_of(decision: object) -> tuple[int, str]:
    assert isinstance(decision, Refused), decision
    assert decision.reply is not None
    pkt = tp.decode(decision.reply)
    assert isinstance(pkt, tp.Error)
    return pkt.code, pkt.message


def test_rrq_accepted_and_finished() -> None:
    srv, files = server()
    d = srv.request(rrq(), CLIENT, 0.0)
    assert isinstance(d, Accepted) and d.replaced is None
    t = d.transfer
    assert srv.stats().active == 1
    assert b"".join(bytes(b) for b in t.start(0.0)[0])[:4] == b"\x00\x03\x00\x01"
    t.receive(tp.encode_ack(1), 0.01)
    t.receive(tp.encode_ack(2), 0.02)
    t.receive(tp.encode_ack(3), 0.03)
    t.receive(tp.encode_ack(4), 0.04)
    assert t.finished and t.outcome == "ok"
    srv.finish(t)
    srv.finish(t)
    assert srv.stats().active == 0 and srv.stats().done == 1
    assert files.opened[0].closed == 1


def test_file_not_found_is_error_1() -> None:
    srv, _ = server()
    assert error_of(srv.request(rrq("nope"), CLIENT, 0.0))[0] == ErrorCode.FILE_NOT_FOUND


def test_wrq_refused_read_only() -> None:
    srv, _ = server()
    assert error_of(srv.request(b"\x00\x02up\x00octet\x00", CLIENT, 0.0))[0] == 2
    assert error_of(srv.request(b"\x00\x02", CLIENT, 0.0))[0] == 2


def test_data_or_ack_to_the_server_port_is_unknown_tid() -> None:
    srv, _ = server()
    assert error_of(srv.request(tp.encode_ack(1), CLIENT, 0.0))[0] == ErrorCode.UNKNOWN_TID
    assert error_of(srv.request(b"\x00\x03\x00\x01x", CLIENT, 0.0))[0] == ErrorCode.UNKNOWN_TID


def test_error_is_never_answered() -> None:
    srv, _ = server()
    for raw in (tp.encode_error(0, "x"), b"\x00\x05\x00"):
        d = srv.request(raw, CLIENT, 0.0)
        assert isinstance(d, Refused) and d.reply is None


def test_retransmitted_rrq_is_a_duplicate_and_a_new_one_replaces() -> None:
    srv, files = server()
    first = srv.request(rrq(), CLIENT, 0.0)
    assert isinstance(first, Accepted)
    dup = srv.request(rrq(), CLIENT, 0.5)
    assert isinstance(dup, Duplicate) and dup.transfer is first.transfer
    # Same port, other request (firmware asked tsize first, now the real transfer).
    second = srv.request(rrq("pxelinux.0", "blksize", "1468"), CLIENT, 1.0)
    assert isinstance(second, Accepted) and second.replaced is first.transfer
    assert first.transfer.finished and first.transfer.outcome == "replaced"
    assert files.opened[0].closed == 1
    assert srv.stats().active == 1


def test_limits_answer_with_an_error() -> None:
    srv, _ = server(max_transfers=3, max_transfers_per_client=2)
    accepted = [srv.request(rrq(), ("198.18.0.2", p), 0.0) for p in (1, 2)]
    assert all(isinstance(d, Accepted) for d in accepted)
    code, message = error_of(srv.request(rrq(), ("198.18.0.2", 3), 0.0))
    assert code == ErrorCode.NOT_DEFINED and "too many" in message
    assert isinstance(srv.request(rrq(), ("198.18.0.3", 1), 0.0), Accepted)
    code, message = error_of(srv.request(rrq(), ("198.18.0.4", 1), 0.0))
    assert "busy" in message
    # One finishes: room again.
    t = accepted[0]
    assert isinstance(t, Accepted)
    t.transfer.fail(Outcome.TIMEOUT, "x", 1.0)
    srv.finish(t.transfer)
    assert isinstance(srv.request(rrq(), ("198.18.0.4", 1), 1.0), Accepted)


def test_flood_of_rrqs_beyond_the_limit() -> None:
    srv, _ = server(max_transfers=10, max_transfers_per_client=1000)
    decisions = [srv.request(rrq(), ("198.18.0.9", p), 0.0) for p in range(1000, 2000)]
    assert sum(isinstance(d, Accepted) for d in decisions) == 10
    refused = [d for d in decisions if isinstance(d, Refused)]
    assert len(refused) == 990 and all(d.reply for d in refused)
    assert srv.stats().refused == 990


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", 4),
        (b"\x00", 4),
        (b"\x00\x01", 4),
        (b"\x00\x01x", 4),
        (b"\x00\x04", 4),
        (b"\x00\x04\x00", 4),  # ACK without block number
        (b"\x00\x01file-without-nul", 4),
        (b"\x00\x01file\x00octet", 4),
        (b"\x00\x01" + b"f" * 520 + b"\x00octet\x00", 4),
        (rrq("pxelinux.0", "blksize"), 8),
        (rrq("pxelinux.0", "blksize", "512", "blksize", "1024"), 8),
        (rrq("pxelinux.0", "blksize", "0"), 8),
        (rrq("pxelinux.0", "blksize", "7"), 8),
        (rrq("pxelinux.0", "blksize", "65465"), 8),
        (rrq("pxelinux.0", "blksize", "abc"), 8),
        (rrq("pxelinux.0", "windowsize", "0"), 8),
        (rrq("pxelinux.0", "windowsize", "65536"), 8),
        (rrq("pxelinux.0", "timeout", "0"), 8),
        (rrq("pxelinux.0", "timeout", "256"), 8),
        (rrq("pxelinux.0", "tsize", "-1"), 8),
        (rrq("pxelinux.0", mode="mail"), 4),
    ],
)
def test_hostile_requests_get_an_error(raw: bytes, code: int) -> None:
    srv, files = server()
    assert error_of(srv.request(raw, CLIENT, 0.0))[0] == code
    assert srv.stats().active == 0 and files.opened == []
    # ... and the server keeps serving.
    assert isinstance(srv.request(rrq(), ("198.18.0.7", 1), 0.0), Accepted)


def test_timers_run_due_transfers_only() -> None:
    srv, _ = server(retries=1)
    a = srv.request(rrq(), ("198.18.0.2", 1), 0.0)
    b = srv.request(rrq(), ("198.18.0.3", 1), 0.5)
    assert isinstance(a, Accepted) and isinstance(b, Accepted)
    a.transfer.start(0.0)
    b.transfer.start(0.5)
    assert srv.next_timer() == pytest.approx(1.0)
    out = srv.on_timer(1.0)
    assert [t for t, _ in out] == [a.transfer]
    # Idle transfers are reaped: keep firing timers until both gave up.
    now = 1.0
    while srv.transfers:
        nxt = srv.next_timer()
        assert nxt is not None
        now = nxt
        for t, _ in srv.on_timer(now):
            if t.finished:
                srv.finish(t)
    assert srv.stats().failed == 2 and now < 30


def test_close_all_sends_errors() -> None:
    srv, _ = server()
    d = srv.request(rrq(), CLIENT, 0.0)
    assert isinstance(d, Accepted)
    d.transfer.start(0.0)
    out = srv.close_all(1.0)
    assert len(out) == 1
    t, burst = out[0]
    assert tp.decode(bytes(burst[0][0])) == tp.Error(0, "server shutting down")
    assert t.outcome == "shutdown"


def test_with_a_real_file_store(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    srv = TftpServer(TftpConfig(root=tmp_path), FileStore(tmp_path))
    d = srv.request(rrq("/f"), CLIENT, 0.0)
    assert isinstance(d, Accepted)
    assert error_of(srv.request(rrq("../etc/passwd"), ("198.18.0.5", 1), 0.0))[0] == 2


_packets = st.one_of(
    st.binary(max_size=60),
    st.builds(
        lambda name, opts: rrq(name, *opts),
        st.sampled_from(["pxelinux.0", "empty", "nope", "../x"]),
        st.lists(
            st.sampled_from(
                [
                    "blksize",
                    "tsize",
                    "windowsize",
                    "timeout",
                    "0",
                    "8",
                    "512",
                    "1468",
                    "65464",
                    "abc",
                    "64",
                    "x",
                ]
            ),
            max_size=6,
        ),
    ),
    st.integers(0, 6).map(tp.encode_ack),
    st.just(tp.encode_error(0, "bye")),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.sampled_from([1, 2, 3]),
            _packets,
            st.floats(0, 2, allow_nan=False),
        ),
        max_size=40,
    )
)
def test_random_datagrams_never_raise(steps: list[tuple[int, int, bytes, float]]) -> None:
    """Random packets from a few peers, routed as the glue does: no exception escapes."""
    srv, files = server(max_transfers=3, max_transfers_per_client=2)
    now = 0.0
    for kind, port, raw, dt in steps:
        now += dt
        client = ("198.18.0.2", port)
        if kind == 0:
            for t, _ in srv.on_timer(now):
                if t.finished:
                    srv.finish(t)
            continue
        running = srv.transfers.get(client)
        if running is not None and kind == 1:
            running.receive(raw, now)
            if running.finished:
                srv.finish(running)
            continue
        d = srv.request(raw, client, now)
        if isinstance(d, Accepted):
            d.transfer.start(now, 1500)
        elif isinstance(d, Refused) and d.reply is not None:
            assert isinstance(tp.decode(d.reply), tp.Error)
        assert srv.stats().active <= 3
    for t, _ in srv.close_all(now):
        srv.finish(t)
    assert srv.stats().active == 0
    assert all(f.closed == 1 for f in files.opened)


@pytest.mark.parametrize(
    ("per_client", "mac", "under"),
    [
        (None, "52:54:00:AB:CD:EF", None),
        ("ip", None, "198.18.0.7"),
        ("mac", "52:54:00:AB:CD:EF", "52-54-00-ab-cd-ef"),
        ("mac", None, None),  # MAC unknown: the shared files only
    ],
)
def test_per_client_directory(per_client: str | None, mac: str | None, under: str | None) -> None:
    files = MemFiles({"pxelinux.0": b"P"})
    asked: list[str] = []

    def lookup(ip: str) -> str | None:
        asked.append(ip)
        return mac

    srv = TftpServer(TftpConfig(per_client=per_client), files, mac_lookup=lookup)  # type: ignore[arg-type]
    decision = srv.request(rrq(), ("198.18.0.7", 2000), 0.0)
    assert isinstance(decision, Accepted)
    assert files.unders == [under]
    assert asked == (["198.18.0.7"] if per_client == "mac" else [])


def test_a_stranger_on_a_transfers_port_gets_error_5_unless_it_sent_an_error(
    tmp_path: Path,
) -> None:
    core = TftpServer(TftpConfig(root=tmp_path), FileStore(tmp_path))
    reply = core.stranger(tp.encode_ack(1))
    assert reply is not None
    assert tp.decode(reply) == tp.Error(ErrorCode.UNKNOWN_TID, "unknown transfer ID")
    assert core.stranger(tp.encode_error(ErrorCode.NOT_DEFINED, "x")) is None
    assert core.stranger(b"\x00") is not None  # too short to be an ERROR: answered


def test_on_the_shared_port_only_an_rrq_is_a_new_request_from_a_running_client() -> None:
    srv, _ = server(single_port=True)
    first = srv.request(rrq(), CLIENT, 0.0)
    assert isinstance(first, Accepted)
    # An RRQ from the transfer's own client is a request again (duplicate or replacement).
    assert srv.is_new_request(rrq())
    assert srv.is_new_request(rrq("pxelinux.0", "blksize", "1468"))
    assert isinstance(srv.request(rrq(), CLIENT, 0.1), Duplicate)
    # Everything else belongs to the running transfer, a WRQ and a broken packet included.
    for raw in (
        tp.encode_ack(1),
        tp.encode_error(ErrorCode.NOT_DEFINED, "x"),
        b"\x00\x02f\x00octet\x00",
        b"\x00",
        b"",
        b"\x01\x01",
    ):
        assert not srv.is_new_request(raw), raw


def test_a_transfer_the_glue_cannot_start_ends_and_the_client_hears_server_busy() -> None:
    srv, files = server()
    accepted = srv.request(rrq(), CLIENT, 0.0)
    assert isinstance(accepted, Accepted)
    refused = srv.cannot_serve(accepted.transfer, "no socket: Too many open files", 0.1)
    assert error_of(refused) == (ErrorCode.NOT_DEFINED, "server busy")
    assert refused.event == "tftp.refused" and refused.level == logging.WARNING
    assert refused.reason == "no socket: Too many open files"
    assert refused.filename == "pxelinux.0"
    transfer = accepted.transfer
    assert transfer.finished and transfer.outcome == Outcome.ERROR
    assert files.opened[0].closed == 1
    stats = srv.stats()
    assert (stats.active, stats.started, stats.failed, stats.refused) == (0, 1, 1, 0)


def test_reconfigure_serves_new_requests_by_the_new_settings_and_keeps_running_ones() -> None:
    """A reload: the running transfer keeps its file and settings; the next request is
    served from the new root with the new limits."""
    core, old_files = server(max_transfers=5)
    running = core.request(rrq(), CLIENT, 0.0)
    assert isinstance(running, Accepted)
    new_files = MemFiles({"b": b"new"})
    core.reconfigure(TftpConfig(max_transfers=1, max_blksize=1024), new_files)
    assert core.transfers[CLIENT] is running.transfer
    assert running.transfer.file is old_files.opened[0]
    refused = core.request(rrq("b"), ("198.18.0.3", 1), 0.0)
    assert isinstance(refused, Refused) and "server busy" in refused.reason
    core.finish(running.transfer)
    accepted = core.request(rrq("b", "blksize", "8192"), ("198.18.0.3", 1), 0.0)
    assert isinstance(accepted, Accepted) and accepted.transfer.file is new_files.opened[0]
    assert core.settings.max_blksize == 1024


def test_refuse_new_turns_requests_away_while_transfers_go_on() -> None:
    core, _ = server()
    running = core.request(rrq(), CLIENT, 0.0)
    assert isinstance(running, Accepted)
    core.refuse_new("server shutting down")
    # A retransmitted request of the running transfer is still its duplicate.
    assert isinstance(core.request(rrq(), CLIENT, 0.1), Duplicate)
    refused = core.request(rrq(), ("198.18.0.3", 1), 0.1)
    assert isinstance(refused, Refused) and refused.code == ErrorCode.NOT_DEFINED
    assert refused.reason == "server shutting down" and refused.reply is not None
    assert core.transfers[CLIENT] is running.transfer


def cause_of(decision: object) -> RefusalReason:
    assert isinstance(decision, Refused), decision
    return decision.cause


def test_every_refusal_names_its_cause(tmp_path: Path) -> None:
    """The metrics' label: a closed set, each refusal under the one that says why."""
    srv, _ = server(max_transfers=2, max_transfers_per_client=1)
    assert cause_of(srv.request(rrq("nope"), CLIENT, 0.0)) is RefusalReason.NOT_FOUND
    assert cause_of(srv.request(b"\x00\x02up\x00octet\x00", CLIENT, 0.0)) is RefusalReason.READ_ONLY
    assert cause_of(srv.request(tp.encode_ack(1), CLIENT, 0.0)) is RefusalReason.MALFORMED
    assert cause_of(srv.request(tp.encode_error(0, "x"), CLIENT, 0.0)) is RefusalReason.MALFORMED
    bad = rrq("pxelinux.0", "blksize", "7")  # below RFC 2348's 8
    assert cause_of(srv.request(bad, CLIENT, 0.0)) is RefusalReason.BAD_REQUEST
    first = srv.request(rrq(), CLIENT, 0.0)
    assert isinstance(first, Accepted)
    other_port = (CLIENT[0], CLIENT[1] + 1)
    assert cause_of(srv.request(rrq(), other_port, 0.0)) is RefusalReason.CLIENT_LIMIT
    assert isinstance(srv.request(rrq(), ("198.18.0.3", 1), 0.0), Accepted)
    assert cause_of(srv.request(rrq(), ("198.18.0.4", 1), 0.0)) is RefusalReason.BUSY
    no_socket = srv.cannot_serve(first.transfer, "no free port in port_range", 0.1)
    assert no_socket.cause is RefusalReason.NO_SOCKET
    srv.refuse_new("server shutting down")
    assert cause_of(srv.request(rrq(), ("198.18.0.5", 1), 0.2)) is RefusalReason.SHUTTING_DOWN
    (tmp_path / "f").write_bytes(b"abc")
    real = TftpServer(TftpConfig(root=tmp_path), FileStore(tmp_path))
    leak = real.request(rrq("../etc/passwd"), CLIENT, 0.0)
    assert cause_of(leak) is RefusalReason.ACCESS_VIOLATION
    assert cause_of(real.request(rrq("g"), CLIENT, 0.0)) is RefusalReason.NOT_FOUND
