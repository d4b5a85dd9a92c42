"""The heartbeat loop of a pxed sharing its lease database with others (pxed.cluster).

Every ``[cluster] heartbeat`` seconds, in a thread of its own (its own connection): write
this server's row, read everyone's, and when the set of live servers changed, hand the new
split to the DHCP core and the lease tables, and take the database's leases into the
tables (the servers that left bound addresses this one has not seen). A failed heartbeat
is logged once per outage; the last split stays meanwhile (a server that cannot reach
the database acknowledges nothing anyway, and the others take over its share).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import structlog

from pxed.cluster import Balance, Membership
from pxed.config.model import ClusterConfig
from pxed.errors import PxedError
from pxed.events import Event, Notice
from pxed.leases.pg import Heartbeat, Peer

log = structlog.get_logger("pxed.cluster")

HOLDINGS_EVERY = 15
"""Heartbeats between counts of the database's leases by server (a scan of the table)."""

Apply = Callable[[Balance], Awaitable[None]]


class ClusterMember:
    """Runs the heartbeat; ``apply`` gets each new split (and the first one)."""

    def __init__(
        self,
        dsn: str,
        config: ClusterConfig,
        address: Callable[[], str | None],
        apply: Apply,
        publish: Callable[[list[Event]], None],
        next_boots: Callable[[dict[str, str]], None] | None = None,
        isolated: Callable[[bool], None] | None = None,
    ) -> None:
        self.config = config
        self.membership = Membership(config.name, config.takeover)
        self.peers: list[Peer] = []
        """Every server's row at the last heartbeat (for the status page and metrics)."""
        self.holdings: dict[str, int] = {}
        """Bound leases in the database by server, counted every HOLDINGS_EVERY beats."""
        self._heartbeat = Heartbeat(dsn, config.name, address())
        self._address = address
        self._apply = apply
        self._publish = publish
        self._next_boots = next_boots
        self._isolated = isolated
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def balance(self) -> Balance:
        return self.membership.balance

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self._beat_forever()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not silence this server's heartbeat
                log.exception("cluster.heartbeat_error")
                await asyncio.sleep(self.config.heartbeat)

    async def _beat_forever(self) -> None:
        first = True
        # started: this run's start (joining); beating: since when heartbeats go through;
        # failing: since when they do not (None while they do).
        started = beating = time.monotonic()
        failing: float | None = None
        cut_off = False
        beats = 0
        while True:
            self._heartbeat.address = self._address()
            try:
                peers = await asyncio.to_thread(self._heartbeat.beat)
            except PxedError as exc:
                now = time.monotonic()
                if failing is None:
                    failing = now
                    log.warning("cluster.heartbeat_failed", error=str(exc),
                                keeping=list(self.balance.servers))  # fmt: skip
                if not cut_off and now - failing >= self.config.takeover / 2:
                    # Soon the others take this server's share: stop answering it first.
                    cut_off = True
                    if self._isolated is not None:
                        self._isolated(True)
                await asyncio.sleep(self.config.heartbeat)
                continue
            now = time.monotonic()
            if failing is not None:
                log.info("cluster.heartbeat_back", after=round(now - failing, 1))
                failing, beating = None, now
            if cut_off:
                cut_off = False
                if self._isolated is not None:
                    self._isolated(False)
            self.peers = peers
            if self._heartbeat.clash:
                log.error("cluster.name_clash", name=self.config.name,
                          hint="another pxed writes heartbeats under this [cluster] name: "
                               "give each server its own")  # fmt: skip
                self._heartbeat.clash = False
            change = self.membership.update(
                ((p.name, p.age) for p in peers),
                joining=now - started < 2 * self.config.heartbeat,
                settled=now - beating >= self.config.takeover,
            )
            if change is not None or first:
                joined, left = change if change is not None else ([], [])
                await self._apply(self.balance)
                self._publish(
                    [
                        Notice(
                            "cluster.servers",
                            logging.WARNING if left else logging.INFO,
                            {
                                "me": self.config.name,
                                "servers": list(self.balance.servers),
                                "joined": joined,
                                "left": left,
                                "takeover": self.config.takeover,
                            },
                        )
                    ]
                )
                first = False
            if self._next_boots is not None:
                with contextlib.suppress(PxedError):
                    self._next_boots(await asyncio.to_thread(self._heartbeat.next_boots))
            if beats % HOLDINGS_EVERY == 0:
                with contextlib.suppress(PxedError):
                    self.holdings = await asyncio.to_thread(self._heartbeat.holdings)
            beats += 1
            await asyncio.sleep(self.config.heartbeat)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self._heartbeat.close)
