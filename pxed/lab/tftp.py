"""TFTP servers in the lab (pxed, dnsmasq, atftpd), real clients, and the two-namespace net.

The server runs in a server namespace, real clients (curl, atftp, tftp-hpa, tftpy) in a
client namespace joined to it by a veth; more server namespaces can join the same client
namespace (a benchmark keeps every server on port 69 and interleaves their runs). The tests
(tests/integration/test_tftp_*.py) and bench/tftp both use this, so the benchmark measures
what the tests check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pxed.lab.logs import Event, json_event
from pxed.lab.netns import Lab, Netns
from pxed.lab.process import ServerProcess
from pxed.lab.pxed import PxedProcess
from pxed.lab.tools import have, require

SERVER_IF = "pxts0"
CLIENT_IF = "pxtc0"
SERVER_IP = "198.18.69.1"
CLIENT_IP = "198.18.69.2"
PREFIX = 24


def make_file(path: Path, size: int, seed: int = 0) -> Path:
    """A file of ``size`` pseudo-random octets (fast: one random MiB repeated with a twist)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = bytearray(os.urandom(min(size, 1 << 20) or 1))
    with path.open("wb") as out:
        written = 0
        counter = seed
        while written < size:
            counter += 1
            chunk[0:8] = counter.to_bytes(8, "little")
            piece = chunk[: size - written]
            out.write(piece)
            written += len(piece)
    path.chmod(0o644)  # as root pxed serves only world-readable files, whatever the umask
    return path


def same_file(a: Path, b: Path) -> bool:
    if not b.exists() or a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x = fa.read(1 << 20)
            y = fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


# ---------------------------------------------------------------------------------------------
# Servers


class TftpServerProc(ServerProcess):
    """A TFTP server subprocess in the server namespace, serving ``root``."""

    start_timeout = 20.0

    def __init__(self, ns: Netns, root: Path, workdir: Path, *, quiet: bool = False) -> None:
        super().__init__(ns, workdir, quiet=quiet)
        self.root = root

    def is_ready(self) -> bool:
        return self.ns.udp_port_bound(69)


class PxedTftp(TftpServerProc, PxedProcess):
    """pxed through its CLI: ``pxed --no-dhcp --iface IF --tftp-root DIR``, ``[tftp]`` from
    ``tftp`` (a mapping of that table's keys)."""

    def __init__(
        self,
        ns: Netns,
        root: Path,
        workdir: Path,
        *,
        quiet: bool = False,
        tftp: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(ns, root, workdir, quiet=quiet)
        self.tftp = tftp or {}
        self.config = {"tftp": self.tftp} if self.tftp else None
        self.args = ["--no-dhcp", "--iface", SERVER_IF, "--tftp-root", str(root)]
        self.log_level = "debug"
        self.ready_port = 69

    def is_ready(self) -> bool:
        return PxedProcess.is_ready(self)

    def parse_line(self, line: str) -> Event | None:
        return json_event(line)


class DnsmasqTftp(TftpServerProc):
    name = "dnsmasq"
    tool = "dnsmasq"

    def command(self) -> list[str]:
        return [
            "dnsmasq", "--no-daemon", "--port=0", "--conf-file=/dev/null", "--bind-interfaces",
            f"--interface={SERVER_IF}", "--except-interface=lo", "--enable-tftp",
            f"--tftp-root={self.root}", "--tftp-max=1000", "--user=root", "--group=root",
            "--pid-file=", "--log-facility=-",
        ]  # fmt: skip


class AtftpdTftp(TftpServerProc):
    name = "atftpd"
    tool = "atftpd"
    bind = SERVER_IP

    def command(self) -> list[str]:
        return [
            "atftpd", "--daemon", "--no-fork", "--port", "69", "--bind-address", self.bind,
            "--user", "root", "--group", "root", "--maxthread", "200", "--logfile", "-",
            "--verbose=1", str(self.root),
        ]  # fmt: skip


SERVERS: dict[str, type[TftpServerProc]] = {
    "pxed": PxedTftp,
    "dnsmasq": DnsmasqTftp,
    "atftpd": AtftpdTftp,
}


# ---------------------------------------------------------------------------------------------
# Clients


@dataclass
class Fetch:
    """One client run: what it was asked, what it returned."""

    client: str
    remote: str
    out: Path
    returncode: int
    seconds: float
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def client_command(
    client: str,
    remote: str,
    out: Path,
    *,
    blksize: int | None = None,
    windowsize: int | None = None,
    server: str = SERVER_IP,
    port: int = 69,
) -> list[str]:
    """The command line of one real client fetching ``remote`` into ``out``."""
    if client == "curl":
        cmd = ["curl", "-sS", "--max-time", "600", "-o", str(out)]
        if blksize:
            cmd += ["--tftp-blksize", str(blksize)]
        return [*cmd, f"tftp://{server}:{port}/{remote}"]
    if client == "atftp":
        cmd = ["atftp"]
        if blksize:
            cmd += ["--option", f"blksize {blksize}"]
        if windowsize:
            cmd += ["--option", f"windowsize {windowsize}"]
        return [*cmd, "-g", "-r", remote, "-l", str(out), server, str(port)]
    if client == "tftp-hpa":
        return ["tftp", "-m", "binary", server, str(port), "-c", "get", remote, str(out)]
    if client == "tftpy":
        options: dict[str, int] = {}
        if blksize:
            options["blksize"] = blksize
        code = (
            "import logging, sys, tftpy\n"
            "logging.getLogger('tftpy').setLevel(logging.ERROR)\n"
            f"c = tftpy.TftpClient({server!r}, {port}, options={options!r})\n"
            f"c.download({remote!r}, {str(out)!r}, timeout=5)\n"
        )
        return [sys.executable, "-c", code]
    raise ValueError(client)


def fetch(
    ns: Netns, client: str, remote: str, out: Path, *, timeout: float = 600, **kw: Any
) -> Fetch:
    if out.exists():
        out.unlink()
    cmd = client_command(client, remote, out, **kw)
    start = time.monotonic()
    res = ns.run(*cmd, check=False, timeout=timeout)
    return Fetch(
        client,
        remote,
        out,
        res.returncode,
        time.monotonic() - start,
        (res.stdout + res.stderr)[-2000:],
    )


def fetch_many(
    ns: Netns, cmds: Sequence[list[str]], timeout: float = 600
) -> tuple[list[int], float]:
    """Start every command at once; wait for all. Returns the exit codes and the wall time."""
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            ["ip", "netns", "exec", ns.name, *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for cmd in cmds
    ]
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(1.0, timeout - (time.monotonic() - start))))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(-9)
    return codes, time.monotonic() - start


