"""A server run as a subprocess in a namespace: start and wait until ready, stop, SIGKILL, log.

pxed and every peer (dnsmasq, Kea, atftpd) are one of these; a subclass says how to run it
(``command``, ``env``), when it is ready (``is_ready``) and how to read its output
(``parse_line``). Its output goes to ``WORKDIR/NAME.log`` as it comes, so the log stays
behind when a run fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pxed.lab.logs import Event, EventLog, json_event
from pxed.lab.netns import Netns, proc_rss_kib, wait_for
from pxed.lab.tools import require


class ServerProcess:
    """One server subprocess; events of earlier runs are kept across restarts."""

    name: ClassVar[str] = "?"
    tool: ClassVar[str] = "ip"
    """The program the server needs (a missing one raises ToolMissing, naming its package)."""
    start_timeout: ClassVar[float] = 15.0

    def __init__(self, ns: Netns, workdir: Path, *, quiet: bool = False) -> None:
        self.ns = ns
        self.workdir = workdir
        self.quiet = quiet
        """Benchmarks: log as little as the server allows."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.output: EventLog | None = None
        self.starts = 0
        self.on_event: Callable[[Event], None] | None = None
        """Called on the reader thread with each event as it arrives (a live timeline)."""
        self._old_events: list[Event] = []
        self.log_direct = False
        """Benchmarks of a logging server: its output goes straight to its log file (as to
        journald), and the harness parses nothing line by line, which would cost CPU on the
        same cores; events() is then empty and said() reads the file."""

    # -- to implement
    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def parse_line(self, line: str) -> Event | None:
        return json_event(line)

    def is_ready(self) -> bool:
        raise NotImplementedError

    # -- common
    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, timeout: float | None = None) -> Event:
        """Start it and wait until it is ready; RuntimeError (with its log) if it is not.

        Returns what the server said when it became ready (``ready_event``).
        """
        require(self.tool)
        timeout = self.start_timeout if timeout is None else timeout
        if self.output is not None:
            self._old_events += self.output.snapshot()
        self.starts += 1
        if self.log_direct:
            with self.log_path.open("ab") as log_file:
                self.proc = self.ns.popen(*self.command(), env=self.env(), stdout=log_file)
            self.output = EventLog(None)
        else:
            self.proc = self.ns.popen(*self.command(), env=self.env())
            self.output = EventLog(
                self.proc.stdout, self.log_path, on_event=self.on_event, parse=self.parse_line
            )
        proc = self.proc
        ok = wait_for(self.is_ready, timeout, alive=lambda: proc.poll() is None)
        if proc.poll() is not None:
            self.output.join(2)
            raise RuntimeError(
                f"{self.name} exited with {proc.returncode} at start-up:\n{self.tail()}"
            )
        if not ok:
            raise RuntimeError(f"{self.name} not ready after {timeout} s:\n{self.tail()}")
        return self.ready_event()

    def ready_event(self) -> Event:
        """What the server logged on becoming ready; {} for servers that log no such event."""
        return {}

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not go. Returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.output is not None:
            self.output.join()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: the crash a server must survive."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.output is not None:
            self.output.join()

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

    def events(self, kind: str | None = None, **match: Any) -> list[Event]:
        """Events of every run of this server so far (all restarts), oldest first."""
        every = self._old_events + (self.output.snapshot() if self.output is not None else [])
        return [
            e
            for e in every
            if (kind is None or e.get("event") == kind)
            and all(e.get(k) == v for k, v in match.items())
        ]

    def said(self, needle: str) -> bool:
        if self.log_direct:
            try:
                return needle in self.log_path.read_text(errors="replace")
            except FileNotFoundError:
                return False
        return self.output is not None and self.output.said(needle)

    def tail(self, n: int = 60) -> str:
        if self.log_direct and self.log_path.exists():
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return self.output.tail(n) if self.output is not None else ""

    def log(self) -> str:
        """The last 200 lines: what an assertion shows."""
        return self.tail(200)
