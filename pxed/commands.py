"""The control socket's commands, answered from a running pxed.Server (pxed.control has
the protocol). Each reads the server on the event loop, between two packets, so the answers
are consistent without locks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

from pxed import __version__
from pxed.boots.story import Boot
from pxed.config.parse import normalise_mac
from pxed.control import Answer, Follower, Handler, answer, send_line
from pxed.errors import PxedError
from pxed.leases.next_boot import LOCAL
from pxed.leases.report import as_json, rows
from pxed.profiles.select import by_name

if TYPE_CHECKING:
    from pxed.app import Server


def lease_rows(server: Server, now: float) -> list[dict[str, Any]]:
    """Every lease the server holds, as `pxed leases --json` shows them."""
    return as_json(rows(server.leases(), now))


def _matches(row: Mapping[str, Any], args: Mapping[str, Any]) -> bool:
    mac = args.get("mac")
    ip = args.get("ip")
    return (mac is None or row["mac"] == str(mac).lower()) and (ip is None or row["ip"] == ip)


def handlers(server: Server) -> dict[str, Handler]:
    async def status(args: Mapping[str, Any]) -> Answer:
        return answer(0, "running", version=__version__, **server.status())

    async def stats(args: Mapping[str, Any]) -> Answer:
        return answer(0, "counters since start", **server.counters())

    async def leases(args: Mapping[str, Any]) -> Answer:
        shown = [r for r in lease_rows(server, time.time()) if _matches(r, args)]
        return answer(0, f"{len(shown)} lease(s)", leases=shown)

    async def lease_delete(args: Mapping[str, Any]) -> Answer:
        if not args.get("mac") and not args.get("ip"):
            return answer(1, "lease-delete needs mac or ip")
        try:
            ip = IPv4Address(str(args["ip"])) if args.get("ip") else None
        except ValueError:
            return answer(1, f"{args['ip']!r} is not an IPv4 address")
        gone = await server.delete_lease(mac=args.get("mac"), ip=ip)
        if not gone:
            return answer(1, "no active lease matches")
        return answer(0, f"{len(gone)} lease(s) released", leases=[str(x.ip) for x in gone])

    async def boots(args: Mapping[str, Any]) -> Answer:
        timeline = server.timeline
        if timeline is None:
            return answer(1, "the boot timeline is off ([boots] keep = 0)")
        timeline.fold()
        mac = args.get("mac")
        stories = timeline.recent(str(mac).lower() if mac else None)
        return answer(0, f"{len(stories)} boot(s)", boots=[b.to_json() for b in stories])

    async def reload(args: Mapping[str, Any]) -> Answer:
        if server.reloader is None:
            return answer(1, "this pxed has no configuration file to read again "
                             "(an embedder reloads through Server.reload)")  # fmt: skip
        ok, problems = await server.reloader()
        if ok:
            return answer(0, "reloaded")
        return answer(1, "refused: the running configuration keeps serving", problems=problems)

    async def host(args: Mapping[str, Any]) -> Answer:
        try:
            mac = normalise_mac(str(args.get("mac", "")))
        except ValueError as exc:
            return answer(1, str(exc))
        if "next" in args:
            wanted = args["next"]
            if wanted is not None and by_name(server.config.profiles, str(wanted)) is None:
                names = ", ".join(sorted({p.name for p in server.config.profiles} | {LOCAL}))
                return answer(1, f"no profile named {wanted!r} (there are: {names})")
            try:
                server.set_next_boot(mac, None if wanted is None else str(wanted))
            except PxedError as exc:
                return answer(1, str(exc))
        profile = server.profile_files.profile(mac)
        return answer(0, f"host {mac}", mac=mac, next_boot=server.next_boots.get(mac),
                      profile=profile.name if profile is not None else None)  # fmt: skip

    return {
        "status": status,
        "host": host,
        "stats": stats,
        "leases": leases,
        "lease-delete": lease_delete,
        "boots": boots,
        "reload": reload,
    }


def followers(server: Server) -> dict[str, Follower]:
    async def boots_follow(args: Mapping[str, Any], writer: asyncio.StreamWriter) -> None:
        timeline = server.timeline
        if timeline is None:
            await send_line(writer, answer(1, "the boot timeline is off ([boots] keep = 0)"))
            return
        mac = str(args["mac"]).lower() if args.get("mac") else None
        queue: asyncio.Queue[Boot] = asyncio.Queue(256)

        def take(boot: Boot) -> None:
            if mac is None or boot.mac == mac:
                with contextlib.suppress(asyncio.QueueFull):  # a slow reader skips updates
                    queue.put_nowait(boot)

        timeline.listeners.append(take)
        try:
            await send_line(writer, answer(0, "following"))
            while True:
                boot = await queue.get()
                await send_line(writer, answer(0, "boot", boot=boot.to_json()))
        finally:
            timeline.listeners.remove(take)

    return {"boots-follow": boots_follow}
