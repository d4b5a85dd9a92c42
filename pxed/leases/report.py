"""`pxed leases`: the leases in the state directory, as a table or as JSON.

Reads the database the daemon writes, read-only (pxed.leases.store.read_leases): safe while
the daemon runs, since WAL lets a reader see the last commit without blocking the writer.
With ``[leases] backend = "postgresql"`` it reads the shared database instead: every
server's leases, each with the server that wrote it, and the servers' heartbeats.
The state directory is found as the daemon finds it: ``--state-dir``, else the
configuration's ``[server] state_dir``, else the default.

Client architecture and boot file are those of the ACK that bound the lease (lease schema
version 2); a lease bound before that upgrade shows none.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pxed.config.model import LeasesConfig
from pxed.config.parse import load_file, parse
from pxed.config.problems import Problems
from pxed.control import SOCKET_NAME, NotRunning, request
from pxed.errors import ConfigError, PxedError
from pxed.leases.model import Lease, LeaseState
from pxed.leases.store import read_leases

PROG = "pxed leases"


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """One lease as shown: the stored record plus what it means at ``now``."""

    lease: Lease
    state: str
    """"active", "expired" (active but past its end: the store has no such state, see
    LeaseState), "released" or "declined"."""
    expires_in: float
    """Seconds from now to ``expires``; negative once past."""


def shown_state(lease: Lease, now: float) -> str:
    if lease.state is LeaseState.ACTIVE and lease.expires <= now:
        return "expired"
    return lease.state.value


def rows(leases: Sequence[Lease], now: float) -> list[LeaseRow]:
    """The leases sorted by address, with their state and remaining time at ``now``."""
    ordered = sorted(leases, key=lambda lease: int(lease.ip))
    return [LeaseRow(x, shown_state(x, now), x.expires - now) for x in ordered]


def human_duration(seconds: float) -> str:
    """A span as its two largest units: ``45s``, ``3m12s``, ``11h59m``, ``2d4h``."""
    total = int(abs(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def relative(seconds: float) -> str:
    """``in 11h59m`` or ``3m12s ago``: how far ``expires`` is from now."""
    if seconds >= 0:
        return f"in {human_duration(seconds)}"
    return f"{human_duration(seconds)} ago"


def local_time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch).astimezone()


def as_json(shown: Sequence[LeaseRow]) -> list[dict[str, Any]]:
    """The JSON array's objects: epoch seconds beside ISO 8601 local times, so that a script
    needs no date parsing and a person no epoch arithmetic."""
    out = []
    for row in shown:
        lease = row.lease
        out.append(
            {
                "ip": str(lease.ip),
                "mac": lease.mac,
                "hostname": lease.hostname,
                "state": row.state,
                "expires": local_time(lease.expires).isoformat(timespec="seconds"),
                "expires_epoch": lease.expires,
                "expires_in": round(row.expires_in, 3),
                "arch": lease.arch,
                "boot_file": lease.boot_file,
                "subnet": lease.subnet,
                "client_id": lease.client_key.hex(),
                "updated": local_time(lease.updated).isoformat(timespec="seconds"),
                "updated_epoch": lease.updated,
                "server": lease.server,
            }
        )
    return out


def from_json(row: dict[str, Any]) -> Lease:
    """A lease back from its as_json() object (the control socket's answer)."""
    state = row["state"]
    return Lease(
        ip=IPv4Address(row["ip"]),
        client_key=bytes.fromhex(row.get("client_id") or ""),
        mac=row["mac"],
        hostname=row.get("hostname"),
        expires=float(row["expires_epoch"]),
        state=LeaseState.ACTIVE if state == "expired" else LeaseState(state),
        subnet=row.get("subnet") or "",
        updated=float(row.get("updated_epoch") or 0.0),
        arch=row.get("arch"),
        boot_file=row.get("boot_file"),
        server=row.get("server"),
    )


HEADERS = ("IP", "MAC", "HOSTNAME", "STATE", "ARCH", "BOOT", "EXPIRES")


def as_table(shown: Sequence[LeaseRow]) -> str:
    """Aligned columns, one lease a line, under a header line (with a SERVER column when
    the leases come from a database several servers share)."""
    shared = any(row.lease.server is not None for row in shown)
    headers = (*HEADERS[:-1], "SERVER", HEADERS[-1]) if shared else HEADERS
    lines: list[tuple[str, ...]] = [headers]
    for row in shown:
        lease = row.lease
        when = local_time(lease.expires).strftime("%Y-%m-%d %H:%M:%S")
        cells = [
            str(lease.ip),
            lease.mac,
            lease.hostname or "-",
            row.state,
            "-" if lease.arch is None else str(lease.arch),
            lease.boot_file or "-",
        ]
        if shared:
            cells.append(lease.server or "-")
        cells.append(f"{when} ({relative(row.expires_in)})")
        lines.append(tuple(cells))
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(line, widths, strict=False)), line[-1]])
        for line in lines
    )


