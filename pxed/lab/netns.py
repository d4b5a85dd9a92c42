"""Network namespaces, veth pairs, bridges and tap devices made for one run and removed after.

Every name carries a per-run suffix so that parallel or aborted runs never collide, and
everything a Lab made is removed by ``close()``, also when the run failed. Links are made
inside the namespaces (a veth is created in one and its peer placed straight into the
other), so nothing ever appears in the caller's namespace, not even for a moment. Callers
give addresses from 198.18.0.0/15 (RFC 2544) only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pxed.lab.tools import require


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 10.0,
    interval: float = 0.05,
    alive: Callable[[], bool] | None = None,
) -> bool:
    """Poll until ``predicate()`` is true; False on timeout or once ``alive()`` turns false.

    The caller asserts with its own context (a log tail), so this never raises.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if alive is not None and not alive():
            return bool(predicate())
        time.sleep(interval)
    return bool(predicate())


def stop_process(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """SIGTERM the process group (every lab process has its own session), SIGKILL after grace."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
    try:
        proc.wait(timeout=grace if grace > 0 else 5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def proc_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Netns:
    """One network namespace of the lab, and the processes started in it."""

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
        """Start ``cmd`` in this namespace, in a session of its own (killed as a group)."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.STDOUT)
        proc: subprocess.Popen[bytes] = subprocess.Popen(
            self._wrap(cmd), start_new_session=True, **kwargs
        )
        self.procs.append(proc)
        return proc

    def stop_all(self, grace: float = 0.0) -> None:
        """Every process started here: SIGKILL (grace 0) or SIGTERM first."""
        for proc in self.procs:
            stop_process(proc, grace)
        self.procs.clear()

    def udp_port_bound(self, port: int) -> bool:
        res = self.run("ss", "-Hlun", f"sport = :{port}", check=False)
        return res.returncode == 0 and bool(res.stdout.strip())

    def udp_rcvbuf_errors(self) -> int:
        """The namespace's UDP RcvbufErrors (/proc/net/snmp is per network namespace):
        datagrams dropped because a receiving socket's buffer was full."""
        lines = [
            ln.split() for ln in self.run("cat", "/proc/net/snmp").stdout.splitlines()
            if ln.startswith("Udp:")
        ]  # fmt: skip
        header, values = lines[0], lines[1]
        return int(values[header.index("RcvbufErrors")])


class Lab:
    """Namespaces and links for one run, and a scratch directory; ``close()`` removes all."""

    def __init__(
        self,
        tag: str = "t",
        *,
        prefix: str = "pxed-lab-",
        keep: bool = False,
        under: Path = Path("/tmp"),
    ) -> None:
        require("ip")
        self.suffix = f"{tag}{uuid.uuid4().hex[:6]}"
        self.namespaces: list[Netns] = []
        self.tmp = under / f"{prefix}{self.suffix}"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        """Keep the scratch directory on close (logs, serial consoles)."""
        self._taps = 0

    def ns(self, role: str) -> Netns:
        name = f"px{role}-{self.suffix}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        ns = Netns(name)
        self.namespaces.append(ns)
        ns.run("ip", "link", "set", "lo", "up")
        return ns

    def veth(self, a: Netns, a_if: str, b: Netns, b_if: str) -> None:
        """A veth pair with one end in each namespace (names are per namespace)."""
        a.run("ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
        a.run("ip", "link", "set", a_if, "up")
        b.run("ip", "link", "set", b_if, "up")

    def bridge(self, ns: Netns, name: str, ports: Sequence[str] = ()) -> None:
        ns.run("ip", "link", "add", name, "type", "bridge")
        ns.run("ip", "link", "set", name, "up")
        for port in ports:
            ns.run("ip", "link", "set", port, "master", name)

    def tap(self, ns: Netns, bridge: str) -> str:
        """A new tap device on ``bridge`` (a QEMU machine's network card plugs into it)."""
        name = f"tap{self._taps}"
        self._taps += 1
        ns.run("ip", "tuntap", "add", name, "mode", "tap")
        ns.run("ip", "link", "set", name, "master", bridge)
        ns.run("ip", "link", "set", name, "up")
        return name

    @staticmethod
    def addr(ns: Netns, ifname: str, cidr: str) -> None:
        ns.run("ip", "addr", "add", cidr, "dev", ifname)

    def close(self, grace: float = 0.0) -> None:
        """Stop every process (SIGKILL, or SIGTERM and ``grace`` seconds), remove it all."""
        for ns in self.namespaces:
            ns.stop_all(grace)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)
        self.namespaces.clear()
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
