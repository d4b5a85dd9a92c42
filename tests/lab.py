"""The test lab: network namespaces, veth pairs and bridges made by a test and removed after it.

Every name carries a per-run suffix so that parallel or aborted runs never collide, and
everything a Lab made is removed on close, also when the test failed. Addresses come from
198.18.0.0/15 (RFC 2544) only; nothing here touches the host's own interfaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


# The Debian package behind each tool the tests drive, for the skip message.
DEBIAN_PACKAGE = {
    "dhclient": "isc-dhcp-client",
    "busybox": "busybox",
    "perfdhcp": "kea-admin",
    "kea-dhcp4": "kea-dhcp4-server",
    "dnsmasq": "dnsmasq-base",
    "tcpdump": "tcpdump",
    "ip": "iproute2",
    "tc": "iproute2",
    "curl": "curl",
    "atftp": "atftp",
    "atftpd": "atftpd",
    "tftp": "tftp-hpa",
}


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def require(*tools: str) -> None:
    """Skip the test, naming the Debian package, when a client or peer is not installed."""
    import pytest

    for tool in tools:
        if not have(tool):
            pkg = DEBIAN_PACKAGE.get(tool, tool)
            pytest.skip(f"{tool} not installed: apt-get install {pkg} (make deps-debian)")


def udp_port_bound(ns: Netns, port: int) -> bool:
    res = ns.run("ss", "-Hlun", f"sport = :{port}", check=False)
    return res.returncode == 0 and bool(res.stdout.strip())


def proc_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def json_event(line: str) -> dict[str, Any] | None:
    """A JSON log line as a dict; None for anything else."""
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


class LogCollector:
    """Drains a subprocess's output on a thread into a file: parsed events and raw lines."""

    def __init__(
        self,
        stream: Any,
        path: Path,
        parse: Callable[[str], dict[str, Any] | None] = json_event,
    ) -> None:
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._parse = parse
        self._path = path
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: Any) -> None:
        with self._path.open("a") as out:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace").rstrip("\n")
                out.write(line + "\n")
                event = self._parse(line)
                with self._lock:
                    self.lines.append(line)
                    if event is not None:
                        self.events.append(event)

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def tail(self, n: int = 60) -> str:
        with self._lock:
            return "\n".join(self.lines[-n:])


@dataclass
class Netns:
    """One network namespace of the lab."""

    name: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def _wrap(self, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 60, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            self._wrap(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input.decode() if input is not None else None,
        )
        if check and res.returncode != 0:
            raise RuntimeError(
                f"[{self.name}] {' '.join(cmd)} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
            )
        return res

    def popen(self, *cmd: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.STDOUT)
        # A new session so that teardown can kill the whole process group.
        proc = subprocess.Popen(self._wrap(cmd), start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        self.procs.clear()


class Lab:
    """Namespaces and links for one test; ``close()`` removes all of it."""

    def __init__(self, tag: str = "t") -> None:
        self.suffix = f"{tag}{uuid.uuid4().hex[:6]}"
        self.namespaces: list[Netns] = []
        self.tmp = Path("/tmp") / f"pxed-lab-{self.suffix}"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def ns(self, role: str) -> Netns:
        name = f"px{role}-{self.suffix}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        ns = Netns(name)
        self.namespaces.append(ns)
        ns.run("ip", "link", "set", "lo", "up")
        return ns

    def veth(self, a: Netns, a_if: str, b: Netns, b_if: str) -> None:
        """A veth pair with one end in each namespace (names are per-namespace).

        Made inside namespace ``a`` with its peer placed straight into ``b``: the pair never
        exists in the host's namespace, not even for a moment.
        """
        a.run("ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
        a.run("ip", "link", "set", a_if, "up")
        b.run("ip", "link", "set", b_if, "up")

    def bridge(self, ns: Netns, name: str, ports: Sequence[str] = ()) -> None:
        ns.run("ip", "link", "add", name, "type", "bridge")
        ns.run("ip", "link", "set", name, "up")
        for port in ports:
            ns.run("ip", "link", "set", port, "master", name)

    @staticmethod
    def addr(ns: Netns, ifname: str, cidr: str) -> None:
        ns.run("ip", "addr", "add", cidr, "dev", ifname)

    def close(self) -> None:
        for ns in self.namespaces:
            ns.kill_all()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)
        self.namespaces.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll until predicate() is true; False on timeout (the caller asserts with context)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class ServerProcess:
    """A server subprocess in a namespace: start (and wait until ready), stop, SIGKILL, its log.

    Subclasses say how to run it (``command``, ``env``), when it is ready (``is_ready``) and
    how to read its output (``parse_line``). Events of earlier runs are kept across restarts.
    """

    name: ClassVar[str] = "?"
    tool: ClassVar[str] = "?"
    """The program the server needs; a missing one skips the test, naming its package."""
    start_timeout: ClassVar[float] = 15.0

    def __init__(self, ns: Netns, workdir: Path, *, quiet: bool = False) -> None:
        self.ns = ns
        self.workdir = workdir
        self.quiet = quiet
        """Benchmarks: log as little as the server allows."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: LogCollector | None = None
        self.starts = 0
        self._old_events: list[dict[str, Any]] = []

    # -- to implement
    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def parse_line(self, line: str) -> dict[str, Any] | None:
        return json_event(line)

    def is_ready(self) -> bool:
        raise NotImplementedError

    # -- common
    def start(self, timeout: float | None = None) -> None:
        require(self.tool)
        timeout = self.start_timeout if timeout is None else timeout
        if self.log is not None:
            self._old_events += self.log.snapshot()
        self.starts += 1
        self.proc = self.ns.popen(
            *self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env()
        )
        log_path = self.workdir / f"{self.name}.log"
        self.log = LogCollector(self.proc.stdout, log_path, self.parse_line)
        proc = self.proc
        ok = wait_for(lambda: proc.poll() is not None or self.is_ready(), timeout=timeout)
        if proc.poll() is not None:
            self.log.join(2)
            raise RuntimeError(
                f"{self.name} exited with {proc.returncode} at start-up:\n{self.tail()}"
            )
        if not ok:
            raise RuntimeError(f"{self.name} not ready after {timeout} s:\n{self.tail()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not go. Returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.log is not None:
            self.log.join()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: the crash a server must survive."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.log is not None:
            self.log.join()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def pid(self) -> int:
        # `ip netns exec` execs the command: the Popen pid is the server's own.
        assert self.proc is not None
        return self.proc.pid

    def rss_kib(self) -> int:
        return proc_rss_kib(self.pid)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Events of every run of this server so far (all restarts), oldest first."""
        every = self._old_events + (self.log.snapshot() if self.log is not None else [])
        return every if kind is None else [e for e in every if e.get("event") == kind]

    def tail(self, n: int = 60) -> str:
        return self.log.tail(n) if self.log is not None else ""
