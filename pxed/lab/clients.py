"""Real DHCP clients in a namespace: ISC dhclient, busybox udhcpc, Kea's perfdhcp.

dhclient and udhcpc run a script that records every invocation (reason + variables) and
puts the address on the interface, so renewals (unicast from ciaddr) and releases can go
out; perfdhcp poses as a relay (giaddr = its own address) and is read from its report.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pxed.lab.dhcp import RELAY_IP, SERVER_IP
from pxed.lab.netns import Netns, wait_for
from pxed.lab.tools import require

_RECORD_SCRIPT = """#!/bin/sh
# Records every invocation and configures the address in the client namespace (only there:
# this script is run by a client that runs inside a test namespace).
{{
  echo "reason=${{reason:-$1}}"
  env | grep -E '^(new_|old_|interface=)' | sort
  env | grep -E '^(ip|subnet|mask|router|dns|domain|hostname|lease|serverid|boot_file)=' | sort
  echo "--"
}} >> {record}
iface="${{interface}}"
case "${{reason:-$1}}" in
  PREINIT) ip link set dev "$iface" up ;;
  BOUND|RENEW|REBIND|REBOOT)
    ip -4 addr flush dev "$iface"
    ip addr add "$new_ip_address/$new_subnet_mask" dev "$iface" ;;
  EXPIRE|FAIL|RELEASE|STOP) ip -4 addr flush dev "$iface" ;;
  bound|renew)
    ip -4 addr flush dev "$iface"
    ip addr add "$ip/${{mask:-16}}" dev "$iface" ;;
  deconfig) ip -4 addr flush dev "$iface"; ip link set dev "$iface" up ;;
