"""Machines booting through a server: the layout of `pxed demo`, the e2e tests and bench/boot.

    server namespace                      machine namespace
    pxed (or a peer) on pxs0  <-veth->    uplink -- br0 -- tap0, tap1 ... -- QEMU machines

More namespaces can join the machines' bridge (a router's DHCP beside pxed). A machine is
powered on on a tap of its own, its serial console followed until the kernel's first line
(or the firmware giving up), then powered off. Logs, serial consoles and pxed's state go to
one directory, kept after a failed run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pxed.lab.logs import Event
from pxed.lab.machines import Machine, SerialLog, gave_up, hints, qemu_command
from pxed.lab.netns import Lab, Netns, stop_process, wait_for
from pxed.lab.process import ServerProcess
from pxed.lab.pxed import Config, PxedProcess, pythonpath

SERVER_IF = "pxs0"
SERVER_IP = "198.19.0.1"
PREFIX = 16
POOL = ("198.19.1.10", "198.19.1.250")
BRIDGE = "br0"


@dataclass
class Running:
    """A powered-on machine."""

    machine: Machine
    proc: subprocess.Popen[bytes]
    serial: SerialLog
    started: float
    """time.monotonic() at power-on."""
    wall: float
    """time.time() at power-on (to place the server's timestamps)."""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_kernel(self, timeout: float) -> float | None:
        """Seconds from power-on to the whole "Linux version" line; None when the firmware
        gave up, the machine stopped or ``timeout`` passed."""
        wait_for(
            lambda: self.serial.kernel_banner() is not None or gave_up(self.serial.text()),
            timeout, interval=0.05, alive=self.alive,
        )  # fmt: skip
        if self.serial.kernel_banner() is None:
            return None
        return time.monotonic() - self.started

    def off(self) -> None:
        stop_process(self.proc)


@dataclass
class Boot:
    """One machine's boot: its serial console and what the server logged about it."""

    machine: Machine
    serial: SerialLog
    seconds: float | None
    """Power-on to "Linux version", None when it never came."""
    lab: BootLab

    @property
    def ok(self) -> bool:
        return self.seconds is not None

    def acks(self) -> list[Event]:
        return self.lab.events("dhcp.ack", mac=self.machine.mac)

    def files(self) -> dict[str, int]:
        """Files sent to this machine in full: name -> size."""
        return self.lab.files_sent(self.machine.mac)

    def explain(self) -> str:
        """What a failed assertion shows: the serial console and the server's log."""
        return (
            f"\n--- {self.machine.name} ({self.machine.firmware.value}, {self.machine.mac}) "
            f"serial console, last lines ---\n{self.serial.tail(60)}\n"
            f"--- server log, last lines ---\n{self.lab.tail(60)}\n"
            + "".join(f"hint: {h}\n" for h in hints(self.serial.text()))
            + f"(full logs kept in {self.lab.keep_dir})"
        )


@dataclass
class BootLab:
    """A server namespace and a machine namespace with a bridge, in ``lab``."""

    lab: Lab
    root: Path
    """The boot root the server serves."""
    keep_dir: Path | None = None
    """Where logs, serial consoles and the server's state go (emptied first); the lab's
    scratch directory when None."""
    server: Netns = field(init=False)
    machines: Netns = field(init=False)
    serving: ServerProcess | None = None

    def __post_init__(self) -> None:
        if self.keep_dir is None:
            self.keep_dir = self.lab.tmp
        else:
            shutil.rmtree(self.keep_dir, ignore_errors=True)
            self.keep_dir.mkdir(parents=True)
        self.server = self.lab.ns("srv")
        self.machines = self.lab.ns("vm")
        self.lab.veth(self.server, SERVER_IF, self.machines, "uplink")
        self.lab.addr(self.server, SERVER_IF, f"{SERVER_IP}/{PREFIX}")
        self.lab.bridge(self.machines, BRIDGE, ["uplink"])

    @property
    def dir(self) -> Path:
        assert self.keep_dir is not None
        return self.keep_dir

    def join(self, role: str, ifname: str) -> Netns:
        """Another namespace plugged into the machines' bridge (a router, a second server)."""
        ns = self.lab.ns(role)
        port = f"p-{role}"
        self.lab.veth(ns, ifname, self.machines, port)
        self.machines.run("ip", "link", "set", port, "master", BRIDGE)
        return ns

    # -- the server
    def pxed(self, config: Config = "", args: tuple[str, ...] = ()) -> PxedProcess:
        """pxed on SERVER_IF, full DHCP with the lab's pool over ``root`` (``args`` last, so
        they may override: ``("--mode", "proxy")``). Not started yet."""
        cli = ["--iface", SERVER_IF, "--mode", "dhcp", "--range", f"{POOL[0]}-{POOL[1]}",
               "--tftp-root", str(self.root), *args]  # fmt: skip
        return PxedProcess(self.server, self.dir, config, cli)

    def start(self, server: ServerProcess) -> ServerProcess:
        server.start()
        self.serving = server
        return server

    def start_pxed(self, config: Config = "", args: tuple[str, ...] = ()) -> PxedProcess:
        pxed = self.pxed(config, args)
        self.start(pxed)
        return pxed

    def events(self, name: str, **match: Any) -> list[Event]:
        assert self.serving is not None, "no server started"
        return self.serving.events(name, **match)

    def tail(self, n: int) -> str:
        return self.serving.tail(n) if self.serving is not None else "(no server started)"

    def files_sent(self, mac: str) -> dict[str, int]:
        """Files pxed sent to mac in full (tftp.done): name -> bytes acknowledged."""
        return {
            str(e["file"]): int(e["bytes"] if "bytes" in e else e.get("size", 0))
            for e in self.events("tftp.done", mac=mac)
        }

    def boots(self, mac: str | None = None) -> list[dict[str, Any]]:
        """`pxed boots [MAC] --json` as a user runs it: the running pxed's stories (over its
        control socket), or the ones it kept once stopped."""
        assert isinstance(self.serving, PxedProcess), "no pxed started"
        cmd = [sys.executable, "-P", "-m", "pxed", "boots", *([mac] if mac else []), "--json",
               "--state-dir", str(self.serving.state_dir)]  # fmt: skip
        res = subprocess.run(cmd, env=pythonpath(), capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"pxed boots failed: {res.stderr}")
        stories: list[dict[str, Any]] = json.loads(res.stdout)
        return stories

    # -- machines
    def power_on(self, machine: Machine) -> Running:
        tap = self.lab.tap(self.machines, BRIDGE)
        serial = SerialLog(self.dir / f"{machine.name}.serial.log")
        cmd = qemu_command(machine, tap, serial.path, self.dir)
        (self.dir / f"{machine.name}.cmd").write_text(" ".join(cmd) + "\n")
        with (self.dir / f"{machine.name}.qemu.log").open("wb") as qemu_log:
            wall, started = time.time(), time.monotonic()
            proc = self.machines.popen(*cmd, stdout=subprocess.DEVNULL, stderr=qemu_log)
        return Running(machine, proc, serial, started, wall)

    def boot(self, machine: Machine, timeout: float) -> Boot:
        """Power the machine on, wait for "Linux version" on its serial console, power off."""
        vm = self.power_on(machine)
        seconds = vm.wait_kernel(timeout)
        if seconds is not None:  # the rest of the banner and the command line, for asserts
            wait_for(lambda: "Command line:" in vm.serial.text(), 10, alive=vm.alive)
        vm.off()
        return Boot(machine, vm.serial, seconds, self)
