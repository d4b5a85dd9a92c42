"""``pxed host MAC [--next PROFILE | --local | --clear]``: a machine's boot-once state.

Asks the running pxed over its control socket (which checks the profile name against the
configuration it runs); when pxed is stopped, writes the lease database itself, and the
state applies when pxed starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pxed.config.parse import normalise_mac
from pxed.control import SOCKET_NAME, NotRunning, request
from pxed.errors import PxedError
from pxed.leases.next_boot import LOCAL, boot_once_store
from pxed.leases.report import add_state_arguments, state_dir_or_say

PROG = "pxed host"
_UNSET = object()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="What a machine boots next: a profile once (then the local disk), the "
        "local disk, or what the configuration gives it.",
    )
    parser.add_argument("mac", help="the machine's MAC address")
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--next", metavar="PROFILE", help="boot PROFILE once; once its last file is sent, "
        "the local disk"
    )
    what.add_argument("--local", action="store_true", help="boot the local disk until told")
    what.add_argument("--clear", action="store_true",
                      help="forget the state: the configuration's profile again")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    add_state_arguments(parser)
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        mac = normalise_mac(args.mac)
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    wanted: object = args.next if args.next else LOCAL if args.local else None
    if not (args.next or args.local or args.clear):
        wanted = _UNSET
    directory = state_dir_or_say(PROG, args.config, args.state_dir)
    if directory is None:
        return 1
    arguments: dict[str, Any] = {"mac": mac}
    if wanted is not _UNSET:
        arguments["next"] = wanted
    try:
        reply = request(directory / SOCKET_NAME, "host", **arguments)
    except (NotRunning, OSError):
        return _offline(directory, args.config, mac, wanted, args.json)
    if reply.get("result") != 0:
        print(f"{PROG}: {reply.get('text')}", file=sys.stderr)
        return 1
    shown = reply.get("arguments", {})
    _show(shown, "the running pxed", args.json)
    return 0


def _offline(
    directory: Path, config: Path | None, mac: str, wanted: object, as_json: bool
) -> int:
    from pxed.app import LEASE_DB  # the daemon's file name, from where the daemon has it
    from pxed.leases.report import leases_config_or_say

    leases = leases_config_or_say(PROG, config)
    if leases is None:
        return 1
    store = boot_once_store(leases, directory / LEASE_DB)
    where = str(directory / LEASE_DB)
    if leases.backend == "postgresql":
        from pxed.leases.pg import safe_dsn

        where = f"PostgreSQL {safe_dsn(leases.dsn or '')}"
    try:
        states = store.open()
        if wanted is not _UNSET:
            store.set(mac, wanted if isinstance(wanted, str) else None)
            states = store.open()
    except PxedError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    _show({"mac": mac, "next_boot": states.get(mac)},
          f"{where} (pxed is not running)", as_json)  # fmt: skip
    return 0


def _show(shown: dict[str, Any], source: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(shown, indent=2))
        return
    state = shown.get("next_boot")
    if state is None:
        said = "no boot-once state: it boots what the configuration gives it"
    elif state == LOCAL:
        said = "boots the local disk (until --next or --clear)"
    else:
        said = f"boots profile {state} once, then the local disk"
    print(f"{shown.get('mac')}: {said} (from {source})")
    if "profile" in shown:
        print(f"  profile now: {shown['profile'] or 'none ([boot] files)'}")
