"""A calibration TFTP server: pxed's data path with no protocol core, on epoll or io_uring.

    python bench/spikes/tftp_calibration.py ROOT HOST MODE    # MODE: epoll or uring

Not part of pxed: a spike kept so that its figures in bench/RESULTS.md can be reproduced
(``bench/tftp --servers calib-epoll,calib-uring,pxed,dnsmasq --cases storm-512``). It
answers read requests lock-step (blksize and tsize in an OACK, files mmapped), one connected
socket per transfer, and nothing else: no retransmission, no limits, no logging, no error
handling beyond what a storm of healthy curls needs.

- ``epoll``: one epoll round, ``os.read`` of every ready ACK, then ``os.writev`` of every
  DATA (header + mmap slice): pxed's pump without its core.
- ``uring``: io_uring through ctypes (no C): a RECV always armed on every transfer socket,
  and per round one ``io_uring_enter`` that submits the round's WRITEVs and RECVs and waits
  for completions; SQEs are packed with ``struct`` into the mapped rings. Variants
  ``epollc`` (a second socket on each transfer's port, as pxed's ERROR 5 catcher) and
  ``epolld`` (SO_BINDTODEVICE pxts0, as pxed with ``--iface``) measure those two choices.
"""
import ctypes
import mmap
import os
import select
import socket
import struct
import sys

ROOT, HOST, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
files: dict[str, mmap.mmap] = {}
CATCHERS: list[socket.socket] = []


def open_file(name: str) -> mmap.mmap:
    m = files.get(name)
    if m is None:
        with open(os.path.join(ROOT, name.lstrip("/")), "rb") as f:
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        files[name] = m
    return m


def parse_rrq(data: bytes):
    parts = data[2:].split(b"\0")
    name = parts[0].decode()
    opts = {}
    i = 2
    while i + 1 < len(parts):
        if parts[i]:
            opts[parts[i].decode().lower()] = parts[i + 1].decode()
        i += 2
    return name, opts


class T:
    __slots__ = ("acked", "bs", "fd", "m", "mv", "nblocks", "size", "sock")


def start(data: bytes, client) -> T | None:
    if len(data) < 4 or data[1] != 1:
        return None
    name, opts = parse_rrq(data)
    m = open_file(name)
    t = T()
    t.m = m
    t.mv = memoryview(m)
    t.size = len(m)
    t.bs = min(int(opts.get("blksize", 512)), 1468)
    t.nblocks = t.size // t.bs + 1
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if MODE.endswith("d"):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"pxts0\0")
    if MODE.endswith("c"):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        c.bind((HOST, 0))
        c.setblocking(False)
        CATCHERS.append(c)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, c.getsockname()[1]))
    else:
        s.bind((HOST, 0))
    s.connect(client)
    s.setblocking(False)
    t.sock = s
    t.fd = s.fileno()
    oack = []
    if "blksize" in opts:
        oack += [b"blksize", str(t.bs).encode()]
    if "tsize" in opts:
        oack += [b"tsize", str(t.size).encode()]
    if oack:
        s.send(b"\0\6" + b"\0".join(oack) + b"\0")
        t.acked = -1  # waiting for ACK 0
    else:
        t.bs = 512
        t.nblocks = t.size // 512 + 1
        t.acked = 0
        s.send(struct.pack("!HH", 3, 1) + bytes(t.mv[0:512]))
    return t


def next_block(t: T, data) -> int | None:
    """The block to send after this ACK, or None (duplicate, or done)."""
    if len(data) < 4 or data[1] != 4:
        return None
    blk = (data[2] << 8) | data[3]
    want = 0 if t.acked < 0 else (t.acked + 1) & 0xFFFF
    if t.acked < 0:
        if blk != 0:
            return None
        t.acked = 0
        return 1
    if blk != want:
        return None
    t.acked += 1
    if t.acked >= t.nblocks:
        return -1
    return t.acked + 1


listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listen.bind((HOST, 69))
listen.setblocking(False)
HDR = struct.Struct("!HH")


def run_epoll() -> None:
    ep = select.epoll()
    ep.register(listen.fileno(), select.EPOLLIN)
    by_fd: dict[int, T] = {}
    read, writev = os.read, os.writev
    while True:
        events = ep.poll(1.0, 256)
        sends = []
        new = False
        for fd, _ in events:
            t = by_fd.get(fd)
            if t is None:
                new = True
                continue
            data = read(fd, 2048)
            b = next_block(t, data)
            if b is None:
                continue
            if b < 0:
                ep.unregister(fd)
                del by_fd[fd]
                t.sock.close()
                continue
            off = (b - 1) * t.bs
            sends.append((fd, (HDR.pack(3, b & 0xFFFF), t.mv[off : off + t.bs])))
        for fd, d in sends:
            writev(fd, d)
        if new:
            while True:
                try:
                    data, client = listen.recvfrom(2048)
                except BlockingIOError:
                    break
                t = start(data, client)
                if t is not None:
                    by_fd[t.fd] = t
                    ep.register(t.fd, select.EPOLLIN)


SQE = struct.Struct("=BBHiQQIIQHHiQQ")
CQE = struct.Struct("=QiI")
U32 = struct.Struct("=I")
OP_WRITEV, OP_POLL_ADD, OP_RECV = 2, 6, 27
MAXT = 4096