esac
exit 0
"""


def _write_record_script(path: Path, record: Path) -> None:
    path.write_text(_RECORD_SCRIPT.format(record=record))
    path.chmod(0o755)


def _read_records(record: Path) -> list[dict[str, str]]:
    if not record.exists():
        return []
    out: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in record.read_text().splitlines():
        if line == "--":
            out.append(cur)
            cur = {}
        elif "=" in line:
            key, _, value = line.partition("=")
            cur[key] = value
    return out


class _RecordingClient:
    """A DHCP client whose script records every invocation (see _RECORD_SCRIPT)."""

    program = "?"

    def __init__(self, ns: Netns, iface: str, workdir: Path) -> None:
        self.ns, self.iface, self.dir = ns, iface, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.record = workdir / f"{self.program}.record"
        self.script = workdir / f"{self.program}-script"
        self.out = workdir / f"{self.program}.out"
        _write_record_script(self.script, self.record)
        self.proc: subprocess.Popen[bytes] | None = None

    def records(self) -> list[dict[str, str]]:
        return _read_records(self.record)

    def wait_reason(self, reasons: Sequence[str], timeout: float = 30,
                    after: int = 0) -> dict[str, str]:  # fmt: skip
        """The first record after the ``after``-th whose reason is one of ``reasons``;
        AssertionError (with the records and the client's output) if none comes."""

        def found() -> dict[str, str] | None:
            for rec in self.records()[after:]:
                if rec.get("reason") in reasons:
                    return rec
            return None

        def running() -> bool:
            return self.proc is None or self.proc.poll() is None

        wait_for(lambda: found() is not None, timeout, alive=running)
        rec = found()
        if rec is None:
            raise AssertionError(
                f"{self.program}: none of {reasons} within {timeout} s; "
                f"records: {self.records()}\n{self.output()}"
            )
        return rec

    def output(self) -> str:
        return self.out.read_text(errors="replace")[-4000:] if self.out.exists() else ""


class Dhclient(_RecordingClient):
    """ISC dhclient in the client namespace, with its own lease, pid, config and script files.

    Runs in the foreground (-d) so the test owns the process. The script records every
    invocation (reason + new_* variables) and puts the address on the interface, so that
    renewals (unicast, from ciaddr) and releases can be sent.
    """

    program = "dhclient"

    def __init__(self, ns: Netns, iface: str, workdir: Path, renew_after: int | None = None):
        require("dhclient")
        super().__init__(ns, iface, workdir)
        self.lease_file = workdir / "dhclient.leases"
        self.pid_file = workdir / "dhclient.pid"
        self.conf = workdir / "dhclient.conf"
        conf = [
            "timeout 20;", "retry 1;", "initial-interval 1;", "backoff-cutoff 2;",
            "request subnet-mask, broadcast-address, routers, domain-name,"
            " domain-name-servers, host-name;",
        ]
        if renew_after is not None:
            # Renew (unicast REQUEST with ciaddr, RENEWING) soon instead of at T1.
            conf.append(f"supersede dhcp-renewal-time {renew_after};")
        self.conf.write_text("\n".join(conf) + "\n")

    def _args(self) -> list[str]:
        return ["-cf", str(self.conf), "-lf", str(self.lease_file), "-pf", str(self.pid_file),
                "-sf", str(self.script)]

    def start(self) -> None:
        """dhclient -1 -d: one attempt to get a lease, then stay in the foreground."""
        self.proc = self.ns.popen(
            "dhclient", "-d", "-1", "-v", *self._args(), self.iface,
            stdout=subprocess.DEVNULL, stderr=open(self.out, "ab"),  # noqa: SIM115
        )

    def release(self, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """dhclient -r: release the lease (DHCPRELEASE) and stop the running client."""
        res = self.ns.run("dhclient", "-r", "-v", *self._args(), self.iface,
                          check=False, timeout=timeout)
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.stop()
        return res

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)



class Udhcpc(_RecordingClient):
    """busybox udhcpc in the foreground; SIGUSR1 renews, SIGUSR2 releases."""

    program = "udhcpc"

    def __init__(self, ns: Netns, iface: str, workdir: Path) -> None:
        require("busybox")
        super().__init__(ns, iface, workdir)

    def start(self, *extra: str) -> None:
        self.proc = self.ns.popen(
            "busybox", "udhcpc", "-f", "-n", "-t", "5", "-T", "2", "-i", self.iface,
            "-s", str(self.script), *extra,
            stdout=open(self.out, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )

    def signal(self, sig: int) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.output()
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ---------------------------------------------------------------------------------------------
# perfdhcp


@dataclass(frozen=True)
class ExchangeStats:
    sent: int
    received: int
    drops: int
    orphans: int
    rejected: int
    non_unique: int
    avg_delay_ms: float | None

    @property
    def drop_ratio(self) -> float:
        return self.drops / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class PerfResult:
    returncode: int
    rate: float | None
    """Achieved 4-way exchanges per second as perfdhcp reports it."""
    expected_rate: float | None
    exchanges: dict[str, ExchangeStats]
    """'DISCOVER-OFFER' and 'REQUEST-ACK'."""
    output: str

    @property
    def do(self) -> ExchangeStats:
        return self.exchanges["DISCOVER-OFFER"]

    @property
    def ra(self) -> ExchangeStats:
        return self.exchanges["REQUEST-ACK"]


def parse_perfdhcp(output: str, returncode: int = 0) -> PerfResult:
    rate = expected = None
    m = re.search(r"Rate:\s*([\d.]+)\s*4-way exchanges/second(?:, expected rate:\s*([\d.]+))?",
                  output)
    if m:
        rate = float(m.group(1))
        expected = float(m.group(2)) if m.group(2) else None
    exchanges: dict[str, ExchangeStats] = {}
    for sec in re.finditer(r"\*\*\*Statistics for: ([A-Z-]+)\*\*\*(.*?)(?=\*\*\*|\Z)", output,
                           re.S):
        body = sec.group(2)

        def num(label: str, body: str = body) -> int:
            mm = re.search(rf"^{label}:\s*(\d+)", body, re.M)
            return int(mm.group(1)) if mm else 0

        avg = re.search(r"^avg delay:\s*([\d.]+) ms", body, re.M)
        exchanges[sec.group(1)] = ExchangeStats(
            sent=num("sent packets"), received=num("received packets"), drops=num("drops"),
            orphans=num("orphans"), rejected=num("rejected leases"),
            non_unique=num("non unique addresses"),
            avg_delay_ms=float(avg.group(1)) if avg else None,
        )
    return PerfResult(returncode, rate, expected, exchanges, output)


def perfdhcp_command(
    server_ip: str = SERVER_IP, local: str = RELAY_IP, *, rate: int | None = None,
    clients: int | None = None, period: float | None = None, num: int | None = None,
    base_mac: str | None = None, drop_time: float | None = None, exit_wait: float = 2.0,
    extra: Sequence[str] = (),
) -> list[str]:
    """The perfdhcp command line (relay mode: ``-l`` is the relay's own address).

    ``exit_wait`` (-W) lets replies to the last requests arrive before the report: without
    it, perfdhcp counts every request still in flight at the end as a drop. ``drop_time``
    (-d, default 1 s) is how late a reply may be and still count.
    """
    cmd = ["perfdhcp", "-4", "-l", local]
    if exit_wait:
        cmd += ["-W", str(int(exit_wait * 1_000_000))]
    if drop_time is not None:
        cmd += ["-d", str(drop_time)]
    if rate is not None:
        cmd += ["-r", str(rate)]
    if clients is not None:
        cmd += ["-R", str(clients)]
    if period is not None:
        cmd += ["-p", str(max(1, round(period)))]  # perfdhcp takes whole seconds only
    if num is not None:
        cmd += ["-n", str(num)]
    if base_mac is not None:
        cmd += ["-b", f"mac={base_mac}"]
    return [*cmd, *extra, server_ip]


def run_perfdhcp(ns: Netns, *args: Any, timeout: float = 120, **kwargs: Any) -> PerfResult:
    require("perfdhcp")
    cmd = perfdhcp_command(*args, **kwargs)
    res = ns.run(*cmd, check=False, timeout=timeout)
    if res.returncode not in (0, 3):  # 3: ran, some exchanges not completed
        raise RuntimeError(f"{' '.join(cmd)} -> {res.returncode}\n{res.stdout}\n{res.stderr}")
    return parse_perfdhcp(res.stdout + res.stderr, res.returncode)


def start_perfdhcp(ns: Netns, *args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
    require("perfdhcp")
    return ns.popen(*perfdhcp_command(*args, **kwargs))


def finish_perfdhcp(proc: subprocess.Popen[bytes], timeout: float = 60) -> PerfResult:
    out, _ = proc.communicate(timeout=timeout)
    return parse_perfdhcp(out.decode(errors="replace"), proc.returncode)


def mac_in_space(mac: str, base: str, size: int) -> bool:
    """perfdhcp -b mac=BASE -R SIZE draws client MACs from BASE .. BASE+SIZE-1."""
    value = int(mac.replace(":", ""), 16)
    start = int(base.replace(":", ""), 16)
    return start <= value < start + size




# ---------------------------------------------------------------------------------------------
# One lease and done


def dhclient_once(
    ns: Netns, iface: str, workdir: Path, tag: str = "dhclient", script: str | None = "/bin/true"
) -> str:
    """One lease with ``dhclient -1`` (renewing the one in its lease file, if any), then the
    client is stopped; returns the lease file's text. ``script`` None: dhclient's own script
    puts the address on the interface."""
    require("dhclient")
    lf, pf = workdir / f"{tag}.leases", workdir / f"{tag}.pid"
    cmd = ["dhclient", "-1", "-v", "-lf", str(lf), "-pf", str(pf)]
    if script is not None:
        cmd += ["-sf", script]
    ns.run(*cmd, iface, timeout=60)
    ns.run("dhclient", "-x", "-pf", str(pf), check=False)
    return lf.read_text()


def leased_address(lease_file_text: str) -> str:
    """The address of the last lease in a dhclient lease file."""
    found: list[str] = re.findall(r"fixed-address (\S+);", lease_file_text)
    return found[-1]


def udhcpc_once(ns: Netns, iface: str = "eth0") -> str | None:
    """One lease attempt with busybox udhcpc (three tries a second apart); the address it
    got, or None."""
    require("busybox")
    res = ns.run(
        "busybox", "udhcpc", "-i", iface, "-n", "-q", "-f", "-t", "3", "-T", "1",
        "-s", "/bin/true", check=False, timeout=60,
    )  # fmt: skip
    m = re.search(r"lease of (\S+) obtained", res.stdout + res.stderr)
    return m.group(1) if m else None
