"""The test lab: network namespaces, veth pairs and bridges made by a test and removed after it.

Every name carries a per-run suffix so that parallel or aborted runs never collide, and
everything a Lab made is removed on close, also when the test failed. Addresses come from
198.18.0.0/15 (RFC 2544) only; nothing here touches the host's own interfaces.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


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
