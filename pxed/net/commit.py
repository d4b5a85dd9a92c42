"""Group commit: lease writes go to disk in a worker thread, ACKs leave when they are durable.

The event loop never waits on fsync. While one transaction is being written, the loop goes
on answering and staging; everything staged meanwhile goes into the next transaction, so
the batch grows with the load by itself (one fsync for many ACKs, none when idle). A reply
that waited on a lease is sent only after the transaction holding that lease has returned,
which is what makes `kill -9` lose no acknowledged lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import structlog

from pxed.leases import Lease, LeaseStore

log = structlog.get_logger("pxed.leases")

T = TypeVar("T")
Sender = Callable[[], None]
SEND_SLICE = 8
"""ACKs a commit sends at once at least: a small batch leaves whole, with no delay."""
SPREAD_STEPS = 4
SPREAD_GAP = 0.001
MAX_SLICE = 16
"""A bigger batch leaves in SPREAD_STEPS slices SPREAD_GAP seconds apart (normally all of it
before the next commit can return), never more than MAX_SLICE at a time: 16000 ACKs a
second, twice what the server can answer, while a commit that was slow (a WAL checkpoint)
does not turn into a burst of hundreds. Sent back to back, the 30-50 ACKs of a commit at
6000/s overflowed perfdhcp's default-sized socket buffer now and then (0.07-0.38% of the
ACKs lost in bench/dhcp_threads runs); spread over 3 ms, none were."""
MIN_INTERVAL = 0.005
"""Seconds from one commit's start to the next one's, under load. Commits back to back ran
about 1300 a second at 3000 exchanges/s, four leases each: every fsync costs CPU here (half
of it in the kernel on a virtual disk) and every commit hands the GIL back and forth with
the event loop. Five milliseconds made that about 200 commits, halved the writer thread's
CPU per exchange and added at most 5 ms to an ACK (none to the first after a quiet spell)."""


class GroupCommitter:
    """Owns the lease store's writes: one transaction in flight at a time."""

    def __init__(self, store: LeaseStore, min_interval: float = MIN_INTERVAL) -> None:
        self.store = store
        self.min_interval = min_interval
        self._last_start = -min_interval
        self._timer: asyncio.TimerHandle | None = None
        # One thread: SQLite transactions on one connection must not interleave.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="pxed-leases")
        self._waiting: list[Sender] = []
        self._inflight: asyncio.Future[int] | None = None
        # ACKs of committed leases not sent yet (see SPREAD_GAP), by spread.
        self._spreading: dict[int, tuple[asyncio.TimerHandle, list[Sender]]] = {}
        self._spread_id = 0
        self.commits = 0

    def submit(self, writes: Iterable[Lease], senders: Iterable[Sender]) -> None:
        """Stage ``writes``; call each sender once they (and all staged before) are durable."""
        for lease in writes:
            self.store.stage(lease)
        self._waiting.extend(senders)
        if self._inflight is None and self._timer is None:
            self._start()

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        now = loop.time()
        wait = self._last_start + self.min_interval - now
        if wait > 0:
            self._timer = loop.call_later(wait, self._start)
            return
        self._last_start = now
        batch, self._waiting = self._waiting, []
        fut = loop.run_in_executor(self._executor, self.store.commit)
        self._inflight = fut
        fut.add_done_callback(lambda f: self._done(f, batch))

    def _done(self, fut: asyncio.Future[int], batch: list[Sender]) -> None:
        self._inflight = None
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            # The leases stay staged for the next try; the clients' retransmissions get
            # their ACK then. Sending now would acknowledge what is not on disk.
            log.error("leases.commit_failed", error=str(exc), replies_held_back=len(batch))
        else:
            self.commits += 1
            self._send_paced(batch)
        if self._waiting or self.store.pending:
            self._start()

    def _send_paced(self, batch: list[Sender], step: int = 0) -> None:
        """Send in slices a millisecond apart, so that a relay or a client behind a
        default-sized socket buffer gets the ACKs of a big transaction as a stream rather
        than as one burst it overflows on (and so that reading goes on in between)."""
        if not step:
            step = min(max(SEND_SLICE, -(-len(batch) // SPREAD_STEPS)), MAX_SLICE)
        head, rest = batch[:step], batch[step:]
        for send in head:
            send()
        if rest:
            self._spread_id += 1
            handle = asyncio.get_running_loop().call_later(
                SPREAD_GAP, self._send_rest, self._spread_id, step
            )
            self._spreading[self._spread_id] = (handle, rest)

    def _send_rest(self, spread_id: int, step: int) -> None:
        _, rest = self._spreading.pop(spread_id)
        self._send_paced(rest, step)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run other store work (prune) in the writer thread, between transactions."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        """Finish: write what is staged and send what waited on it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._inflight is not None:
            await asyncio.wait([self._inflight])
        if self._waiting or self.store.pending:
            batch, self._waiting = self._waiting, []
            await self.run(self.store.commit)
            for send in batch:
                send()
        # What is committed but still being spread goes out now, before the sockets close.
        for handle, rest in self._spreading.values():
            handle.cancel()
            for send in rest:
                send()
        self._spreading.clear()
        self._executor.shutdown(wait=True)
