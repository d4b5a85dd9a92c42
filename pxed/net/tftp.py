"""TFTP sockets and the glue around the TFTP core.

Lock-step TFTP costs one ACK in and one DATA out per block, so the per-datagram path decides
the speed (bench/RESULTS.md has the figures). The data path here:

- Each transfer has its own port (a new TID, RFC 1350) and two sockets on it: one connected
  to the client, so that reading an ACK is a plain ``read`` of its descriptor and a DATA a
  ``writev`` on a cached route (no addresses built or looked up per block), and one
  unconnected beside it (SO_REUSEADDR), which gets whatever other peers send to that port,
  so that they get ERROR 5 while the transfer goes on. With ``[tftp] single_port`` every
  transfer is served from the listening socket instead.
- All of an endpoint's sockets sit in one epoll of its own (:class:`_Pump`). A round reads
  one datagram from each ready transfer socket (level-triggered: what is left comes back next
  round) and runs the core on it, then writes the DATA of all of them, then drains the
  listening socket and runs the transfers whose retransmission deadline passed. Whatever
  socket a transfer's datagram came in on, the core's answer goes through one step
  (``_Pump._received``) and the callers only read and write; the round and the lane keep
  inline the one case where that step would only hand the DATA back. One round costs one
  ``epoll_wait``, and per block one ``read`` and one ``writev`` plus the core's
  few microseconds (dnsmasq makes four calls a block: it also seeks and reads the file).
  ``os.read``/``os.writev`` on the descriptor are the same system calls as ``recv``/
  ``sendmsg`` with about half the Python around them (bench/RESULTS.md).
- DATA goes out as the 4-octet header beside a ``memoryview`` slice of the shared ``mmap``
  (``writev``, or ``sendmsg`` where ancillary data or an address is needed): the payload is
  never copied in Python.
- A window goes out with UDP GSO (``UDP_SEGMENT``): one ``sendmsg`` carries up to 64 blocks
  and the kernel cuts them into datagrams of ``4 + blksize`` (the last, shorter one rides
  along). Without GSO (an old kernel, a device without checksum offload) a window is one
  ``sendmsg`` per block.
- Timers: every transfer keeps its own deadline; the pump keeps the earliest one and scans
  only when it has passed (an ACK moves a deadline, it arms nothing).

The pump runs on a thread of its own by default, blocking in ``epoll_wait`` until a datagram
or the next deadline: measured here (bench/RESULTS.md), that answers a lock-step ACK with a
third less CPU than going through the asyncio loop's select/handle machinery, and the loop
(DHCP) never waits for TFTP. While a single transfer runs on its own socket (the common case:
one firmware fetching its kernel and initrd) the thread serves it in a *lane*: a blocking
``read`` on that socket (SO_RCVTIMEO 2 ms) instead of ``epoll_wait``, two system calls per
block, giving way to an epoll round every 2 ms for new requests and timers. With the lane
pxed is level with dnsmasq on lock-step transfers.
``TftpEndpoint(threaded=False)`` runs the same pump inside the event loop instead
(``add_reader`` on its epoll, one asyncio timer, no lane); ``lane=False`` turns the lane off
and ``gso=False`` sends windows a datagram at a time (both for measurements: bench/tftp's
variants run pxed through bench/pxed_variant, which sets them). Either way
the cores are touched by one thread only, the pump's; the loop thread starts and stops it and
writes the log lines, which the pump hands over with ``call_soon_threadsafe`` (one per
transfer, not per packet).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from pxed.config import TftpConfig
from pxed.events import Event, Notice
from pxed.files import FileStore, Rendered
from pxed.net.udp import PKTINFO_SPACE, Ancillary, local_address, open_udp_socket, send_from
from pxed.tftp.server import Accepted, Duplicate, Refused, TftpServer, TftpStats
from pxed.tftp.transfer import Address, Buffer, Burst, Datagram, Outcome, Transfer

log = structlog.get_logger("pxed.tftp")

SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h: GSO segment size (cmsg or sockopt)
IP_MTU = 14  # linux/in.h: path MTU of a connected socket
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS (linux/udp.h) on the kernels we run on
GSO_MAX_BYTES = 65507 - 8  # what one UDP datagram may carry, the limit of one GSO call
MAX_EVENTS = 256
MAX_DRAIN = 256  # datagrams read from the listening socket per round
RCVBUF = 1 << 20
SNDBUF = 1 << 20
MTU_CACHE_SECONDS = 30.0
IDLE_WAIT = 1.0  # longest epoll wait of the pump thread (it checks for a stop request)
LANE_WAIT = 0.002  # longest blocking read of a lane (SO_RCVTIMEO)
LANE_SLICE = 0.002  # a lane gives way to an epoll round this often
_LANE_TIMEVAL = struct.pack("@ll", 0, int(LANE_WAIT * 1e6))
_GSO_ERRNOS = (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP)
# Send errors after which the retransmission timer is the answer (it gives up in the end);
# EPERM is what a local firewall's drop returns.
_TRANSIENT_ERRNOS = (
    errno.ENOBUFS,
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EAGAIN,
    errno.EPERM,
    errno.ENOMEM,
)

Emit = Callable[[int, str, dict[str, Any]], None]
TRANSFER_EVENTS = frozenset({*(o.event for o in Outcome), "tftp.start", "tftp.refused"})
"""The events of a transfer starting, ending or refused (they get the client's MAC: the boot
timeline files them under the machine)."""


def _peer(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"


class _Conn:
    """The glue's side of one transfer: its socket(s) and how to send from them."""

    __slots__ = (
        "addr",
        "catcher",
        "cmsg",
        "connected",
        "fd",
        "mtu",
        "own_socket",
        "port",
        "sock",
        "transfer",
    )

    def __init__(
        self,
        transfer: Transfer,
        sock: socket.socket,
        own_socket: bool,
        catcher: socket.socket | None = None,
        port: int = 0,
    ) -> None:
        self.transfer = transfer
        self.addr = transfer.client
        self.sock = sock
        """Per-transfer mode: connected to the client (read/write without addresses, the
        kernel keeps the route). Single-port mode: the shared listening socket."""
        self.fd = sock.fileno()
        self.own_socket = own_socket
        self.connected = catcher is not None
        self.catcher = catcher
        """Per-transfer mode: an unconnected socket on the same port, which gets what other
        peers send there (a connected socket only hears its peer) so they get ERROR 5."""
        self.mtu: int | None = None
        self.cmsg: Ancillary = []
        """Ancillary data for every send (IP_PKTINFO from a wildcard single-port socket)."""
        self.port = port
        """The transfer's own port (its TID), the catcher's; 0 in single-port mode."""


