"""What the status page shows, built on the event loop and sent to every open page.

A snapshot is the whole state the page draws (leases and the current boot stories): the
page redraws from it, so a page that missed updates is right again with the next one. One
snapshot is built per second while at least one page is open, and sent only when it differs
from the last one sent; nothing is built while nobody looks. Subscribers' queues hold one
snapshot: a page that falls behind skips to the newest rather than replaying old ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pxed import __version__
from pxed.leases.report import as_json, rows

if TYPE_CHECKING:
    from pxed.app import Server

INTERVAL = 1.0
"""Seconds between checks for a change while a page is open."""

MAX_BOOTS = 200
"""The stories a snapshot carries at most (the most recently active): a chart of more rows
than that is not read, and the JSON stays small."""


class StatusFeed:
    """Snapshots of ``build()`` (a JSON-able dict) for the page: ``current()`` for one
    request, ``subscribe()`` for a stream of them."""

    def __init__(self, build: Callable[[], dict[str, Any]], interval: float = INTERVAL) -> None:
        self._build = build
        self.interval = interval
        self._queues: set[asyncio.Queue[str]] = set()
        self._last = ""
        self._task: asyncio.Task[None] | None = None

    def current(self) -> str:
        """The state now, as the JSON text the page reads (``now`` added for its clock)."""
        return self._wrap(json.dumps(self._build(), separators=(",", ":")))

    def subscribe(self) -> asyncio.Queue[str]:
        """A queue that gets the current snapshot now and each changed one after."""
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        body = json.dumps(self._build(), separators=(",", ":"))
        queue.put_nowait(self._wrap(body))
        if not self._queues:
            self._last = body
        self._queues.add(queue)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        self._queues.discard(queue)

    def publish(self, snapshot: dict[str, Any]) -> None:
        """Send ``snapshot`` to every subscriber unless it is the one sent last."""
        body = json.dumps(snapshot, separators=(",", ":"))
        if body == self._last:
            return
        self._last = body
        text = self._wrap(body)
        for queue in self._queues:
            if queue.full():  # a page behind: the newest replaces what it has not read
                queue.get_nowait()
            queue.put_nowait(text)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._queues.clear()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self._queues:
                self.publish(self._build())

    @staticmethod
    def _wrap(body: str) -> str:
        # "now" goes outside the comparison: a snapshot that differs only in time is not news.
        return f'{{"now":{time.time():.3f},{body[1:]}' if body != "{}" else body


def latest_boots(stories: list[dict[str, Any]], limit: int = MAX_BOOTS) -> list[dict[str, Any]]:
    """The ``limit`` most recently active stories, in the order they started."""
    recent = sorted(stories, key=lambda s: float(s["updated"]), reverse=True)[:limit]
    return sorted(recent, key=lambda s: (float(s["started"]), str(s["mac"])))


def snapshot(server: Server) -> dict[str, Any]:
    """What the page draws, from ``server`` as it is now (call on its event loop)."""
    timeline = server.timeline
    if timeline is not None:
        timeline.fold()  # the events of the last half second too
    return {
        "version": __version__,
        **server.status(),
        "leases": [_page_row(r) for r in as_json(rows(server.leases(), time.time()))],
        "timeline": timeline is not None,
        "boots": latest_boots(timeline.snapshot()) if timeline is not None else [],
    }


_PAGE_LEASE_KEYS = ("ip", "mac", "hostname", "state", "expires_epoch", "arch", "boot_file",
                    "subnet", "updated_epoch")  # fmt: skip


def _page_row(row: dict[str, Any]) -> dict[str, Any]:
    # Without the counting-down fields: the page works them out from "now", and a snapshot
    # that changed only in those is not sent again.
    return {key: row[key] for key in _PAGE_LEASE_KEYS}
