"""The `pxed` command: argparse and a call into pxed.app; nothing else lives here."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pxed import __version__
from pxed.config import Config
from pxed.config.load import load_config
from pxed.errors import ConfigError

DESCRIPTION = """\
pxed: a PXE boot server (DHCP + TFTP) in one process.

  pxed --iface eth0                         serve the interface's subnet, pool derived
  pxed --iface pxs0 --range 198.19.1.0-198.19.254.254 --tftp-root /srv/tftp
  pxed --config /etc/pxed/pxed.toml         flags given beside it override the file
  pxed check --config FILE                  validate a configuration and exit
  pxed stage [DIR]                          stage a TFTP root (default /srv/tftp): pxelinux,
                                            iPXE, netboot.xyz, menu and boot.ipxe
  pxed demo                                 boot a QEMU machine through pxed in a private
                                            namespace lab and print the boot's timeline
  pxed leases [--json]                      the leases (the running daemon's, else the state
                                            directory's; a shared PostgreSQL's: all servers')
  pxed db init|upgrade|status [--dsn DSN]   create or upgrade the PostgreSQL lease schema
  pxed boots [MAC] [--follow] [--json]      each machine's boot as one story: DHCP, files,
                                            where it stopped and why
  pxed host MAC [--next PROFILE|--local|--clear]
                                            boot a profile once (an install), then the
                                            local disk; or the local disk; or forget
  pxed explain MAC [--arch N] [--user-class iPXE]
                                            which boot file and address that client would
                                            get, and by which rule (configuration only)
  pxed install-unit [--print]               install the systemd unit for this pxed and,
                                            unless there, /etc/pxed/pxed.toml

SIGHUP re-reads the configuration (the same file and flags; a broken one is refused and
the running one kept); SIGTERM stops, giving running transfers [server] stop_grace seconds.
"""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, help="TOML configuration file")
    parser.add_argument(
        "--iface",
        "-i",
        action="append",
        metavar="IFACE",
        help="interface to serve (repeatable); overrides [server] interfaces",
    )
    parser.add_argument(
        "--range",
        "-r",
        action="append",
        metavar="FIRST-LAST",
        help="address pool, e.g. 198.19.1.0-198.19.254.254 (repeatable)",
    )
    parser.add_argument("--tftp-root", type=Path, metavar="DIR", help="TFTP root directory")
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="where leases are kept (default /var/lib/pxed)",
    )
    parser.add_argument("--mode", choices=["dhcp", "proxy", "auto"], help="DHCP mode")
    parser.add_argument("--no-dhcp", action="store_true", help="run the TFTP server only")
    parser.add_argument("--no-tftp", action="store_true", help="run the DHCP server only")
    parser.add_argument("--dhcp-port", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--tftp-port", type=int, metavar="N", help="TFTP port (default 69)")
    parser.add_argument(
        "--http-port", type=int, metavar="N",
        help="serve the boot root over HTTP on this port, all addresses ([http] listen)",
    )  # fmt: skip
    parser.add_argument(
        "--tftp-port-range",
        metavar="FIRST-LAST",
        help="serve transfers from these ports only (a firewall's opening)",
    )
    parser.add_argument(
        "--log-format",
        choices=["console", "json"],
        help="console lines (default) or JSON lines for log shippers",
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line flags as a configuration mapping that wins over the file."""
    out: dict[str, dict[str, Any]] = {"server": {}, "dhcp": {}, "tftp": {}, "http": {}}
    if args.iface:
        out["server"]["interfaces"] = list(args.iface)
    if args.range:
        out["dhcp"]["range"] = list(args.range)
    if args.tftp_root is not None:
        out["tftp"]["root"] = str(args.tftp_root)
    if args.state_dir is not None:
        out["server"]["state_dir"] = str(args.state_dir)
    if args.mode:
        out["server"]["mode"] = args.mode
    if args.no_dhcp:
        out["dhcp"]["enabled"] = False
    if args.no_tftp:
        out["tftp"]["enabled"] = False
    if args.dhcp_port is not None:
        out["server"]["dhcp_port"] = args.dhcp_port
    if args.tftp_port is not None:
        out["tftp"]["port"] = args.tftp_port
    if args.http_port is not None:
        out["http"]["listen"] = f"0.0.0.0:{args.http_port}"
    if args.tftp_port_range is not None:
        out["tftp"]["port_range"] = args.tftp_port_range
    if args.log_format:
        out["server"]["log_format"] = args.log_format
    if args.log_level:
        out["server"]["log_level"] = args.log_level
    return {k: v for k, v in out.items() if v}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "check":
        return _check(argv[1:])
    if argv and argv[0] == "stage":
        from pxed.stage import main as stage_main

        return stage_main(argv[1:])
    if argv and argv[0] == "demo":
        from pxed.demo import main as demo_main

        return demo_main(argv[1:])
    if argv and argv[0] == "leases":
        from pxed.leases.report import main as leases_main

        return leases_main(argv[1:])
    if argv and argv[0] == "db":
        from pxed.leases.db_command import main as db_main

        return db_main(argv[1:])
    if argv and argv[0] == "boots":
        from pxed.boots.report import main as boots_main

        return boots_main(argv[1:])
    if argv and argv[0] == "host":
        from pxed.profiles.command import main as host_main

        return host_main(argv[1:])
    if argv and argv[0] == "install-unit":
        from pxed.install import main as install_main

        return install_main(argv[1:])
    if argv and argv[0] == "explain":
        from pxed.explain import main as explain_main

        return explain_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="pxed", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"pxed {__version__}")
    _add_common(parser)
    parser.add_argument(
        "--user",
        metavar="NAME",
        help="started as root: become this user once every socket is bound, keeping only "
        "CAP_NET_BIND_SERVICE and CAP_NET_ADMIN",
    )
    args = parser.parse_args(argv)
    config, notes, warnings = _load(args, "pxed")
    if config is None:
        return 2
    from pxed import logs

    logs.configure(config.log_format, config.log_level)
    from pxed.service import run

    def load(notes: list[str], warnings: list[str]) -> Config:
        # SIGHUP: the same file and the same flags as at start-up.
        return load_config(args.config, overrides(args), notes=notes, warnings=warnings)

    try:
        return asyncio.run(run(config, notes, warnings, load, user=args.user))
    finally:
        logs.flush()


