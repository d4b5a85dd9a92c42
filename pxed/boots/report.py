"""`pxed boots [MAC] [--follow] [--json]`: each machine's boot as one story.

Asks the running daemon over its control socket (the stories still going included); when
none runs, reads the finished stories the daemon kept in its state directory
(``boots.jsonl``). ``--follow`` needs the daemon: it prints each story again as it changes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pxed.boots.story import Boot, arch_name
from pxed.boots.timeline import BOOTS_FILE, read_boots
from pxed.control import SOCKET_NAME, NotRunning, request, stream
from pxed.leases.report import add_state_arguments, state_dir_or_say

PROG = "pxed boots"


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S.%f")[:-5]


def render(boot: Boot) -> str:
    """A story as text: a heading line, a line a step, the verdict."""
    when = datetime.fromtimestamp(boot.started).strftime("%Y-%m-%d %H:%M:%S")
    who = " ".join(x for x in (boot.mac, boot.ip or "", boot.hostname or "") if x)
    lines = [f"{who}  {arch_name(boot.arch)}  started {when}  {boot.outcome.upper()}"]
    for step in boot.steps:
        mark = {True: "ok", False: "FAILED", None: "running"}[step.ok]
        if step.detail.get("probe") and step.kind != "dhcp":
            mark = "probe"
        kind = step.kind.upper()
        lines.append(f"  {_clock(step.start)}  {kind:<4}  {step.label}  [{mark}]")
    if boot.dropped_steps:
        lines.append(f"  ({boot.dropped_steps} earlier step(s) not kept)")
    lines.append(f"  last: {boot.last}")
    if boot.reason:
        lines.append(f"  why:  {boot.reason}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Each machine's boot as one story: DHCP, files, the verdict."
    )
    parser.add_argument("mac", nargs="?", help="only this machine (aa:bb:cc:dd:ee:ff)")
    parser.add_argument("--follow", "-f", action="store_true",
                        help="print stories again as they change (needs the daemon)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="JSON (with --follow: a line each)")
    parser.add_argument("--last", "-n", type=int, metavar="N", help="only the N most recent")
    add_state_arguments(parser)
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    directory = state_dir_or_say(PROG, args.config, args.state_dir)
    if directory is None:
        return 1
    mac = args.mac.lower().replace("-", ":") if args.mac else None
    sock = directory / SOCKET_NAME
    if args.follow:
        return _follow(sock, mac, args.json)
    try:
        reply = request(sock, "boots", **({"mac": mac} if mac else {}))
    except (NotRunning, PermissionError):
        boots = [b for b in read_boots(directory / BOOTS_FILE) if mac is None or b.mac == mac]
        source = f"{directory / BOOTS_FILE} (pxed is not running: finished boots only)"
    else:
        if reply.get("result") != 0:
            print(f"{PROG}: {reply.get('text')}", file=sys.stderr)
            return 1
        boots = [Boot.from_json(b) for b in reply.get("arguments", {}).get("boots", [])]
        source = "the running pxed"
    if args.last:
        boots = boots[-args.last :]
    _print(boots, args.json, source, mac)
    return 0


def _print(boots: Sequence[Boot], as_json: bool, source: str, mac: str | None) -> None:
    if as_json:
        print(json.dumps([b.to_json() for b in boots], indent=2))
        return
    if not boots:
        print(f"no boots{' of ' + mac if mac else ''} in {source}")
        return
    print(f"{len(boots)} boot(s) from {source}")
    for boot in boots:
        print()
        print(render(boot))


def _follow(sock: Path, mac: str | None, as_json: bool) -> int:
    try:
        lines: Iterable[Any] = stream(sock, "boots-follow", **({"mac": mac} if mac else {}))
        for message in lines:
            if message.get("result") != 0:
                print(f"{PROG}: {message.get('text')}", file=sys.stderr)
                return 1
            story = message.get("arguments", {}).get("boot")
            if story is None:
                continue
            if as_json:
                print(json.dumps(story), flush=True)
            else:
                print(render(Boot.from_json(story)) + "\n", flush=True)
    except NotRunning as exc:
        print(f"{PROG}: --follow needs the running daemon ({exc})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
