"""The TFTP endpoint in-process on a loopback port it opened: tftpy and a hand-made client.

No namespaces needed (no root): the server binds 127.0.0.1 port 0 and every datagram goes to
ports this test opened. Both data-path drivers are exercised (the pump on its own thread, and
the pump inside the event loop).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from pxed.config import TftpConfig
from pxed.net.tftp import TftpEndpoint
from pxed.tftp import packet as tp

tftpy = pytest.importorskip("tftpy")
logging.getLogger("tftpy").setLevel(logging.CRITICAL)

HOST = "127.0.0.1"
SIZES = {
    "small.bin": 1000,
    "exact.bin": 512 * 8,
    "exact1468.bin": 1468 * 5,
    "empty.bin": 0,
    "big.bin": 3 * 1024 * 1024 + 17,
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    for name, size in SIZES.items():
        (root / name).write_bytes(os.urandom(size))
    (root / "text.cfg").write_bytes(b"default menu\nlabel x\r\n")
    return root


@pytest.fixture(params=[True, False], ids=["thread", "loop"])
async def server(request: pytest.FixtureRequest, root: Path) -> AsyncIterator[TftpEndpoint]:
    config = TftpConfig(
        root=root,
        port=0,
        max_transfers_per_client=8,
        max_transfers=12,
        default_timeout=0.3,
        retries=2,
    )
    ep = TftpEndpoint(
        config, HOST, threaded=request.param, mac_lookup=lambda ip: "52:54:00:00:00:01"
    )
    await ep.start()
    yield ep
    await ep.close()


class Client:
    """A minimal RFC 1350/2347/7440 client on a blocking socket (run it in a thread)."""

    def __init__(self, port: int, timeout: float = 3.0) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(timeout)
        self.server: tuple[str, int] | None = None

    def close(self) -> None:
        self.sock.close()

    def send_request(self, raw: bytes) -> None:
        self.sock.sendto(raw, (HOST, self.port))

    def recv(self) -> tuple[Any, tuple[str, int]]:
        data, addr = self.sock.recvfrom(70000)
        return tp.decode(data), addr

    def ack(self, block: int) -> None:
        assert self.server is not None
        self.sock.sendto(tp.encode_ack(block), self.server)

    def get(self, name: str, **options: int) -> tuple[bytes, dict[str, str]]:
        """Fetch a file (windowed when asked); returns content and the OACK."""
        opts = tuple((k, str(v)) for k, v in options.items())
        self.send_request(tp.encode(tp.ReadRequest(name, "octet", opts)))
        pkt, self.server = self.recv()
        oack: dict[str, str] = {}
        blksize, window = 512, 1
        out = bytearray()
        expected = 1
        if isinstance(pkt, tp.OptionAck):
            oack = dict(pkt.options)
            blksize = int(oack.get("blksize", 512))
            window = int(oack.get("windowsize", 1))
            self.ack(0)
            pkt, _ = self.recv()
        seen = 0
        while True:
            if isinstance(pkt, tp.Error):
                raise RuntimeError(f"ERROR {pkt.code}: {pkt.message}")
            assert isinstance(pkt, tp.Data)
            if pkt.block == expected & 0xFFFF:
                out += pkt.payload
                expected += 1
                seen += 1
                if len(pkt.payload) < blksize:
                    self.ack(pkt.block)
                    return bytes(out), oack
                if seen == window:
                    seen = 0
                    self.ack(pkt.block)
            pkt, _ = self.recv()


async def tftpy_get(port: int, name: str, out: Path, **options: int) -> bytes:
    client = tftpy.TftpClient(HOST, port, options=dict(options))
    await asyncio.to_thread(client.download, name, str(out), timeout=3)
    return out.read_bytes()


async def wait_idle(ep: TftpEndpoint, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if ep.stats.active == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"transfers still running: {ep.stats}")


@pytest.mark.parametrize("name", list(SIZES))
@pytest.mark.parametrize(
    "options",
    [{}, {"blksize": 1468}, {"blksize": 1468, "tsize": 0}],
    ids=["plain", "blksize", "tsize"],
)
async def test_tftpy_fetches_intact(
    server: TftpEndpoint, root: Path, tmp_path: Path, name: str, options: dict[str, int]
) -> None:
    got = await tftpy_get(server.port, name, tmp_path / "out", **options)
    assert got == (root / name).read_bytes()
    await wait_idle(server)
    assert server.stats.done >= 1 and server.stats.failed == 0


@pytest.mark.parametrize("window", [2, 16, 64])
async def test_windowed_transfer_uses_gso(server: TftpEndpoint, root: Path, window: int) -> None:
    client = Client(server.port)
    try:
        data, oack = await asyncio.to_thread(
            client.get, "big.bin", blksize=1468, windowsize=window, tsize=0
        )
    finally:
        client.close()
    assert data == (root / "big.bin").read_bytes()
    assert oack == {"blksize": "1468", "windowsize": str(window), "tsize": str(SIZES["big.bin"])}
    await wait_idle(server)
    if server.gso:
        assert server.gso_sends > 0


async def test_blksize_capped_by_loopback_mtu_and_more(server: TftpEndpoint, root: Path) -> None:
    client = Client(server.port)
    try:
        data, oack = await asyncio.to_thread(client.get, "big.bin", blksize=65464, windowsize=4)
    finally:
        client.close()
    assert data == (root / "big.bin").read_bytes()
    assert int(oack["blksize"]) <= 65464 and int(oack["windowsize"]) <= 4


async def test_netascii(server: TftpEndpoint) -> None:
    client = Client(server.port)
    try:

        def run() -> bytes:
            client.send_request(tp.encode(tp.ReadRequest("text.cfg", "netascii")))
            pkt, client.server = client.recv()
            assert isinstance(pkt, tp.Data)
            client.ack(1)
            return pkt.payload

        payload = await asyncio.to_thread(run)
    finally:
        client.close()
    assert payload == b"default menu\r\nlabel x\r\0\r\n"


async def test_refusals(server: TftpEndpoint) -> None:
    client = Client(server.port)
    try:

        def ask(raw: bytes) -> Any:
            client.send_request(raw)
            return client.recv()[0]

        assert await asyncio.to_thread(ask, tp.encode(tp.ReadRequest("nope", "octet"))) == tp.Error(
            1, "file not found"
        )
        wrq = await asyncio.to_thread(ask, b"\x00\x02up.bin\x00octet\x00")
        assert isinstance(wrq, tp.Error) and wrq.code == 2
        bad = await asyncio.to_thread(ask, b"\x00\x01../../etc/passwd\x00octet\x00")
        assert isinstance(bad, tp.Error) and bad.code == 2
        opt = await asyncio.to_thread(ask, b"\x00\x01small.bin\x00octet\x00blksize\x007\x00")
        assert isinstance(opt, tp.Error) and opt.code == 8
    finally:
        client.close()
    assert server.stats.active == 0


async def test_hostile_datagrams_then_a_normal_fetch(
    server: TftpEndpoint, root: Path, tmp_path: Path
) -> None:
    hostile = [
        b"",
        b"\x00",
        b"\x00\x01",
        b"\x00\x04",
        b"\x00\x04\x00",
        b"\x00\x05\x00",
        b"\x00\x01noterm",
        b"\x00\x01" + b"a" * 600 + b"\x00octet\x00",
        b"\x00\x01small.bin\x00octet\x00blksize\x00",
        b"\x00\x01small.bin\x00octet\x00blksize\x00512\x00blksize\x00512\x00",
        b"\x00\x01small.bin\x00octet\x00blksize\x000\x00",
        b"\x00\x01small.bin\x00octet\x00blksize\x0065465\x00",
        b"\x00\x01small.bin\x00octet\x00blksize\x00abc\x00",
        b"\x00\x01small.bin\x00octet\x00windowsize\x000\x00",
        b"\x00\x01small.bin\x00octet\x00windowsize\x0065536\x00",
        b"\xff" * 3000,
    ]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    for raw in hostile:
        sock.sendto(raw, (HOST, server.port))
    sock.close()
    await asyncio.sleep(0.1)
    got = await tftpy_get(server.port, "small.bin", tmp_path / "out")
    assert got == (root / "small.bin").read_bytes()
    assert server.stats.malformed + server.stats.refused >= len(hostile) - 4
    assert server.errors == 0


async def test_unknown_port_gets_error_5_and_transfer_goes_on(
    server: TftpEndpoint, root: Path
) -> None:
    client = Client(server.port)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind((HOST, 0))
    stranger.settimeout(3)
    try:

        def run() -> tuple[Any, bytes]:
            client.send_request(tp.encode(tp.ReadRequest("exact.bin", "octet")))
            pkt, client.server = client.recv()
            assert isinstance(pkt, tp.Data) and pkt.block == 1
            assert client.server is not None
            stranger.sendto(tp.encode_ack(1), client.server)
            err = tp.decode(stranger.recvfrom(2048)[0])
            out = pkt.payload
            block = 1
            while True:
                client.ack(block)
                pkt, _ = client.recv()
                assert isinstance(pkt, tp.Data)
                out += pkt.payload
                block += 1
                if len(pkt.payload) < 512:
                    client.ack(block)
                    return err, out

        err, content = await asyncio.to_thread(run)
    finally:
        client.close()
        stranger.close()
    assert isinstance(err, tp.Error) and err.code == 5
    assert content == (root / "exact.bin").read_bytes()


async def test_sorcerers_apprentice_duplicate_acks_send_nothing(server: TftpEndpoint) -> None:
    with structlog.testing.capture_logs() as logs:
        client = Client(server.port, timeout=0.15)
        try:

            def run() -> list[int]:
                client.send_request(tp.encode(tp.ReadRequest("exact.bin", "octet")))
                pkt, client.server = client.recv()
                client.ack(1)
                pkt, _ = client.recv()
                assert isinstance(pkt, tp.Data) and pkt.block == 2
                for _ in range(5):  # late duplicates of ACK 1
                    client.ack(1)
                blocks = []
                try:
                    while True:
                        pkt, _ = client.recv()
                        blocks.append(pkt.block)
                except TimeoutError:
                    pass
                # Finish the transfer normally.
                block = 2
                while True:
                    client.ack(block)
                    pkt, _ = client.recv()
                    block += 1
                    if len(pkt.payload) < 512:
                        client.ack(block)
                        return blocks

            extra = await asyncio.to_thread(run)
        finally:
            client.close()
        await wait_idle(server)
        await asyncio.sleep(0.05)
    done = [e for e in logs if e["event"] == "tftp.done"]
    assert len(done) == 1 and done[0]["duplicate_acks"] >= 5
    # Every extra copy of block 2 is one of the timer's retransmissions, none answers a
    # duplicate ACK.
    assert all(b == 2 for b in extra)
    assert len(extra) <= done[0]["retransmissions"]


async def test_retransmits_then_gives_up_and_logs_once(server: TftpEndpoint) -> None:
    with structlog.testing.capture_logs() as logs:
        client = Client(server.port, timeout=0.8)
        try:

            def run() -> int:
                client.send_request(tp.encode(tp.ReadRequest("small.bin", "octet")))
                count = 0
                try:
                    while True:
                        pkt, _ = client.recv()
                        assert isinstance(pkt, tp.Data) and pkt.block == 1
                        count += 1
                except TimeoutError:
                    return count

            copies = await asyncio.to_thread(run)
        finally:
            client.close()
        await wait_idle(server, 20)
        await asyncio.sleep(0.05)
    assert copies >= 2  # the first and at least one retransmission
    failed = [e for e in logs if e["event"] == "tftp.failed"]
    assert len(failed) == 1
    assert failed[0]["outcome"] == "timeout" and failed[0]["retransmissions"] >= 1
    assert failed[0]["mac"] == "52:54:00:00:00:01"


async def test_limits_answer_with_error(server: TftpEndpoint) -> None:
    clients = [Client(server.port) for _ in range(10)]
    try:

        def run() -> list[Any]:
            for c in clients:
                c.send_request(tp.encode(tp.ReadRequest("big.bin", "octet")))
            return [c.recv()[0] for c in clients]

        first = await asyncio.to_thread(run)
    finally:
        for c in clients:
            c.close()
    busy = [p for p in first if isinstance(p, tp.Error)]
    assert len(busy) == 2 and all(p.code == 0 for p in busy)  # 8 per client address
    assert sum(isinstance(p, tp.Data) for p in first) == 8


async def test_close_ends_transfers_with_error(root: Path) -> None:
    ep = TftpEndpoint(TftpConfig(root=root, port=0), HOST)
    await ep.start()
    client = Client(ep.port)
    try:

        def begin() -> None:
            client.send_request(tp.encode(tp.ReadRequest("big.bin", "octet")))
            _, client.server = client.recv()

        await asyncio.to_thread(begin)
        assert ep.stats.active == 1
        with structlog.testing.capture_logs() as logs:
            await ep.close()
        # The transfer's one log line is written by the time close() returns.
        assert [e["outcome"] for e in logs if e["event"] == "tftp.failed"] == ["shutdown"]
        pkt = (await asyncio.to_thread(client.recv))[0]
        while isinstance(pkt, tp.Data):
            pkt = (await asyncio.to_thread(client.recv))[0]
    finally:
        client.close()
    assert pkt == tp.Error(0, "server shutting down")
    assert ep.stats.active == 0 and ep.files.open_files == 0


async def test_file_truncated_under_a_transfer_fails_it_cleanly(
    server: TftpEndpoint, root: Path, tmp_path: Path
) -> None:
    victim = root / "victim.bin"
    victim.write_bytes(os.urandom(1 << 20))
    client = Client(server.port, timeout=1)
    try:

        def run() -> Any:
            client.send_request(tp.encode(tp.ReadRequest("victim.bin", "octet")))
            pkt, client.server = client.recv()
            os.truncate(victim, 0)  # in place, as `cp` over it would
            block = 1
            while isinstance(pkt, tp.Data):
                client.ack(block)
                block += 1
                try:
                    pkt, _ = client.recv()
                except TimeoutError:
                    return None
            return pkt

        await asyncio.to_thread(run)
    finally:
        client.close()
    await wait_idle(server, 20)
    assert server.stats.failed == 1
    # The process is alive and serves the next client.
    got = await tftpy_get(server.port, "small.bin", tmp_path / "out")
    assert got == (root / "small.bin").read_bytes()


async def test_retransmitted_rrq_and_tsize_probe_then_real_request(
    server: TftpEndpoint, root: Path
) -> None:
    """Firmware style: RRQ tsize (sent twice), abort with ERROR 8, then the real fetch."""
    client = Client(server.port)
    try:

        def run() -> bytes:
            probe = tp.encode(tp.ReadRequest("small.bin", "octet", (("tsize", "0"),)))
            client.send_request(probe)
            client.send_request(probe)
            pkt, server_tid = client.recv()
            assert pkt == tp.OptionAck((("tsize", str(SIZES["small.bin"])),))
            client.sock.sendto(tp.encode_error(8, "tsize only"), server_tid)
            # The copy of the probe may have been read after the ERROR ended its transfer
            # (then it started one of its own): answer strays as a client must (ERROR 5).
            client.sock.settimeout(0.2)
            try:
                while True:
                    _, stray = client.sock.recvfrom(2048)
                    client.sock.sendto(tp.encode_error(5, "unknown transfer ID"), stray)
            except TimeoutError:
                pass
            client.sock.settimeout(3)
            data, _ = client.get("small.bin", blksize=1024)
            return data

        data = await asyncio.to_thread(run)
    finally:
        client.close()
    assert data == (root / "small.bin").read_bytes()
    await wait_idle(server)
    assert server.stats.started in (2, 3)
    assert server.stats.done == 1


async def test_ack_and_new_request_in_one_round(server: TftpEndpoint, root: Path) -> None:
    """An ACK and a new RRQ from the same client port, read in one round of the pump.

    The round writes its DATA after reading every ready socket and only then takes new
    requests, which here replace the running transfer and close its socket: the old
    transfer's next block must leave from its own TID and the new transfer's blocks from
    the new one (a descriptor closed and reused within the round would mix them up).
    """
    big = (root / "big.bin").read_bytes()
    small = (root / "small.bin").read_bytes()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(3)
    got = bytearray()
    try:
        sock.sendto(tp.encode(tp.ReadRequest("big.bin", "octet", ())), (HOST, server.port))
        data, old_tid = await asyncio.to_thread(sock.recvfrom, 70000)
        assert tp.decode(data) == tp.Data(1, big[:512])
        # Both leave before the event loop runs again: the loop driver's pump reads them in
        # one round (the thread's pump usually does too).
        sock.sendto(tp.encode_ack(1), old_tid)
        sock.sendto(tp.encode(tp.ReadRequest("small.bin", "octet", ())), (HOST, server.port))
        new_tid: tuple[str, int] | None = None
        block = 1
        while True:
            data, tid = await asyncio.to_thread(sock.recvfrom, 70000)
            pkt = tp.decode(data)
            if tid == old_tid:
                assert pkt == tp.Data(2, big[512:1024])  # read in the same round, nothing more
                continue
            new_tid = new_tid or tid
            assert tid == new_tid
            assert pkt == tp.Data(block, small[(block - 1) * 512 : block * 512])
            got += pkt.payload
            sock.sendto(tp.encode_ack(block), tid)
            if len(pkt.payload) < 512:
                break
            block += 1
    finally:
        sock.close()
    assert bytes(got) == small
    await wait_idle(server)
    assert server.stats.done == 1


@pytest.mark.parametrize("threaded", [True, False], ids=["thread", "loop"])
async def test_single_port_mode(root: Path, tmp_path: Path, threaded: bool) -> None:
    ep = TftpEndpoint(TftpConfig(root=root, port=0, single_port=True), HOST, threaded=threaded)
    await ep.start()
    try:
        client = Client(ep.port)
        try:
            data, _ = await asyncio.to_thread(client.get, "big.bin", blksize=1468, windowsize=8)
            assert client.server == (HOST, ep.port)  # served from the listening port
        finally:
            client.close()
        assert data == (root / "big.bin").read_bytes()
        got = await asyncio.gather(
            *(tftpy_get(ep.port, "exact.bin", tmp_path / f"o{i}") for i in range(4))
        )
        assert all(g == (root / "exact.bin").read_bytes() for g in got)
    finally:
        await ep.close()


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that are free now."""
    for base in range(41000, 60000, 97):
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((HOST, port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base
    raise AssertionError("no free ports")


@pytest.mark.parametrize("threaded", [True, False], ids=["thread", "loop"])
async def test_port_range(root: Path, threaded: bool) -> None:
    """Transfers are served from port_range only; a port another program holds is skipped;
    when every port is taken the next client gets an ERROR; a freed port serves again."""
    base = free_ports(4)
    config = TftpConfig(root=root, port=0, port_range=(base, base + 3), default_timeout=5.0)
    ep = TftpEndpoint(config, HOST, threaded=threaded)
    foreign = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    foreign.bind((HOST, base + 1))  # another program's socket, without SO_REUSEADDR
    await ep.start()
    clients = [Client(ep.port) for _ in range(4)]
    try:

        def begin() -> list[tuple[Any, tuple[str, int]]]:
            answers = []
            for c in clients:  # one at a time: which one is refused is then known
                c.send_request(tp.encode(tp.ReadRequest("big.bin", "octet")))
                answers.append(c.recv())
            return answers

        with structlog.testing.capture_logs() as logs:
            answers = await asyncio.to_thread(begin)
            for _ in range(100):  # the pump thread's events reach the loop a little later
                refusals = [e for e in logs if e["event"] == "tftp.refused"]
                if refusals:
                    break
                await asyncio.sleep(0.02)
        ports = [addr[1] for _, addr in answers[:3]]
        assert all(isinstance(pkt, tp.Data) for pkt, _ in answers[:3])
        assert sorted(ports) == [base, base + 2, base + 3]
        assert answers[3][0] == tp.Error(0, "server busy")
        (refused,) = refusals
        assert f"no free port in port_range {base}-{base + 3} (all in use)" in refused["reason"]

        # The first client gives up; its port serves the next request.
        first = clients[0]
        first.server = answers[0][1]
        first.sock.sendto(tp.encode_error(0, "bye"), first.server)
        for _ in range(100):
            if ep.stats.active == 2:
                break
            await asyncio.sleep(0.02)
        again = Client(ep.port)
        try:
            data, _ = await asyncio.to_thread(again.get, "small.bin")
            assert again.server == (HOST, ports[0])
        finally:
            again.close()
        assert data == (root / "small.bin").read_bytes()
    finally:
        for c in clients:
            c.close()
        foreign.close()
        await ep.close()


PRIVILEGED_RANGE = r"""
import asyncio, json, socket, sys
import structlog
from pxed.config import TftpConfig
from pxed.net.tftp import TftpEndpoint
from pxed.tftp import packet as tp

async def main() -> None:
    config = TftpConfig(root=sys.argv[1], port=0, port_range=(1020, 1023))
    ep = TftpEndpoint(config, "127.0.0.1", threaded=False)
    await ep.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    with structlog.testing.capture_logs() as logs:
        client.sendto(tp.encode(tp.ReadRequest("small.bin", "octet")), ("127.0.0.1", ep.port))
        answer = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(client, 600), 5)
    await ep.close()
    reasons = [e["reason"] for e in logs if e["event"] == "tftp.refused"]
    print(json.dumps({"answer": repr(tp.decode(answer)), "reasons": reasons}))

asyncio.run(main())
"""


async def test_port_range_of_privileged_ports_without_the_capability(root: Path) -> None:
    """Ports below 1024 without CAP_NET_BIND_SERVICE: the client gets an ERROR and the log
    says why (not "in use"). The server runs without that capability (setpriv)."""
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv: apt-get install util-linux")
    drop = ["setpriv", "--inh-caps=-net_bind_service", "--bounding-set=-net_bind_service"]
    res = await asyncio.to_thread(
        subprocess.run,
        [*drop, sys.executable, "-c", PRIVILEGED_RANGE, str(root)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).parents[2],
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["answer"] == repr(tp.Error(0, "server busy"))
    (reason,) = out["reasons"]
    assert "no free port in port_range 1020-1023 (4 of them privileged" in reason


async def test_stats_and_shared_file(server: TftpEndpoint, tmp_path: Path) -> None:
    results = await asyncio.gather(
        *(tftpy_get(server.port, "big.bin", tmp_path / f"o{i}", blksize=1468) for i in range(6))
    )
    assert len(set(results)) == 1
    await wait_idle(server)
    assert server.files.open_files == 0


def test_pktinfo_layout() -> None:
    from pxed.net.udp import IP_PKTINFO, destination_address, local_address, send_from

    ((level, kind, raw),) = send_from(socket.inet_aton("198.18.0.1"))
    assert (level, kind) == (socket.IPPROTO_IP, IP_PKTINFO)
    assert struct.unpack("=I4s4s", raw)[1] == socket.inet_aton("198.18.0.1")
    received = struct.pack("=I4s4s", 3, socket.inet_aton("198.18.0.1"), b"\xff" * 4)
    assert local_address([(socket.IPPROTO_IP, IP_PKTINFO, received)]) == raw[4:8]
    assert destination_address([(socket.IPPROTO_IP, IP_PKTINFO, received)]) == b"\xff" * 4
    assert local_address([]) == b"" and destination_address([]) == b""


async def wait_active(ep: TftpEndpoint, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.005)):
        if ep.stats.active:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("no transfer started")


async def test_reconfigure_mid_transfer(server: TftpEndpoint, root: Path, tmp_path: Path) -> None:
    """A reload's new [tftp] settings: the running transfer finishes intact from the old
    root, the next request is served from the new one, on the same socket."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "new.bin").write_bytes(b"from the new root")
    client = Client(server.port)
    try:
        fetch = asyncio.create_task(asyncio.to_thread(client.get, "big.bin"))
        await wait_active(server)
        port = server.port
        server.reconfigure(TftpConfig(root=other, port=0, max_transfers=12))
        assert server.stats.active == 1
        got, _ = await fetch
    finally:
        client.close()
    assert got == (root / "big.bin").read_bytes()
    assert server.port == port
    assert await tftpy_get(server.port, "new.bin", tmp_path / "n") == b"from the new root"
    with pytest.raises(tftpy.TftpException):
        await tftpy_get(server.port, "small.bin", tmp_path / "s")  # not in the new root
    await wait_idle(server)


async def test_drain_lets_a_transfer_finish_and_refuses_new_ones(
    server: TftpEndpoint, root: Path, tmp_path: Path
) -> None:
    client = Client(server.port)
    try:
        fetch = asyncio.create_task(asyncio.to_thread(client.get, "big.bin"))
        await wait_active(server)
        draining = asyncio.create_task(server.drain(10.0))
        await asyncio.sleep(0)
        late = Client(server.port)
        try:
            with pytest.raises(RuntimeError, match="server shutting down"):
                await asyncio.to_thread(late.get, "small.bin")
        finally:
            late.close()
        got, _ = await fetch
        assert await draining == 0
    finally:
        client.close()
    assert got == (root / "big.bin").read_bytes()
    assert server.stats.done >= 1