def _load(
    args: argparse.Namespace, prefix: str
) -> tuple[Config | None, list[str], list[str]]:
    """The validated configuration, its notes and its warnings; None after printing each
    problem."""
    notes: list[str] = []
    warnings: list[str] = []
    try:
        config = load_config(args.config, overrides(args), notes=notes, warnings=warnings)
        return config, notes, warnings
    except ConfigError as exc:
        for line in exc.problems:
            print(f"{prefix}: {line}", file=sys.stderr)
        return None, notes, warnings


def _check(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="pxed check", description="Validate a configuration; one line per problem."
    )
    _add_common(parser)
    args = parser.parse_args(argv)
    config, notes, warnings = _load(args, str(args.config or "pxed"))
    if config is None:
        return 1
    for note in notes:
        print(f"note: {note}")
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"{args.config or 'configuration'}: ok ({_summary(config)})")
    return 0


def _summary(config: Config) -> str:
    parts = [f"interfaces {', '.join(config.interfaces) or 'none'}"]
    if config.dhcp_enabled:
        for sub in config.subnets:
            pools = ", ".join(f"{a}-{b}" for a, b in sub.ranges)
            parts.append(f"subnet {sub.network} pool {pools}")
        parts.append(f"{len(config.hosts)} host(s)")
    if config.tftp.enabled:
        parts.append(f"tftp root {config.tftp.root}")
    return "; ".join(parts)
