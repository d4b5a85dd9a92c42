"""The daemon around pxed.Server: signals, systemd's notify protocol, reload and stop.

    SIGHUP           re-read the configuration (the same file and flags), Server.reload
    SIGTERM, SIGINT  no new requests, running transfers get [server] stop_grace, exit 0

systemd hears READY=1 once every socket is bound, RELOADING=1 / READY=1 around a reload,
STATUS= (mode, leases, transfers) when it changes (looked at every few seconds),
STOPPING=1, and WATCHDOG=1 when the unit sets WatchdogSec=. The CLI parses its flags and
calls run(); an embedder that wants the same behaviour calls it too.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import structlog

from pxed.app import Server
from pxed.config import Config
from pxed.errors import ConfigError, PxedError
from pxed.privileges import Account, PrivilegeError
from pxed.sdnotify import notify, reloading, watchdog_interval

log = structlog.get_logger("pxed")

Loader = Callable[[list[str], list[str]], Config]
"""Loads the configuration again (filling notes and warnings); raises ConfigError."""

STATUS_EVERY = 5.0
"""Seconds between looks at the status line (sent only when it changed)."""


def status_line(status: dict[str, Any]) -> str:
    """What `systemctl status pxed` shows under the unit."""
    return (
        f"{status['mode']}: {status['leases']} lease record(s), "
        f"{status['transfers']} TFTP transfer(s) running"
    )


class Service:
    """One daemon run: a Server, the signals that steer it and what systemd is told."""

    def __init__(
        self, server: Server, load: Loader | None = None, user: Account | None = None
    ) -> None:
        self.server = server
        self._load = load
        self.user = user
        """Who pxed becomes once every socket is bound (--user); None: it stays as it is."""
        self._stop = asyncio.Event()
        self._reload_wanted = asyncio.Event()
        self._status = ""
        self._tasks: list[asyncio.Task[None]] = []
        self.problems: list[str] = []
        """Why the last reload was refused (empty after one that worked)."""
        server.reloader = self._reload_for_control

    def stop(self) -> None:
        self._stop.set()

    def hangup(self) -> None:
        # Several SIGHUPs during one reload make one more reload, not a queue of them.
        self._reload_wanted.set()

    async def run(self) -> int:
        """Start the server, serve until SIGTERM/SIGINT, stop gracefully; the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        # Before start(): a SIGHUP during start-up must not kill the LAN's DHCP server.
        loop.add_signal_handler(signal.SIGHUP, self.hangup)
        try:
            code = await self._start()
            if code:
                return code
            self._tasks = [
                asyncio.create_task(self._reloads()),
                asyncio.create_task(self._status_loop()),
            ]
            interval = watchdog_interval()
            if interval is not None:
                self._tasks.append(asyncio.create_task(self._watchdog(interval)))
            try:
                notify("READY=1", self._status_field(force=True))
                await self._stop.wait()
            finally:  # also when cancelled: the leases are written and the sockets closed
                notify("STOPPING=1")
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                await self.server.close(grace=self.server.config.stop_grace)
                log.info("pxed.stopped")
            return 0
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    async def _start(self) -> int:
        try:
            await self.server.start()
        except ConfigError as exc:
            for line in exc.problems:
                log.error("pxed.refused", problem=line)
            return 2
        except PxedError as exc:  # e.g. a lease database that is not ours
            log.error("pxed.refused", problem=str(exc))
            return 2
        except PermissionError as exc:
            log.error(
                "pxed.refused",
                problem=f"{exc} (binding ports 67/69 needs root or CAP_NET_BIND_SERVICE)",
            )
            return 2
        except OSError as exc:
            log.error("pxed.refused", problem=str(exc))
            return 2
        if self.user is not None:
            try:
                self._drop(self.user)
            except (PrivilegeError, OSError) as exc:
                log.error("pxed.refused", problem=str(exc))
                try:
                    await self.server.close()
                except OSError as close_exc:  # after the drop: root's files may stay behind
                    log.warning("pxed.close_error", error=str(close_exc))
                return 2
        return 0

    def _drop(self, user: Account) -> None:
        """--user: the state directory handed over, then root given up (pxed.privileges)."""
        from pxed import privileges
        from pxed.app import LEASE_DB, LOCK_FILE
        from pxed.boots.timeline import BOOTS_FILE
        from pxed.control import SOCKET_NAME

        state_dir = self.server.config.state_dir
        names = [LOCK_FILE, BOOTS_FILE, SOCKET_NAME, LEASE_DB,
                 *(LEASE_DB + tail for tail in ("-wal", "-shm", "-journal"))]  # fmt: skip
        chowned = privileges.hand_over(state_dir, user, names)
        privileges.drop(user)
        privileges.check_writable(state_dir, user)
        log.info(
            "pxed.user",
            user=user.name,
            uid=user.uid,
            gid=user.gid,
            groups=list(user.groups),
            capabilities=[privileges.CAPABILITY_NAMES[c] for c in privileges.KEPT],
            chowned=[str(p) for p in chowned],
        )

    # -- reload ---------------------------------------------------------------------------

    async def _reloads(self) -> None:
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            await self.reload()

    async def reload(self) -> bool:
        """Load the configuration again and hand it to the server; False if refused (the
        old one keeps serving and the log says why, one line per problem)."""
        reloading()
        try:
            return await self._reload()
        finally:
            notify("READY=1", self._status_field(force=True))

    async def _reload_for_control(self) -> tuple[bool, list[str]]:
        ok = await self.reload()
        return ok, list(self.problems)

    async def _reload(self) -> bool:
        if self._load is None:
            log.warning("pxed.reload_refused", problem="no configuration to load again")
            return False
        notes: list[str] = []
        warnings: list[str] = []
        problems: list[str]
        self.problems = []
        try:
            config = self._load(notes, warnings)
            for warning in warnings:
                log.warning("pxed.config", note=warning)
            await self.server.reload(config)
            return True
        except ConfigError as exc:
            problems = list(exc.problems)
        except PxedError as exc:
            problems = [str(exc)]
        except OSError as exc:
            # A socket that could not be opened again (a port taken meanwhile): the new
            # configuration is in place, that socket is not (see Server.reload).
            self.problems = [str(exc)]
            log.error(
                "pxed.reload_failed",
                problem=str(exc),
                serving="the new configuration, without the sockets that could not be opened",
            )
            return False
        self.problems = problems
        for line in problems:
            log.error("pxed.reload_refused", problem=line)
        log.warning(
            "pxed.reload_refused",
            problems=len(problems),
            serving="the configuration loaded before",
        )
        return False

    # -- systemd --------------------------------------------------------------------------

    def _status_field(self, force: bool = False) -> str:
        line = status_line(self.server.status())
        if line == self._status and not force:
            return ""
        self._status = line
        return f"STATUS={line}"

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY)
            field = self._status_field()
            if field:
                notify(field)

    async def _watchdog(self, interval: float) -> None:
        # Pinged from the event loop itself: a loop stuck in a bug stops the pings, and
        # systemd restarts pxed (what WatchdogSec= is for).
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(interval)


async def run(
    config: Config,
    notes: list[str] | None = None,
    warnings: list[str] | None = None,
    load: Loader | None = None,
    user: str | None = None,
) -> int:
    """The daemon: what `pxed` runs after parsing its flags. ``load`` reads the
    configuration again on SIGHUP (the CLI's: the same file and flags). ``user``
    (``--user``): the account pxed becomes once its sockets are bound; checked before
    anything is bound."""
    account: Account | None = None
    if user is not None:
        from pxed.privileges import check_can_drop

        try:
            account = check_can_drop(user)
        except PrivilegeError as exc:
            log.error("pxed.refused", problem=str(exc))
            return 2
    for note in notes or []:
        log.info("pxed.config", note=note)
    for warning in warnings or []:
        log.warning("pxed.config", note=warning)
    try:
        server = Server(config)
    except ConfigError as exc:
        for line in exc.problems:
            log.error("pxed.refused", problem=line)
        return 2
    return await Service(server, load, account).run()