class Ring:
    def __init__(self, entries: int) -> None:
        p = ctypes.create_string_buffer(120)
        # cq_entries: ask for more via IORING_SETUP_CQSIZE (flag 8)
        struct.pack_into("=I", p, 8, 8)
        struct.pack_into("=I", p, 4, entries * 4)
        fd = libc.syscall(425, entries, p)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "io_uring_setup")
        self.fd = fd
        raw = p.raw
        self.sq_entries, self.cq_entries = struct.unpack_from("=II", raw, 0)
        sq = struct.unpack_from("=8IQ", raw, 40)
        cq = struct.unpack_from("=8IQ", raw, 80)
        self.sq_tail_off, self.sq_mask = sq[1], None
        size = max(sq[6] + self.sq_entries * 4, cq[5] + self.cq_entries * 16)
        self.ring = mmap.mmap(fd, size, offset=0)
        self.sq_mask = U32.unpack_from(self.ring, sq[2])[0]
        self.cq_mask = U32.unpack_from(self.ring, cq[2])[0]
        self.cq_head_off, self.cq_tail_off, self.cqes = cq[0], cq[1], cq[5]
        for i in range(self.sq_entries):
            U32.pack_into(self.ring, sq[6] + 4 * i, i)
        self.sqes = mmap.mmap(fd, self.sq_entries * 64, offset=0x10000000)
        self.tail = U32.unpack_from(self.ring, sq[1])[0]
        self.head = U32.unpack_from(self.ring, cq[0])[0]
        self.pending = 0

    def sqe(self, op: int, fd: int, addr: int, length: int, op_flags: int, ud: int) -> None:
        if self.pending >= self.sq_entries - 1:
            self.enter(0)
        SQE.pack_into(self.sqes, (self.tail & self.sq_mask) * 64, op, 0, 0, fd, 0, addr,
                      length, op_flags, ud, 0, 0, 0, 0, 0)
        self.tail = (self.tail + 1) & 0xFFFFFFFF
        self.pending += 1

    def enter(self, min_complete: int) -> None:
        U32.pack_into(self.ring, self.sq_tail_off, self.tail)
        r = libc.syscall(426, self.fd, self.pending, min_complete, 1, None, 0)
        if r < 0 and ctypes.get_errno() not in (4, 62):
            raise OSError(ctypes.get_errno(), "io_uring_enter")
        self.pending = 0

    def reap(self):
        ring = self.ring
        head = self.head
        tail = U32.unpack_from(ring, self.cq_tail_off)[0]
        out = []
        base, mask = self.cqes, self.cq_mask
        while head != tail:
            out.append(CQE.unpack_from(ring, base + (head & mask) * 16))
            head = (head + 1) & 0xFFFFFFFF
        self.head = head
        U32.pack_into(ring, self.cq_head_off, head)
        return out


def run_uring() -> None:
    ring = Ring(1024)
    recvbuf = ctypes.create_string_buffer(MAXT * 16)
    recv_addr = ctypes.addressof(recvbuf)
    rmv = memoryview(recvbuf).cast("B")
    hdrbuf = ctypes.create_string_buffer(MAXT * 4)
    hdr_addr = ctypes.addressof(hdrbuf)
    iovbuf = ctypes.create_string_buffer(MAXT * 32)
    iov_addr = ctypes.addressof(iovbuf)
    file_addr: dict[int, int] = {}
    slots: dict[int, T] = {}
    free = list(range(MAXT - 1, 0, -1))
    lfd = listen.fileno()
    ring.sqe(OP_POLL_ADD, lfd, 0, 0, select.POLLIN, 0)
    while True:
        ring.enter(1)
        for ud, res, _flags in ring.reap():
            kind = ud & 3
            if kind == 1:  # writev done
                continue
            if ud == 0:  # listen readable
                while True:
                    try:
                        data, client = listen.recvfrom(2048)
                    except BlockingIOError:
                        break
                    i = free.pop()
                    t = start(data, client)
                    if t is None:
                        free.append(i)
                        continue
                    slots[i] = t
                    key = id(t.m)
                    if key not in file_addr:
                        file_addr[key] = ctypes.addressof(ctypes.c_char.from_buffer(t.m))
                    ring.sqe(OP_RECV, t.fd, recv_addr + 16 * i, 16, 0, i << 2)
                ring.sqe(OP_POLL_ADD, lfd, 0, 0, select.POLLIN, 0)
                continue
            i = ud >> 2
            t = slots.get(i)
            if t is None:
                continue
            if res < 4:
                ring.sqe(OP_RECV, t.fd, recv_addr + 16 * i, 16, 0, i << 2)
                continue
            b = next_block(t, rmv[16 * i : 16 * i + res])
            if b is None:
                ring.sqe(OP_RECV, t.fd, recv_addr + 16 * i, 16, 0, i << 2)
                continue
            if b < 0:
                del slots[i]
                t.sock.close()
                free.append(i)
                continue
            off = (b - 1) * t.bs
            n = min(t.bs, t.size - off)
            HDR.pack_into(hdrbuf, 4 * i, 3, b & 0xFFFF)
            struct.pack_into("=QQQQ", iovbuf, 32 * i, hdr_addr + 4 * i, 4,
                             file_addr[id(t.m)] + off, n)
            ring.sqe(OP_WRITEV, t.fd, iov_addr + 32 * i, 2, 0, (i << 2) | 1)
            ring.sqe(OP_RECV, t.fd, recv_addr + 16 * i, 16, 0, i << 2)


print("ready", flush=True)
run_uring() if MODE == "uring" else run_epoll()