class _Pump:
    """Every socket of one endpoint behind one epoll; only ever used by one thread."""

    def __init__(
        self,
        config: TftpConfig,
        host: str,
        interface: str | None,
        listen: socket.socket,
        core: TftpServer,
        emit: Emit,
        debug: bool,
        *,
        lane: bool = True,
        gso: bool = True,
    ) -> None:
        self.config = config
        self.host = host
        self.interface = interface
        self.wildcard = host in ("", "0.0.0.0")
        self.single = config.single_port
        self.listen = listen
        self.listen_fd = listen.fileno()
        self.core = core
        self.emit = emit
        self.debug = debug
        self.ep = select.epoll()
        self.ep.register(self.listen_fd, select.EPOLLIN)
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.ep.register(self.wake_fd, select.EPOLLIN)
        self.by_fd: dict[int, _Conn] = {}
        self.catchers: dict[int, _Conn] = {}
        self.conns: dict[Address, _Conn] = {}
        self.next_deadline = float("inf")
        self.gso = gso
        """Windows go out with UDP GSO (until the kernel refuses it)."""
        self.use_lane = lane
        self.gso_sends = 0
        self._mtu_cache: dict[str, tuple[int | None, float]] = {}
        self.ports: set[int] = set()
        """The ports of the running transfers (what ``port_range`` must not hand out again)."""
        self._next_port = 0
        self.pending: list[Callable[[], None]] = []
        """Work the loop thread hands the pump (a reload's new settings): run on the pump's
        thread, between rounds, so that the core is only ever touched by that thread."""

    # -- the round ------------------------------------------------------------------------

    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds, serve what is ready, run due timers.

        The loop body is the hot path of concurrent transfers (one pass per block): one
        ``read`` of the ACK and the core for every ready transfer, then one ``writev`` of
        each DATA. Writing after all the reads keeps the Python of the round together,
        before the sends wake the clients (a woken client often takes this CPU from the
        pump; ``bench/tftp_pump``, 50 transfers: 5.4 -> 5.1 µs a block). The other sockets
        (new requests, strangers) wait until the DATA is out, so that a transfer ended
        there never closes a descriptor that a pending write names.
        """
        events = self.ep.poll(timeout, MAX_EVENTS)
        now = time.monotonic()
        by_fd = self.by_fd
        read = os.read
        received = self._received
        sends: list[tuple[_Conn, Datagram]] = []
        others: list[int] = []
        for fd, _ in events:
            conn = by_fd.get(fd)
            if conn is None:
                others.append(fd)
                continue
            try:
                data = read(fd, 2048)
            except OSError as exc:
                self._recv_failed(conn, exc)
                continue
            transfer = conn.transfer
            burst = transfer.receive(data, now)
            if (
                len(burst) == 1
                and (deadline := transfer.deadline) is not None
                and deadline >= self.next_deadline
            ):
                sends.append((conn, burst[0]))  # all _received would do, inline (see there)
                continue
            datagram = received(conn, burst)
            if datagram is not None:
                sends.append((conn, datagram))
        if sends:
            writev = os.writev
            for conn, datagram in sends:
                try:
                    writev(conn.fd, datagram)
                except OSError as exc:
                    self._send_failed(conn, exc)
                    self._after(conn)
        for fd in others:
            self._other(fd, now)
        if now >= self.next_deadline:
            self._timers(now)

    def _other(self, fd: int, now: float) -> None:
        if fd == self.listen_fd:
            self._on_listen(now)
        elif fd in self.catchers:
            self._on_catcher(self.catchers[fd])
        elif fd == self.wake_fd:
            with contextlib.suppress(OSError):
                os.eventfd_read(self.wake_fd)
            self.run_pending()

    def run_pending(self) -> None:
        while self.pending:
            self.pending.pop(0)()

    def timeout(self) -> float:
        """Seconds until the earliest deadline (what the thread waits at most)."""
        wait = self.next_deadline - time.monotonic()
        return 0.0 if wait < 0 else min(wait, IDLE_WAIT)

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            os.eventfd_write(self.wake_fd, 1)

    # -- the listening socket -------------------------------------------------------------

    def _on_listen(self, now: float) -> None:
        sock = self.listen
        wildcard = self.wildcard
        single = self.single
        conns = self.conns
        local_ip = self.host
        is_new_request = self.core.is_new_request
        for _ in range(MAX_DRAIN):
            try:
                if wildcard:
                    data, anc, _flags, addr = sock.recvmsg(2048, PKTINFO_SPACE)
                    local = local_address(anc)
                    local_ip = socket.inet_ntoa(local) if local else "0.0.0.0"
                else:
                    data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self.debug:
                    self.emit(logging.DEBUG, "tftp.recv_error", {"error": str(exc)})
                return
            if single:
                conn = conns.get(addr)
                if conn is not None and not is_new_request(data):
                    self._feed(conn, data, now)
                    continue
            self._request(data, addr, local_ip, now)

    def _request(self, data: bytes, addr: Address, local_ip: str, now: float) -> None:
        decision = self.core.request(data, addr, now, local_ip if local_ip != "0.0.0.0" else None)
        if isinstance(decision, Refused):
            self._refused(decision, addr, local_ip)
            return
        if isinstance(decision, Duplicate):
            if self.debug:
                self.emit(logging.DEBUG, "tftp.duplicate_request", {"client": _peer(addr)})
            return
        assert isinstance(decision, Accepted)
        transfer = decision.transfer
        if decision.replaced is not None:  # the core has ended it: close its sockets
            old = self.conns.get(decision.replaced.client)
            if old is not None and old.transfer is decision.replaced:
                self._end(old)
        try:
            conn = self._open_conn(transfer, local_ip)
        except OSError as exc:
            refused = self.core.cannot_serve(transfer, f"no socket: {exc.strerror}", now)
            self._refused(refused, addr, local_ip)
            return
        mtu = conn.mtu if conn.mtu is not None else self._path_mtu(addr[0], now)
        burst = transfer.start(now, mtu)
        self._send(conn, burst)
        # DEBUG in the log; the boot timeline shows the running transfer from it.
        self.emit(logging.DEBUG, "tftp.start", {"client": _peer(addr), "file": transfer.file.name})
        self._after(conn)

    def _refused(self, decision: Refused, addr: Address, local_ip: str) -> None:
        """Send the core's ERROR (if any) and log the refusal as the core says."""
        if decision.reply is not None:
            self._send_raw(decision.reply, addr, local_ip)
        fields: dict[str, Any] = {"client": _peer(addr), "reason": decision.reason,
                                  "cause": decision.cause.value}  # fmt: skip
        if decision.filename is not None:
            fields["file"] = decision.filename
        if decision.code is not None:
            fields["code"] = int(decision.code)
        self.emit(decision.level, decision.event, fields)

    def _open_conn(self, transfer: Transfer, local_ip: str) -> _Conn:
        if self.single:
            conn = _Conn(transfer, self.listen, False)
            if self.wildcard and local_ip != "0.0.0.0":
                conn.cmsg = send_from(socket.inet_aton(local_ip))
        else:
            bind = local_ip if self.wildcard else self.host
            catcher = self._fresh_port(bind)
            port = catcher.getsockname()[1]
            try:
                sock = open_udp_socket(bind, port, self.interface)
            except OSError:
                catcher.close()
                raise
            try:
                sock.connect(transfer.client)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
                # Only a lane's blocking read uses it (see run_lane).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _LANE_TIMEVAL)
                conn = _Conn(transfer, sock, True, catcher, port)
                with contextlib.suppress(OSError):
                    conn.mtu = sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
                self.ep.register(sock.fileno(), select.EPOLLIN)
                try:
                    self.ep.register(catcher.fileno(), select.EPOLLIN)
                except OSError:
                    self.ep.unregister(sock.fileno())
                    raise
            except OSError:
                sock.close()
                catcher.close()
                raise
            self.by_fd[conn.fd] = conn
            self.catchers[catcher.fileno()] = conn
            self.ports.add(conn.port)
        self.conns[transfer.client] = conn
        return conn

    def _fresh_port(self, bind: str) -> socket.socket:
        """A transfer's first socket, on a port of its own: any free one, or one of port_range.

        Within ``port_range`` the search starts after the port handed out last, so that a
        port just freed is reused last and a late datagram for the old transfer does not
        meet a new one there. The running transfers' ports are skipped without asking the
        kernel: with SO_REUSEADDR on both sockets it would let two transfers share one.
        """
        span = self.config.port_range
        if span is None:
            return open_udp_socket(bind, 0, self.interface)
        first, last = span
        size = last - first + 1
        denied = 0
        for step in range(size):
            port = first + (self._next_port + step) % size
            if port in self.ports:
                continue
            try:
                sock = open_udp_socket(bind, port, self.interface)
            except OSError as exc:
                if exc.errno == errno.EACCES:
                    denied += 1  # a privileged port (below ip_unprivileged_port_start)
                    continue
                if exc.errno == errno.EADDRINUSE:
                    continue  # another program's port
                raise
            self._next_port = (port - first + 1) % size
            return sock
        why = "all in use"
        if denied:
            why = f"{denied} of them privileged: pxed lacks CAP_NET_BIND_SERVICE"
        raise OSError(errno.EADDRINUSE, f"no free port in port_range {first}-{last} ({why})")

    def _path_mtu(self, ip: str, now: float) -> int | None:
        """The route MTU towards ``ip`` (IP_MTU of a connected socket; no packet is sent)."""
        cached = self._mtu_cache.get(ip)
        if cached is not None and cached[1] > now:
            return cached[0]
        mtu: int | None = None
        try:
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                if self.interface:
                    probe.setsockopt(
                        socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode() + b"\0"
                    )
                probe.connect((ip, 9))
                mtu = probe.getsockopt(socket.IPPROTO_IP, IP_MTU)
            finally:
                probe.close()
        except OSError:
            mtu = None
        if len(self._mtu_cache) > 4096:
            self._mtu_cache.clear()
        self._mtu_cache[ip] = (mtu, now + MTU_CACHE_SECONDS)
        return mtu

    # -- a transfer's socket --------------------------------------------------------------

    def _recv_failed(self, conn: _Conn, exc: OSError) -> None:
        # EAGAIN: nothing after all. ECONNREFUSED: an ICMP port unreachable from the client
        # (it went away); the retransmission timer decides when to give up.
        if not isinstance(exc, BlockingIOError | InterruptedError) and self.debug:
            self.emit(
                logging.DEBUG, "tftp.recv_error", {"client": _peer(conn.addr), "error": str(exc)}
            )

    def _on_catcher(self, conn: _Conn) -> None:
        """Datagrams on a transfer's port from other peers (see _Conn.catcher)."""
        catcher = conn.catcher
        if catcher is None:
            return
        for _ in range(MAX_DRAIN):
            try:
                data, addr = catcher.recvfrom(2048)
            except OSError:
                return
            if addr == conn.addr:
                # Raced in before the connect(): it is the client's, feed it.
                self._feed(conn, data, time.monotonic())
                if conn.transfer.finished:
                    return
                continue
            self._stranger(catcher, data, addr)

    def lane(self) -> _Conn | None:
        """The transfer to serve in a lane: the only one running, on its own socket."""
        if len(self.by_fd) != 1 or not self.use_lane:
            return None
        return next(iter(self.by_fd.values()))

    def run_lane(self, conn: _Conn, stop: Callable[[], bool]) -> bool:
        """Serve one transfer alone: block in ``read`` on its socket, no epoll at all.

        With a single client (a firmware fetching its initrd, lock-step) each block then
        costs two system calls, ``read`` and ``writev``, as a blocking per-transfer
        server would. The socket waits at most LANE_WAIT for a datagram (SO_RCVTIMEO, set
        when it was made) and the lane gives way to an epoll round every LANE_SLICE seconds,
        so a new request or a due timer waits at most that long. Returns False when the
        client went quiet (the caller then waits in epoll instead of coming back here).
        """
        sock = conn.sock
        fd = conn.fd
        read = os.read
        writev = os.writev
        received = self._received
        transfer = conn.transfer
        mono = time.monotonic
        sock.setblocking(True)
        try:
            end = mono() + LANE_SLICE
            while not stop():
                try:
                    data = read(fd, 2048)
                except OSError:
                    return False  # LANE_WAIT passed (EAGAIN), or an error epoll will report
                now = mono()
                burst = transfer.receive(data, now)
                datagram: Datagram | None
                if (
                    len(burst) == 1
                    and (deadline := transfer.deadline) is not None
                    and deadline >= self.next_deadline
                ):
                    datagram = burst[0]  # all _received would do, inline (see there)
                else:
                    datagram = received(conn, burst)
                if datagram is not None:
                    try:
                        writev(fd, datagram)
                    except OSError as exc:
                        self._send_failed(conn, exc)
                        self._after(conn)
                if transfer.finished:
                    return True  # ended by _received or _after, its socket closed
                if now >= end or now >= self.next_deadline:
                    return True
            return True
        finally:
            if sock.fileno() != -1:
                sock.setblocking(False)

    def _feed(self, conn: _Conn, data: bytes, now: float) -> None:
        """A datagram read from a shared socket (the listening one in single-port mode, a
        catcher) for a transfer: through :meth:`_received`, and its answer goes out at once."""
        datagram = self._received(conn, conn.transfer.receive(data, now))
        if datagram is not None:
            self._send(conn, [datagram])
            self._after(conn)  # a send that cannot succeed has failed the transfer

    def _stranger(self, sock: socket.socket, data: bytes, addr: Address) -> None:
        """A datagram on a transfer's port from another peer: the core says what to answer."""
        if self.debug:
            self.emit(logging.DEBUG, "tftp.unknown_tid", {"source": _peer(addr)})
        reply = self.core.stranger(data)
        if reply is not None:
            with contextlib.suppress(OSError):
                sock.sendto(reply, addr)

    def _received(self, conn: _Conn, burst: Burst) -> Datagram | None:
        """The one step after the core's answer to a datagram from a transfer's client
        (``Transfer.receive``; poll, the lane, _feed).

        A burst of more than one datagram (a window) goes out here, then :meth:`_after`
        ends a finished transfer or notes its deadline. A single datagram (the next DATA of
        a lock-step transfer) is returned instead, for the caller to write when it suits it:
        poll after all the round's reads, the lane at once on its descriptor; a failed write
        is the caller's to hand to :meth:`_send_failed` and :meth:`_after`.

        poll and the lane skip this call in the hot case, where it would only return that
        DATA: a running transfer (it has a deadline: None once finished) whose deadline is
        no earlier than the pump's, so there is nothing to note. The call would cost about
        450 instructions a block, 4% of the pump's own (bench/tftp_pump under valgrind).
        """
        datagram = None
        if len(burst) == 1:
            datagram = burst[0]
        elif burst:
            self._send(conn, burst)
        self._after(conn)
        return None if conn.transfer.finished else datagram

    def _after(self, conn: _Conn) -> None:
        """After a transfer has sent (or failed to): end it if finished, else note its
        deadline (the pump keeps the earliest)."""
        transfer = conn.transfer
        if transfer.finished:
            self._end(conn)
            return
        deadline = transfer.deadline
        if deadline is not None and deadline < self.next_deadline:
            self.next_deadline = deadline

    # -- sending --------------------------------------------------------------------------

    def _send_raw(self, datagram: bytes, addr: Address, local_ip: str | None = None) -> None:
        """An answer from the listening socket, from the address the request was sent to."""
        try:
            if self.wildcard and local_ip and local_ip != "0.0.0.0":
                self.listen.sendmsg([datagram], send_from(socket.inet_aton(local_ip)), 0, addr)
            else:
                self.listen.sendto(datagram, addr)
        except OSError as exc:
            if self.debug:
                self.emit(
                    logging.DEBUG, "tftp.send_error", {"client": _peer(addr), "error": str(exc)}
                )

    def _send(self, conn: _Conn, burst: Burst) -> None:
        """Send a burst; a lasting failure ends the transfer (the timer would not help)."""
        try:
            if len(burst) == 1:
                self._sendmsg(conn, burst[0], conn.cmsg)
            elif self.gso:
                self._send_gso(conn, burst)
            else:
                for datagram in burst:
                    self._sendmsg(conn, datagram, conn.cmsg)
        except OSError as exc:
            self._send_failed(conn, exc)

    @staticmethod
    def _sendmsg(
        conn: _Conn, buffers: Sequence[Buffer], cmsg: list[tuple[int, int, bytes]]
    ) -> None:
        if conn.connected:
            conn.sock.sendmsg(buffers, cmsg)
        else:
            conn.sock.sendmsg(buffers, cmsg, 0, conn.addr)

    def _send_failed(self, conn: _Conn, exc: OSError) -> None:
        if isinstance(exc, BlockingIOError | InterruptedError) or exc.errno in _TRANSIENT_ERRNOS:
            return  # send buffer full, a firewall drop...: the timer retries, then gives up
        reason = "file changed on disk" if exc.errno == errno.EFAULT else exc.strerror
        conn.transfer.fail(Outcome.ERROR, f"send failed: {reason}", time.monotonic())

    def _send_gso(self, conn: _Conn, burst: Burst) -> None:
        first = burst[0]
        seg = sum(len(b) for b in first)
        per_call = min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // seg)
        cmsg = conn.cmsg
        if per_call < 2:
            for datagram in burst:
                self._sendmsg(conn, datagram, cmsg)
            return
        anc = [*cmsg, (SOL_UDP, UDP_SEGMENT, struct.pack("=H", seg))]
        for i in range(0, len(burst), per_call):
            chunk = burst[i : i + per_call]
            if len(chunk) == 1:
                self._sendmsg(conn, chunk[0], cmsg)
                continue
            buffers = [buf for datagram in chunk for buf in datagram]
            try:
                self._sendmsg(conn, buffers, anc)
                self.gso_sends += 1
            except OSError as exc:
                if exc.errno not in _GSO_ERRNOS:
                    raise
                self.gso = False
                self.emit(logging.INFO, "tftp.gso_off", {"error": str(exc)})
                for datagram in burst[i:]:
                    self._sendmsg(conn, datagram, cmsg)
                return

    # -- timers and the end of a transfer -------------------------------------------------

    def _timers(self, now: float) -> None:
        for transfer, burst in self.core.on_timer(now):
            conn = self.conns.get(transfer.client)
            if conn is None or conn.transfer is not transfer:
                transfer.fail(Outcome.ERROR, "lost its socket", now)
                self.core.finish(transfer)
                continue
            if burst:
                self._send(conn, burst)
            if transfer.finished:
                self._end(conn)
        nxt = self.core.next_timer()
        self.next_deadline = float("inf") if nxt is None else nxt

    def _end(self, conn: _Conn) -> None:
        transfer = conn.transfer
        if self.conns.get(conn.addr) is conn:
            del self.conns[conn.addr]
        if conn.own_socket:
            if self.by_fd.pop(conn.fd, None) is not None:
                with contextlib.suppress(OSError, ValueError):
                    self.ep.unregister(conn.fd)
            conn.sock.close()
            self.ports.discard(conn.port)
            if conn.catcher is not None:
                fd = conn.catcher.fileno()
                if self.catchers.pop(fd, None) is not None:
                    with contextlib.suppress(OSError, ValueError):
                        self.ep.unregister(fd)
                conn.catcher.close()
        self.core.finish(transfer)
        outcome = transfer.outcome or Outcome.ERROR
        self.emit(outcome.level, outcome.event, transfer.summary())

    def shutdown(self, now: float) -> None:
        """End every transfer with ERROR 0 to its client; close the epoll."""
        for transfer, burst in self.core.close_all(now):
            conn = self.conns.get(transfer.client)
            if conn is None:
                self.core.finish(transfer)
                continue
            with contextlib.suppress(OSError):
                self._send(conn, burst)
            self._end(conn)
        self.ep.close()
        os.close(self.wake_fd)