def summary(shown: Sequence[LeaseRow], source: str) -> str:
    """``N lease(s) SOURCE: counts by state``; SOURCE says who answered."""
    counts: dict[str, int] = {}
    for row in shown:
        counts[row.state] = counts.get(row.state, 0) + 1
    parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return f"{len(shown)} lease(s) {source}: {parts}"


def leases_config(config: Path | None) -> LeasesConfig:
    """The file's ``[leases]`` (ConfigError only for the file's own problems)."""
    data = load_file(config) if config is not None else {}
    return parse(data, Problems()).config.leases


def leases_config_or_say(prog: str, config: Path | None) -> LeasesConfig | None:
    """leases_config() for a command: None after printing the file's problems, one a line."""
    try:
        return leases_config(config)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"{prog}: {line}", file=sys.stderr)
        return None


def state_dir(config: Path | None, given: Path | None) -> Path:
    """The daemon's state directory: ``--state-dir``, else ``[server] state_dir`` of the
    file, else the default. Only the file's own problems stop this (ConfigError): one
    elsewhere in it (a boot file missing, say) does not hide the leases."""
    if given is not None:
        return given
    data = load_file(config) if config is not None else {}
    return parse(data, Problems()).config.state_dir


def add_state_arguments(parser: argparse.ArgumentParser) -> None:
    """``--state-dir`` and ``--config``, as every command that reads pxed's state takes
    them (resolved by ``state_dir_or_say``)."""
    parser.add_argument("--state-dir", type=Path, metavar="DIR",
                        help="default: the configuration's state_dir")  # fmt: skip
    parser.add_argument("--config", "-c", type=Path, help="TOML configuration file")


def state_dir_or_say(prog: str, config: Path | None, given: Path | None) -> Path | None:
    """state_dir() for a command: None after printing the file's problems, one a line."""
    try:
        return state_dir(config, given)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"{prog}: {line}", file=sys.stderr)
        return None


def _shared(dsn: str, as_json_array: bool, now: float) -> int:
    """The leases of a PostgreSQL database several servers share, and its servers."""
    from pxed.leases.pg import PgLeaseStore, read_servers

    store = PgLeaseStore(dsn, "")
    try:
        store.open()
        leases = store.load()
        servers = read_servers(dsn)
    except PxedError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    shown = rows(leases, now)
    if as_json_array:
        print(json.dumps(as_json(shown), indent=2))
        return 0
    for peer in servers:
        seen = "now" if peer.age < 1 else f"{human_duration(peer.age)} ago"
        print(f"server {peer.name} ({peer.address or 'no address'}): last heartbeat {seen}")
    if not shown:
        print(f"no leases in {store.where}")
        return 0
    print(summary(shown, f"in {store.where}"))
    print(as_table(shown))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The leases in pxed's state directory (read-only; the daemon may run).",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    add_state_arguments(parser)
    return parser


def main(argv: Sequence[str], now: float | None = None) -> int:
    args = _parser().parse_args(list(argv))
    from pxed.app import LEASE_DB  # the daemon's file name, from where the daemon has it

    backend = leases_config_or_say(PROG, args.config)
    if backend is None:
        return 1
    if backend.backend == "postgresql" and backend.dsn:
        return _shared(backend.dsn, args.json, time.time() if now is None else now)

    directory = state_dir_or_say(PROG, args.config, args.state_dir)
    if directory is None:
        return 1
    try:
        is_dir = directory.is_dir()
    except OSError as exc:  # a parent this user may not enter
        print(f"{PROG}: cannot read {directory}: {exc.strerror}", file=sys.stderr)
        return 1
    if not is_dir:
        print(
            f"{PROG}: no state directory {directory} (pxed has not run with it; "
            "--state-dir DIR or --config FILE names another)",
            file=sys.stderr,
        )
        return 1
    db = directory / LEASE_DB
    leases: list[Lease] | None
    source = "from the running pxed"
    try:  # the running daemon's view first (pxed.control), else its database
        reply = request(directory / SOCKET_NAME, "leases")
        leases = [from_json(r) for r in reply.get("arguments", {}).get("leases", [])]
    except (NotRunning, PermissionError, OSError, KeyError, ValueError):
        source = f"in {db} (pxed is not running)"
        try:
            leases = read_leases(db)
        except FileNotFoundError:
            leases = None
        except PxedError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 1
    shown = rows(leases or [], time.time() if now is None else now)
    if args.json:
        print(json.dumps(as_json(shown), indent=2))
    if not shown:
        # Said on stderr with --json, so that stdout stays a parseable (empty) array.
        why = "no lease database yet" if leases is None else "the store is empty"
        print(f"no leases in {directory} ({why})", file=sys.stderr if args.json else sys.stdout)
    elif not args.json:
        print(summary(shown, source))
        print(as_table(shown))
    return 0
