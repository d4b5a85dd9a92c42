"""One read transfer's state machine: options, window, retransmission, rollover.

No sockets and no clock: every call gets ``now`` (seconds, any monotonic origin) and returns
the datagrams to send. The glue feeds received datagrams to :meth:`Transfer.receive`, calls
:meth:`Transfer.on_timer` once :meth:`Transfer.next_timer` has passed, and drops the transfer
when :attr:`Transfer.finished` is true.

What is returned is a *burst*: a list of datagrams, each a tuple of buffers to be sent as one
datagram without joining them (``sendmsg``). A burst is either one control packet (OACK or
ERROR) or consecutive DATA packets that all have ``4 + blksize`` octets except possibly the
last, so the glue can hand a whole burst to one UDP GSO call (``UDP_SEGMENT``).

Sending (RFC 1350, RFC 7440):

- A window is ``windowsize`` consecutive blocks from the block after the last acknowledged
  one. Lock-step transfer is windowsize 1.
- An ACK of the last block of the window sends the next window. An ACK of an earlier block of
  the window (the client saw a gap) sends a new window from the block after it (RFC 7440 §4).
- An ACK of a block already acknowledged, or of a block not sent, is ignored: a duplicate or
  late ACK never makes the server send again (RFC 1123 §4.2.3.1, Sorcerer's Apprentice).
  Retransmission is driven by the timer alone.
- On a timeout the window is sent again from the block after the last acknowledged one.
- Block numbers are 16-bit on the wire and roll over from 65535 to 0; internally blocks are
  counted without limit and an ACK is mapped back to the one block of the window it names.

Timer (RFC 1123 §4.2.3.2 asks for an adaptive timeout with backoff): the round trip is
estimated from ACKs of windows sent once (Karn's rule) as in RFC 6298, and the first
retransmission comes after ``rto = srtt + 4 * rttvar`` (at least :attr:`Settings.min_rto`, at
most the transfer's timeout: the negotiated RFC 2349 value or the configured default; before
the first sample, the configured default). Each further timeout doubles the wait, up to the
timeout itself when the client negotiated one and to four times the configured default
otherwise; once waits have reached the timeout, the transfer fails after
:attr:`Settings.retries` more of them. Retransmitting sooner than a negotiated timeout is
harmless for a read (the client drops a block it has), and a loss on a LAN then costs
milliseconds instead of the seconds a client asks for.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final, Union

from pxed.errors import MalformedPacket
from pxed.files import ServedFile
from pxed.tftp import packet as tp
from pxed.tftp.packet import ErrorCode, ReadRequest

Buffer = Union[bytes, memoryview]  # noqa: UP007 - a runtime alias, kept readable
Datagram = tuple[Buffer, ...]
"""Buffers sent together as one datagram (header and payload, not joined)."""
Burst = list[Datagram]

Address = tuple[str, int]

_DATA_HEADER = struct.Struct("!HH").pack
_OP_DATA: Final = tp.Opcode.DATA.value

IP_UDP_OVERHEAD: Final = 28
"""IPv4 header (no options) + UDP header: what the MTU leaves for a TFTP packet."""


class State(Enum):
    NEW = "new"
    """Created, nothing sent yet (:meth:`Transfer.start` not called)."""
    OACK_SENT = "oack-sent"
    """OACK sent, waiting for ACK 0 (RFC 2347)."""
    SENDING = "sending"
    """Data windows going out, waiting for ACKs."""
    DONE = "done"
    """The last block was acknowledged."""
    FAILED = "failed"
    """Ended early: timeout, client ERROR, shutdown, replaced by a new request..."""


class Outcome(StrEnum):
    """How a transfer ended; each carries its log event and level (one event a transfer).

    A StrEnum, so that the value is what the log line and the tests read (``"ok"``...).
    """

    OK = "ok"
    DECLINED = "declined"
    """ERROR 8 in answer to the OACK: the client asked the size only (EDK2, every boot)."""
    CLIENT_ERROR = "client-error"
    TIMEOUT = "timeout"
    ABORTED = "aborted"
    SHUTDOWN = "shutdown"
    REPLACED = "replaced"
    """A new RRQ came from the same client port (the firmware started over)."""
    ERROR = "error"
    """Our side failed: no socket, a send that cannot succeed, the file changed."""

    @property
    def event(self) -> str:
        if self is Outcome.OK:
            return "tftp.done"
        if self is Outcome.DECLINED:
            return "tftp.declined"  # not a failure: a size probe
        return "tftp.failed"

    @property
    def level(self) -> int:
        return logging.INFO if self in (Outcome.OK, Outcome.DECLINED) else logging.WARNING


_SENDING: Final = State.SENDING


@dataclass(frozen=True, slots=True)
class Settings:
    """The server-side limits a transfer works within (from ``[tftp]``)."""

    max_blksize: int = tp.BLKSIZE_MAX
    max_windowsize: int = 64
    default_timeout: float = 1.0
    """Seconds; the retransmission timeout when the client negotiated none."""
    retries: int = 5
    """Retransmissions at the full timeout before a transfer is given up."""
    min_rto: float = 0.02
    """Floor of the adaptive retransmission timeout (seconds)."""
    window_bytes: int = 192 * 1024
    """Window size is cut so that a window fits a client's default UDP receive buffer."""