class TftpEndpoint:
    """The TFTP server on one address: port 69 (or ``config.port``) and the transfers' TIDs."""

    def __init__(
        self,
        config: TftpConfig,
        host: str,
        *,
        interface: str | None = None,
        mac_lookup: Callable[[str], str | None] | None = None,
        rendered: Rendered | None = None,
        threaded: bool = True,
        lane: bool = True,
        gso: bool = True,
        publish: Callable[[list[Event]], None] | None = None,
    ) -> None:
        self.config = config
        self.host = host
        self.publish = publish
        """Where transfer events go (the app's EventBus); None: straight to the log."""
        self.interface = interface
        self.mac_lookup = mac_lookup
        self.threaded = threaded
        """The pump on a thread of its own (default) or inside the event loop."""
        self._lane = lane and threaded
        self._gso = gso
        self.files = FileStore.for_config(config)
        self.core = TftpServer(config, self.files, mac_lookup=mac_lookup, rendered=rendered)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._pump: _Pump | None = None
        self._thread: threading.Thread | None = None
        self._stop = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._port = 0
        self.errors = 0
        """Unexpected exceptions caught on the data path (each logged as tftp.bug)."""

    # -- public ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port actually bound (``config.port`` may be 0 in tests)."""
        return self._port

    @property
    def stats(self) -> TftpStats:
        return self.core.stats()

    @property
    def gso(self) -> bool:
        """Whether windows still go out with UDP GSO (turned off if the kernel refused it)."""
        return self._pump.gso if self._pump is not None else True

    @property
    def gso_sends(self) -> int:
        return self._pump.gso_sends if self._pump is not None else 0

    async def start(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        _raise_fd_limit(2 * self.config.max_transfers + 256)  # two sockets per transfer
        wildcard = self.host in ("", "0.0.0.0")
        sock = open_udp_socket(
            self.host,
            self.config.port,
            self.interface,
            reuse=self.config.port != 0,
            pktinfo=wildcard,
            rcvbuf=RCVBUF,
        )
        self._sock = sock
        self._port = sock.getsockname()[1]
        emit = self._emit_threadsafe if self.threaded else self._log
        self._pump = pump = _Pump(
            self.config,
            self.host,
            self.interface,
            sock,
            self.core,
            emit,
            _debug_enabled(),
            lane=self._lane,
            gso=self._gso,
        )
        if self.threaded:
            self._stop = False
            self._thread = threading.Thread(
                target=self._run, name=f"pxed-tftp-{self._port}", daemon=True
            )
            self._thread.start()
        else:
            loop.add_reader(pump.ep.fileno(), self._on_ready)
        self._log(
            logging.INFO,
            "tftp.listening",
            {
                "host": self.host,
                "port": self._port,
                "interface": self.interface,
                "root": self.files.root,
                "single_port": self.config.single_port,
                "threaded": self.threaded,
            },
        )

    @property
    def active(self) -> int:
        """Transfers running now."""
        return len(self.core.transfers)

    def reconfigure(self, config: TftpConfig) -> None:
        """Serve new requests by ``config`` (a reload) on the same sockets; running transfers
        finish as they started. The caller keeps ``port``, ``single_port`` and
        ``port_range`` as they were (those need new sockets: a new endpoint)."""
        files = FileStore.for_config(config)
        # The old store is not closed: running transfers hold its mappings and release
        # them as they end.
        self.config = config
        self.files = files
        pump = self._pump
        if pump is None:
            self.core.reconfigure(config, files)
            return

        def apply() -> None:
            pump.config = config
            self.core.reconfigure(config, files)

        pump.pending.append(apply)
        if self.threaded:
            pump.wake()
        else:
            pump.run_pending()

    async def drain(self, grace: float, poll: float = 0.05) -> int:
        """Refuse new requests (ERROR 0) and wait up to ``grace`` seconds for the running
        transfers to end; returns how many still run (close() ends them)."""
        self.core.refuse_new("server shutting down")  # one attribute: read by the pump as is
        deadline = time.monotonic() + grace
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(poll)
        return self.active

    async def close(self) -> None:
        """End every transfer (ERROR 0 to its client) and close the sockets."""
        pump = self._pump
        if pump is None:
            return
        if self._thread is not None:
            self._stop = True
            pump.wake()
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None
            # The pump handed its last log lines (one per ended transfer) to this loop.
            await asyncio.sleep(0)
        else:
            if self._loop is not None:
                self._loop.remove_reader(pump.ep.fileno())
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            pump.shutdown(time.monotonic())
        self._pump = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.files.close()

    # -- the pump's thread ----------------------------------------------------------------

    def _run(self) -> None:
        pump = self._pump
        assert pump is not None
        stopping = self._stopping
        quiet = False  # the lane's client went quiet: wait in epoll until something comes
        while not self._stop:
            try:
                conn = None if quiet else pump.lane()
                if conn is not None:
                    quiet = not pump.run_lane(conn, stopping)
                    pump.poll(0)
                else:
                    pump.poll(pump.timeout())
                    quiet = False
            except Exception as exc:  # a bug costs a round, not the server
                self._bug(exc)
        try:
            pump.shutdown(time.monotonic())
        except Exception as exc:
            self._bug(exc)

    def _stopping(self) -> bool:
        return self._stop

    def _bug(self, exc: Exception) -> None:
        self.errors += 1
        self._emit_threadsafe(logging.ERROR, "tftp.bug", {"error": repr(exc)})
        time.sleep(0.001)

    # -- the pump inside the loop ---------------------------------------------------------

    def _on_ready(self) -> None:
        pump = self._pump
        if pump is None:
            return
        try:
            pump.poll(0)
        except Exception as exc:
            self.errors += 1
            self._log(logging.ERROR, "tftp.bug", {"error": repr(exc)})
        self._arm()

    def _arm(self) -> None:
        pump = self._pump
        if pump is None or self._loop is None:
            return
        when = pump.next_deadline
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when != float("inf"):
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self._on_ready()

    # -- logging (always on the loop thread) ----------------------------------------------

    def _emit_threadsafe(self, level: int, event: str, fields: dict[str, Any]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._log, level, event, fields)

    def _log(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if self.mac_lookup is not None and event in TRANSFER_EVENTS:
            client = str(fields.get("client", "")).rpartition(":")[0]
            try:
                mac = self.mac_lookup(client)
            except Exception:
                mac = None
            if mac:
                fields["mac"] = mac
        if self.publish is not None:
            self.publish([Notice(event, level, fields)])
        else:
            log.log(level, event, **fields)


def _debug_enabled() -> bool:
    try:
        return bool(log.bind().is_enabled_for(logging.DEBUG))
    except Exception:
        return True


def _raise_fd_limit(wanted: int) -> None:
    """One socket per transfer: make room for max_transfers of them if the hard limit allows."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
