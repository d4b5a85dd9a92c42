"""The TFTP server core: read requests to transfers, limits, per-client caps, timers. No I/O.

The glue hands every datagram that is not for a running transfer to :meth:`TftpServer.request`
(on the shared port of ``single_port``, :meth:`TftpServer.is_new_request` tells which are)
and gets one decision back:

- :class:`Accepted`: a new :class:`~pxed.tftp.transfer.Transfer` (the glue opens its TID,
  calls ``start``); ``replaced`` is an earlier transfer of the same client port that the new
  request ends (a firmware that asked for ``tsize`` only and came back from the same port).
- :class:`Duplicate`: the client sent its RRQ again; its transfer retransmits on its own timer.
- :class:`Refused`: ERROR to send back (or nothing for a broken ERROR packet), with the log
  event, level, reason in words and its :class:`RefusalReason` (the metrics' label).
  :meth:`TftpServer.cannot_serve` turns an accepted transfer the glue could not give a
  socket into one.

The server never raises on input: a Hypothesis test drives it with random datagrams.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from pxed.config import TftpConfig
from pxed.errors import MalformedPacket
from pxed.files import (
    FileRefused,
    FileSource,
    MemoryFile,
    Refusal,
    Rendered,
    ServedFile,
    canonical,
    to_netascii,
)
from pxed.tftp import packet as tp
from pxed.tftp.packet import ErrorCode, Opcode
from pxed.tftp.transfer import Address, Burst, Outcome, Settings, Transfer, negotiate

UNKNOWN_TID_ERROR = tp.encode_error(ErrorCode.UNKNOWN_TID, "unknown transfer ID")
BUSY_ERROR = tp.encode_error(ErrorCode.NOT_DEFINED, "server busy")




@dataclass(frozen=True, slots=True)
class Accepted:
    transfer: Transfer
    replaced: Transfer | None = None
    """An earlier transfer of the same client (address, port), already ended and forgotten
    (:meth:`TftpServer.finish`): the glue only closes its socket and logs its end."""


@dataclass(frozen=True, slots=True)
class Duplicate:
    transfer: Transfer
    """The transfer the retransmitted RRQ belongs to."""


class RefusalReason(StrEnum):
    """Why a request (or a datagram from an unknown peer) was not served: the ``cause``
    field of ``tftp.refused`` / ``tftp.malformed`` and the ``reason`` label of
    ``pxed_tftp_refusals``. A closed set; the event's ``reason`` says the particulars."""

    NOT_FOUND = "not_found"
    """No such file under the root (ERROR 1)."""
    ACCESS_VIOLATION = "access_violation"
    """The name leads out of the root, the file is not readable or not world-readable, not
    a regular file ... (ERROR 2)."""
    READ_ONLY = "read_only"
    """A write request: pxed only serves files."""
    BAD_REQUEST = "bad_request"
    """A read request whose options cannot be honoured (RFC 2347 §4: ERROR 8)."""
    BUSY = "busy"
    """``max_transfers`` are running."""
    CLIENT_LIMIT = "client_limit"
    """``max_transfers_per_client`` are running for this client address."""
    NO_SOCKET = "no_socket"
    """No socket for the transfer (no free port in ``port_range``, out of descriptors)."""
    SHUTTING_DOWN = "shutting_down"
    """pxed is stopping: new requests are refused."""
    MALFORMED = "malformed"
    """Not a read request: a datagram that does not decode, or an ACK, DATA or ERROR from a
    peer that has no transfer (``tftp.malformed``)."""
    INTERNAL_ERROR = "internal_error"
    """A bug in pxed (logged with the exception)."""


_REFUSALS = {
    Refusal.NOT_FOUND: (RefusalReason.NOT_FOUND, ErrorCode.FILE_NOT_FOUND),
    Refusal.FORBIDDEN: (RefusalReason.ACCESS_VIOLATION, ErrorCode.ACCESS_VIOLATION),
}
"""The root's refusals in TFTP's words: the metric's reason and the error answered."""


@dataclass(frozen=True, slots=True)
class Refused:
    reply: bytes | None
    """ERROR datagram to answer with; None to drop silently (never answer an ERROR)."""
    event: str
    """``tftp.refused`` (a valid request not served) or ``tftp.malformed``."""
    reason: str
    cause: RefusalReason
    code: int | None = None
    filename: str | None = None
    level: int = logging.INFO
    """Of the log line: WARNING when our side failed (:meth:`TftpServer.cannot_serve`)."""


Decision = Accepted | Duplicate | Refused


@dataclass(frozen=True, slots=True)
class TftpStats:
    active: int
    """Transfers running now."""
    started: int
    done: int
    failed: int
    refused: int
    malformed: int
    open_files: int = 0


def settings_from(config: TftpConfig) -> Settings:
    return Settings(
        max_blksize=max(tp.BLKSIZE_MIN, min(config.max_blksize, tp.BLKSIZE_MAX)),
        max_windowsize=max(1, min(config.max_windowsize, tp.WINDOWSIZE_MAX)),
        default_timeout=config.default_timeout,
        retries=config.retries,
    )