# ---------------------------------------------------------------------------------------------
# The two-namespace lab


class TftpLab:
    """Server and client namespaces, a veth between them, a TFTP root and a scratch dir.

    ``side_servers`` more server namespaces can be joined to the same client namespace, each
    on its own veth and subnet (198.18.70+i.0/24), so that a benchmark keeps pxed, dnsmasq and
    atftpd running side by side on port 69 and interleaves their runs.
    """

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.server_ns = lab.ns("ts")
        self.client_ns = lab.ns("tc")
        lab.veth(self.server_ns, SERVER_IF, self.client_ns, CLIENT_IF)
        lab.addr(self.server_ns, SERVER_IF, f"{SERVER_IP}/{PREFIX}")
        lab.addr(self.client_ns, CLIENT_IF, f"{CLIENT_IP}/{PREFIX}")
        self.root = lab.tmp / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.out = lab.tmp / "out"
        self.out.mkdir(parents=True, exist_ok=True)
        self.servers: list[TftpServerProc] = []
        self._sides = 0

    def server(self, kind: str = "pxed", **kw: Any) -> TftpServerProc:
        srv = SERVERS[kind](self.server_ns, self.root, self.lab.tmp / f"srv-{kind}", **kw)
        srv.start()
        self.servers.append(srv)
        return srv

    def side_server(self, kind: str, **kw: Any) -> tuple[TftpServerProc, str]:
        """Another server in a namespace of its own; returns it and the address to fetch from."""
        i = self._sides
        self._sides += 1
        ns = self.lab.ns(f"s{i}")
        client_if = f"pxtc{i + 1}"
        self.lab.veth(ns, SERVER_IF, self.client_ns, client_if)
        server_ip = f"198.18.{70 + i}.1"
        self.lab.addr(ns, SERVER_IF, f"{server_ip}/{PREFIX}")
        self.lab.addr(self.client_ns, client_if, f"198.18.{70 + i}.2/{PREFIX}")
        srv = SERVERS[kind](ns, self.root, self.lab.tmp / f"srv-{kind}-{i}", **kw)
        if isinstance(srv, AtftpdTftp):
            srv.bind = server_ip
        srv.start()
        self.servers.append(srv)
        return srv, server_ip

    def loss(self, percent: int, ns: Netns | None = None) -> str:
        """Drop ``percent`` % of what the server sends; returns how ("netem" or "nftables").

        ``tc netem loss`` on the server's interface when the kernel has netem; otherwise the
        same random drop with an nftables rule (``numgen random``) on the server's output.
        Either way a GSO datagram (a window) is dropped as a whole, as netem would.
        """
        ns = ns or self.server_ns
        if have("tc"):
            res = ns.run(
                "tc",
                "qdisc",
                "replace",
                "dev",
                SERVER_IF,
                "root",
                "netem",
                "loss",
                f"{percent}%",
                check=False,
            )
            if res.returncode == 0:
                return "netem"
        require("nft")  # no netem in this kernel: nftables drops instead
        rules = (
            "table inet pxedloss {\n"
            "  chain out {\n"
            "    type filter hook output priority 0; policy accept;\n"
            f'    oifname "{SERVER_IF}" meta l4proto udp numgen random mod 100 < {percent} drop\n'
            "  }\n"
            "}\n"
        )
        ns.run("nft", "-f", "-", input=rules.encode())
        return "nftables"

    def clear_loss(self, ns: Netns | None = None) -> None:
        ns = ns or self.server_ns
        ns.run("tc", "qdisc", "del", "dev", SERVER_IF, "root", check=False)
        ns.run("nft", "delete", "table", "inet", "pxedloss", check=False)

    def close(self) -> None:
        for srv in self.servers:
            srv.stop()