@dataclass(frozen=True, slots=True)
class Negotiation:
    """The options of one RRQ that pxed understands, validated (RFC 2347-2349, 7440)."""

    names: tuple[str, ...] = ()
    """Recognised option names, in the order the client sent them (the OACK keeps it)."""
    blksize: int | None = None
    windowsize: int | None = None
    timeout: int | None = None
    tsize: bool = False


def negotiate(request: ReadRequest) -> Negotiation:
    """Validate the options of ``request``; unknown ones are left out.

    Raises :class:`MalformedPacket` with ERROR 8 for a known option with an invalid value.
    """
    names: list[str] = []
    blksize = windowsize = timeout = None
    tsize = False
    for name, value in request.options:
        if name == "blksize":
            blksize = tp.parse_uint(value, tp.BLKSIZE_MIN, tp.BLKSIZE_MAX)
            if blksize is None:
                raise MalformedPacket(
                    f"blksize {value!r} (RFC 2348: {tp.BLKSIZE_MIN}..{tp.BLKSIZE_MAX})",
                    ErrorCode.OPTION_NEGOTIATION,
                )
        elif name == "windowsize":
            windowsize = tp.parse_uint(value, tp.WINDOWSIZE_MIN, tp.WINDOWSIZE_MAX)
            if windowsize is None:
                raise MalformedPacket(
                    f"windowsize {value!r} (RFC 7440: 1..65535)", ErrorCode.OPTION_NEGOTIATION
                )
        elif name == "timeout":
            timeout = tp.parse_uint(value, tp.TIMEOUT_MIN, tp.TIMEOUT_MAX)
            if timeout is None:
                raise MalformedPacket(
                    f"timeout {value!r} (RFC 2349: 1..255)", ErrorCode.OPTION_NEGOTIATION
                )
        elif name == "tsize":
            if tp.parse_uint(value, 0, 2**64 - 1) is None:  # RFC 2349: an octet count
                raise MalformedPacket(f"tsize {value!r}", ErrorCode.OPTION_NEGOTIATION)
            tsize = True
        else:
            continue
        names.append(name)
    return Negotiation(tuple(names), blksize, windowsize, timeout, tsize)


def _truesize(blksize: int) -> int:
    """Rough kernel accounting of one received datagram (sk_buff + data rounded up)."""
    data = blksize + 4 + IP_UDP_OVERHEAD + 14
    size = 1024
    while size < data:
        size *= 2
    return size + 320