def _refuse(
    event: str, cause: RefusalReason, reason: str, code: int | None, filename: str | None = None
) -> Refused:
    reply = tp.encode_error(code, reason) if code is not None else None
    return Refused(reply, event, reason, cause, code, filename)


def client_dir(per_client: str | None, ip: str | None, mac: str | None) -> str | None:
    """The client's own directory below the root for ``[tftp] per_client``: its IP, or its
    MAC in dnsmasq's ``tftp-unique-root=mac`` form, lower case with dashes
    (``52-54-00-12-34-56``); None when the mode is off or the client's part is unknown.
    Shared with `pxed explain`, which names the file a client would be served."""
    if per_client == "ip":
        return ip
    if per_client == "mac" and mac:
        return mac.lower().replace(":", "-")
    return None


class TftpServer:
    """All transfers of one TFTP endpoint, keyed by client (address, port)."""

    def __init__(
        self,
        config: TftpConfig,
        files: FileSource,
        *,
        settings: Settings | None = None,
        mac_lookup: Callable[[str], str | None] | None = None,
        rendered: Rendered | None = None,
    ) -> None:
        self.config = config
        self.files = files
        self.rendered = rendered
        """Files made per machine (profiles), asked before the root."""
        self.mac_lookup = mac_lookup
        """The MAC behind a client address (DHCP's lease, the ARP table): ``per_client``."""
        self.settings = settings or settings_from(config)
        self.transfers: dict[Address, Transfer] = {}
        self._per_client: dict[str, int] = {}
        self.started = self.done = self.failed = self.refused = self.malformed = 0
        self._refusing: str | None = None

    def reconfigure(self, config: TftpConfig, files: FileSource) -> None:
        """New requests follow ``config`` and are served from ``files`` (a reload); running
        transfers keep the file, settings and limits they started with."""
        self.config = config
        self.files = files
        self.settings = settings_from(config)

    def refuse_new(self, reason: str) -> None:
        """From now on every new request is refused with ERROR 0 ``reason`` (stopping:
        running transfers go on, new ones would only be cut off)."""
        self._refusing = reason

    def _client_dir(self, ip: str) -> str | None:
        """The client's own directory below the root (``per_client``; see client_dir)."""
        mode = self.config.per_client
        mac = None
        if mode == "mac" and self.mac_lookup is not None:
            mac = self.mac_lookup(ip)
        return client_dir(mode, ip, mac)

    def stats(self) -> TftpStats:
        open_files = getattr(self.files, "open_files", 0)
        return TftpStats(
            len(self.transfers),
            self.started,
            self.done,
            self.failed,
            self.refused,
            self.malformed,
            open_files if isinstance(open_files, int) else 0,
        )

    # -- requests -------------------------------------------------------------------------

    def request(
        self, datagram: bytes, client: Address, now: float, local: str | None = None
    ) -> Decision:
        """A datagram from a peer that has no transfer here (or a new RRQ). Never raises.
        ``local``: the address of ours it was sent to (rendered files name it)."""
        try:
            return self._request(bytes(datagram), client, now, local)
        except MalformedPacket as exc:
            self.malformed += 1
            return _refuse("tftp.malformed", RefusalReason.MALFORMED, str(exc), exc.error_code)
        except Exception as exc:  # a bug must cost one request, not the server
            self.refused += 1
            return _refuse("tftp.refused", RefusalReason.INTERNAL_ERROR,
                           f"internal error: {exc!r}", ErrorCode.NOT_DEFINED)  # fmt: skip

    def is_new_request(self, datagram: bytes) -> bool:
        """Whether a datagram from a client that has a transfer running on the shared port
        (``single_port``) goes to :meth:`request` rather than to that transfer: an RRQ is a
        request again (a retransmitted one is a :class:`Duplicate`, another one from the
        same port replaces the transfer); anything else is the transfer's."""
        return len(datagram) >= 2 and datagram[0] == 0 and datagram[1] == Opcode.RRQ

    def stranger(self, datagram: bytes) -> bytes | None:
        """What to answer a datagram that reached a transfer's port from another peer
        (RFC 1350 §4: ERROR 5, and the transfer goes on); None for an ERROR, which is
        never answered (two servers must not trade ERRORs)."""
        if len(datagram) >= 2 and datagram[0] == 0 and datagram[1] == Opcode.ERROR:
            return None
        return UNKNOWN_TID_ERROR

    def _request(
        self, datagram: bytes, client: Address, now: float, local: str | None
    ) -> Decision:
        if len(datagram) >= 2 and datagram[0] == 0 and datagram[1] == Opcode.WRQ:
            # Refuse before decoding: a broken WRQ gets the same answer.
            self.refused += 1
            return _refuse("tftp.refused", RefusalReason.READ_ONLY, "read-only server",
                           ErrorCode.ACCESS_VIOLATION)  # fmt: skip
        pkt = tp.decode(datagram)
        if not isinstance(pkt, tp.ReadRequest):
            if isinstance(pkt, tp.Error):
                self.malformed += 1
                return Refused(None, "tftp.malformed", "ERROR from an unknown peer",
                               RefusalReason.MALFORMED)  # fmt: skip
            self.malformed += 1
            return _refuse(
                "tftp.malformed",
                RefusalReason.MALFORMED,
                f"{type(pkt).__name__} from an unknown transfer ID",
                ErrorCode.UNKNOWN_TID,
            )
        existing = self.transfers.get(client)
        if existing is not None and existing.request_bytes == datagram:
            return Duplicate(existing)
        if self._refusing is not None:
            self.refused += 1
            return _refuse("tftp.refused", RefusalReason.SHUTTING_DOWN, self._refusing,
                           ErrorCode.NOT_DEFINED, pkt.filename)  # fmt: skip
        replaced = existing
        count = self._per_client.get(client[0], 0) - (1 if replaced is not None else 0)
        active = len(self.transfers) - (1 if replaced is not None else 0)
        if active >= self.config.max_transfers:
            self.refused += 1
            return _refuse(
                "tftp.refused",
                RefusalReason.BUSY,
                f"server busy: {active} transfers running",
                ErrorCode.NOT_DEFINED,
                pkt.filename,
            )
        if count >= self.config.max_transfers_per_client:
            self.refused += 1
            return _refuse(
                "tftp.refused",
                RefusalReason.CLIENT_LIMIT,
                f"too many transfers from {client[0]} ({count})",
                ErrorCode.NOT_DEFINED,
                pkt.filename,
            )
        try:
            negotiation = negotiate(pkt)
        except MalformedPacket as exc:
            self.refused += 1
            return _refuse("tftp.refused", RefusalReason.BAD_REQUEST, str(exc), exc.error_code,
                           pkt.filename)  # fmt: skip
        try:
            served = self._open(pkt, client[0], local)
        except FileRefused as exc:
            self.refused += 1
            cause, code = _REFUSALS[exc.kind]
            return _refuse("tftp.refused", cause, exc.reason, code, pkt.filename)
        if replaced is not None:
            replaced.fail(Outcome.REPLACED, "a new request came from the same client port", now)
            self.finish(replaced)
        transfer = Transfer(
            client,
            pkt,
            served,
            self.settings,
            now,
            negotiation=negotiation,
            request_bytes=datagram,
        )
        self.transfers[client] = transfer
        self._per_client[client[0]] = self._per_client.get(client[0], 0) + 1
        self.started += 1
        return Accepted(transfer, replaced)

    def _open(self, pkt: tp.ReadRequest, ip: str, local: str | None) -> ServedFile:
        netascii = pkt.mode == "netascii"
        if self.rendered is not None:
            data = self.rendered(pkt.filename, ip, local)
            if data is not None:
                served = to_netascii(data) if netascii else data
                return MemoryFile(canonical(pkt.filename), served)
        return self.files.open(pkt.filename, netascii=netascii, under=self._client_dir(ip))

    def cannot_serve(self, transfer: Transfer, reason: str, now: float) -> Refused:
        """An accepted transfer that the glue could not start (``reason``: no socket, no
        free port): it ends as our side's failure and the client is told the server is busy
        (ERROR 0, as when ``max_transfers`` are running)."""
        transfer.fail(Outcome.ERROR, reason, now)
        self.finish(transfer)
        return Refused(
            BUSY_ERROR,
            "tftp.refused",
            reason,
            RefusalReason.NO_SOCKET,
            ErrorCode.NOT_DEFINED,
            transfer.request.filename,
            logging.WARNING,
        )

    # -- transfers ending -----------------------------------------------------------------

    def finish(self, transfer: Transfer) -> None:
        """Forget a finished transfer and release its file (idempotent)."""
        if self.transfers.get(transfer.client) is not transfer:
            return
        del self.transfers[transfer.client]
        ip = transfer.client[0]
        left = self._per_client.get(ip, 1) - 1
        if left > 0:
            self._per_client[ip] = left
        else:
            self._per_client.pop(ip, None)
        if transfer.outcome is Outcome.OK:
            self.done += 1
        else:
            self.failed += 1
        transfer.file.close()

    def close_all(
        self, now: float, message: str = "server shutting down"
    ) -> list[tuple[Transfer, Burst]]:
        """End every transfer; the bursts are the ERRORs to send."""
        out = []
        for transfer in list(self.transfers.values()):
            burst = transfer.abort(ErrorCode.NOT_DEFINED, message, now, outcome=Outcome.SHUTDOWN)
            out.append((transfer, burst))
        return out

    # -- timers ---------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """The earliest deadline of all transfers, or None."""
        soonest: float | None = None
        for transfer in self.transfers.values():
            deadline = transfer.next_timer()
            if deadline is not None and (soonest is None or deadline < soonest):
                soonest = deadline
        return soonest

    def on_timer(self, now: float) -> list[tuple[Transfer, Burst]]:
        """Run every transfer whose deadline passed; finished ones are in the list too."""
        out: list[tuple[Transfer, Burst]] = []
        for transfer in self._due(now):
            burst = transfer.on_timer(now)
            if burst or transfer.finished:
                out.append((transfer, burst))
        return out

    def _due(self, now: float) -> Iterable[Transfer]:
        return [
            t for t in self.transfers.values() if (d := t.next_timer()) is not None and d <= now
        ]