class Transfer:
    """One RRQ being served: from the first OACK/DATA to the last ACK (or a failure)."""

    __slots__ = (
        "_acked",
        "_blksize",
        "_data",
        "_interval",
        "_max_interval",
        "_min_rto",
        "_nblocks",
        "_oack",
        "_retransmitted",
        "_rto",
        "_rttvar",
        "_sent",
        "_sent_at",
        "_settings",
        "_size",
        "_srtt",
        "_timeout",
        "_tries",
        "_windowsize",
        "client",
        "client_error",
        "deadline",
        "duplicates",
        "ended_at",
        "error",
        "file",
        "finished",
        "ignored",
        "negotiation",
        "outcome",
        "request",
        "request_bytes",
        "retransmissions",
        "started_at",
        "state",
    )

    def __init__(
        self,
        client: Address,
        request: ReadRequest,
        file: ServedFile,
        settings: Settings,
        now: float,
        *,
        negotiation: Negotiation | None = None,
        request_bytes: bytes = b"",
    ) -> None:
        self.client = client
        """The peer (address, port): its port is the client's TID."""
        self.request = request
        self.request_bytes = request_bytes
        """The RRQ as received, to recognise a retransmitted request."""
        self.file = file
        self.negotiation = negotiation if negotiation is not None else negotiate(request)
        self._settings = settings
        self._data = file.data
        self._size = file.size
        self.state = State.NEW
        self.finished = False
        """True once DONE or FAILED: the glue drops the transfer and releases the file."""
        self.outcome: Outcome | None = None
        """Set when finished."""
        self.error = ""
        self.client_error: tuple[int, str] | None = None
        self.started_at = now
        self.ended_at: float | None = None
        self.retransmissions = 0
        """DATA/OACK datagrams sent again after a timeout."""
        self.duplicates = 0
        """Duplicate or late ACKs ignored."""
        self.ignored = 0
        """Datagrams dropped: malformed, unexpected opcode."""
        self._blksize = tp.DEFAULT_BLKSIZE
        self._windowsize = 1
        self._nblocks = 0
        self._acked = 0
        self._sent = 0
        self._sent_at = now
        self._retransmitted = False
        self._oack = b""
        neg_timeout = self.negotiation.timeout
        self._timeout = float(neg_timeout) if neg_timeout else settings.default_timeout
        self._max_interval = self._timeout if neg_timeout else self._timeout * 4
        self._min_rto = settings.min_rto
        self._srtt: float | None = None
        self._rttvar = 0.0
        # Before any round-trip sample: the configured default, even when the client asked a
        # longer timeout (curl asks 6 s): the negotiated value bounds the backoff instead.
        self._rto = min(self._timeout, settings.default_timeout)
        self._interval = self._rto
        self._tries = 0
        self.deadline: float | None = None
        """When :meth:`on_timer` wants to run (read-only for the glue; None once finished)."""

    # -- what was agreed ------------------------------------------------------------------

    @property
    def blksize(self) -> int:
        return self._blksize

    @property
    def windowsize(self) -> int:
        return self._windowsize

    @property
    def timeout(self) -> float:
        return self._timeout

    @property
    def size(self) -> int:
        """Octets of the file as sent (after netascii conversion)."""
        return self._size

    @property
    def blocks(self) -> int:
        """DATA blocks of the whole transfer (the last one shorter than blksize, maybe empty)."""
        return self._nblocks

    @property
    def acked_blocks(self) -> int:
        return self._acked

    @property
    def bytes_acked(self) -> int:
        return min(self._acked * self._blksize, self._size)

    @property
    def rto(self) -> float:
        return self._rto

    def next_timer(self) -> float | None:
        """When :meth:`on_timer` wants to be called; None once finished."""
        return self.deadline

    # -- driving it -----------------------------------------------------------------------

    def start(self, now: float, mtu: int | None = None) -> Burst:
        """Agree the options and send the first packet(s): OACK, or DATA 1 without options.

        ``mtu``: the path MTU towards the client when known; blksize is cut so that a DATA
        packet is never fragmented.
        """
        if self.state is not State.NEW:
            return []
        neg = self.negotiation
        settings = self._settings
        limit = settings.max_blksize
        if mtu is not None:
            limit = min(limit, mtu - IP_UDP_OVERHEAD - 4)
        limit = max(tp.BLKSIZE_MIN, min(limit, tp.BLKSIZE_MAX))
        if neg.blksize is not None:
            self._blksize = min(neg.blksize, limit)
        if neg.windowsize is not None:
            cap = max(1, settings.window_bytes // _truesize(self._blksize))
            self._windowsize = max(1, min(neg.windowsize, settings.max_windowsize, cap))
        options: list[tuple[str, str]] = []
        for name in neg.names:
            if name == "blksize":
                options.append((name, str(self._blksize)))
            elif name == "windowsize":
                options.append((name, str(self._windowsize)))
            elif name == "timeout":
                options.append((name, str(neg.timeout)))
            elif name == "tsize" and self._size:
                # Left out for an empty file: curl (7.88) takes "tsize 0" for an invalid
                # OACK and gives up (dnsmasq and atftpd send it and fail with curl).
                options.append((name, str(self._size)))
        self._nblocks = self._size // self._blksize + 1
        self._sent_at = now
        if options:
            self.state = State.OACK_SENT
            self._oack = tp.encode_oack(options)
            self.deadline = now + self._interval
            return [(self._oack,)]
        self.state = State.SENDING
        return self._window(now, 1)

    def receive(self, datagram: bytes, now: float) -> Burst:
        """A datagram from the client's TID. Never raises.

        The ACK of a sending transfer is the hot path (one call per block): it is kept flat
        here on purpose, without helper calls.
        """
        if len(datagram) == 4 and datagram[1] == 4 and datagram[0] == 0:
            if self.state is not _SENDING:
                return self._on_ack_other((datagram[2] << 8) | datagram[3], now)
            acked = self._acked
            got = acked + ((((datagram[2] << 8) | datagram[3]) - acked) & 0xFFFF)
            if got == acked or got > self._sent:
                self.duplicates += 1
                return []
            if self._retransmitted or not got & 3 or self._srtt is None:
                # A round-trip sample every 4th ACK is plenty (RFC 6298 asks one per RTT).
                self._sample(now)
            self._acked = got
            if got >= self._nblocks:
                self._finish(State.DONE, Outcome.OK, "", now)
                return []
            if self._windowsize != 1:
                return self._window(now, got + 1)
            bs = self._blksize
            offset = got * bs
            got += 1
            self._sent = got
            self._sent_at = now
            self.deadline = now + self._interval
            return [(_DATA_HEADER(_OP_DATA, got & 0xFFFF), self._data[offset : offset + bs])]
        try:
            pkt = tp.decode(datagram)
        except MalformedPacket as exc:
            self.ignored += 1
            self.error = f"ignored: {exc}"
            return []
        if isinstance(pkt, tp.Error):
            self.client_error = (pkt.code, pkt.message)
            # ERROR 8 in answer to the OACK, before any data, is a client declining the
            # options (RFC 2347): EDK2 does it on every boot, having asked only the size.
            declined = (
                self.state is State.OACK_SENT and pkt.code == ErrorCode.OPTION_NEGOTIATION
            )
            self._finish(
                State.FAILED,
                Outcome.DECLINED if declined else Outcome.CLIENT_ERROR,
                f"client sent ERROR {pkt.code}: {pkt.message}",
                now,
            )
            return []
        self.ignored += 1
        self.error = f"ignored: unexpected {type(pkt).__name__}"
        return []

    def on_timer(self, now: float) -> Burst:
        """Retransmit if the timer has passed (or fail after the last retry)."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        expired = self._interval
        if expired >= self._timeout:
            self._tries += 1
            if self._tries > self._settings.retries:
                self._finish(
                    State.FAILED, Outcome.TIMEOUT, f"no ACK after {self._tries - 1} retries", now
                )
                return []
        self._interval = min(expired * 2, self._max_interval)
        self._retransmitted = True
        if self.state is State.OACK_SENT:
            self.retransmissions += 1
            self._sent_at = now
            self.deadline = now + self._interval
            return [(self._oack,)]
        burst = self._window(now, self._acked + 1)
        self.retransmissions += len(burst)
        return burst

    def abort(
        self, code: int, message: str, now: float, outcome: Outcome = Outcome.ABORTED
    ) -> Burst:
        """End the transfer from our side; returns the ERROR to send the client."""
        if self.finished:
            return []
        self._finish(State.FAILED, outcome, message, now)
        return [(tp.encode_error(code, message),)]

    def fail(self, outcome: Outcome, message: str, now: float) -> None:
        """End the transfer without telling the client (a send failed, the client is gone)."""
        if not self.finished:
            self._finish(State.FAILED, outcome, message, now)

    # -- internals ------------------------------------------------------------------------

    def _window(self, now: float, first: int) -> Burst:
        last = first + self._windowsize - 1
        if last > self._nblocks:
            last = self._nblocks
        data = self._data
        bs = self._blksize
        offset = (first - 1) * bs
        burst: Burst = []
        for block in range(first, last + 1):
            burst.append((_DATA_HEADER(_OP_DATA, block & 0xFFFF), data[offset : offset + bs]))
            offset += bs
        self._sent = last
        self._sent_at = now
        self.deadline = now + self._interval
        return burst

    def _sample(self, now: float) -> None:
        """RFC 6298 round-trip estimate from a window sent once (Karn's rule)."""
        if self._retransmitted:
            self._retransmitted = False
        else:
            rtt = now - self._sent_at
            if rtt < 0:
                rtt = 0.0
            srtt = self._srtt
            if srtt is None:
                srtt = rtt
                self._rttvar = rtt / 2
            else:
                self._rttvar = 0.75 * self._rttvar + 0.25 * abs(srtt - rtt)
                srtt = 0.875 * srtt + 0.125 * rtt
            self._srtt = srtt
            rto = srtt + 4 * self._rttvar
            if rto < self._min_rto:
                rto = self._min_rto
            elif rto > self._timeout:
                rto = self._timeout
            self._rto = rto
        self._interval = self._rto
        self._tries = 0

    def _on_ack_other(self, block: int, now: float) -> Burst:
        state = self.state
        if state is State.OACK_SENT and block == 0:
            self._sample(now)
            self.state = State.SENDING
            return self._window(now, 1)
        if state is not State.NEW:
            self.duplicates += 1
        return []

    def _finish(self, state: State, outcome: Outcome, error: str, now: float) -> None:
        self.state = state
        self.finished = True
        self.outcome = outcome
        if error:
            self.error = error
        self.ended_at = now
        self.deadline = None
        self._data = memoryview(b"")

    def summary(self) -> dict[str, object]:
        """The fields of the one log event of a finished transfer."""
        end = self.ended_at if self.ended_at is not None else self.started_at
        fields: dict[str, object] = {
            "client": f"{self.client[0]}:{self.client[1]}",
            "file": self.file.name,
            "mode": self.request.mode,
            "bytes": self.bytes_acked,
            "size": self._size,
            "blksize": self._blksize,
            "windowsize": self._windowsize,
            "seconds": round(end - self.started_at, 4),
            "retransmissions": self.retransmissions,
            "outcome": str(self.outcome) if self.outcome is not None else None,
        }
        if self.negotiation.names:
            fields["options"] = ",".join(self.negotiation.names)
        if self.duplicates:
            fields["duplicate_acks"] = self.duplicates
        if self.ignored:
            fields["ignored"] = self.ignored
        if self.error and self.outcome is not Outcome.OK:
            fields["error"] = self.error
        return fields
