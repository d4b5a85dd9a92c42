"""Group commit: lease writes go to disk in a worker thread, ACKs leave when they are durable.

The event loop never waits on fsync. While one transaction is being written, the loop goes
on answering and staging; everything staged meanwhile goes into the next transaction, so
the batch grows with the load by itself (one fsync for many ACKs, none when idle). A reply
that waited on a lease is sent only after the transaction holding that lease has returned,
which is what makes `kill -9` lose no acknowledged lease.

A shared database (PostgreSQL) may refuse a write: another server bound that address to
another client first. The replies that waited on a refused write are dropped (the client
retransmits, and the table, told what the database holds, answers it right). When a commit
fails (the database is away), the replies of its batch are dropped too, the leases stay
staged, the outage is logged once and commits are retried with backoff until one passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import structlog

from pxed.errors import StoreUnavailable
from pxed.leases import CommitResult, Lease
from pxed.leases.backend import Backend

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
RETRY_FIRST = 0.5
RETRY_MAX = 4.0
"""Seconds between commit attempts while the store is down: doubling from RETRY_FIRST up
to RETRY_MAX. A DHCP client retransmits on its own meanwhile, and every retransmission
that arrives while the store is down is simply left unanswered."""

Refused = Mapping[tuple[str, int], Lease | None]
_Unit = tuple[list[Lease], list[Sender]]


class GroupCommitter:
    """Owns the lease store's writes: one transaction in flight at a time.

    ``on_refused``: told (in the loop) what the database holds for each address whose write
    it refused. ``on_store``: told when the store goes down (False) and comes back (True).
    """

    def __init__(
        self,
        store: Backend,
        min_interval: float = MIN_INTERVAL,
        *,
        on_refused: Callable[[Refused], None] | None = None,
        on_store: Callable[[bool], None] | None = None,
    ) -> None:
        self.store = store
        self.min_interval = min_interval
        self.on_refused = on_refused
        self.on_store = on_store
        self._down_since: float | None = None
        self._retry = RETRY_FIRST
        self.failed = 0
        """Commits that failed (the store was down), since start."""
        self.refused = 0
        """Writes the database refused (another server's binding won), since start."""
        self._last_start = -min_interval
        self._timer: asyncio.TimerHandle | None = None
        # One thread: SQLite transactions on one connection must not interleave.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="pxed-leases")
        # Submissions not in a transaction yet: their leases are staged when one starts, so
        # that a transaction's result speaks for exactly the replies it carries.
        self._waiting: list[_Unit] = []
        self._inflight: asyncio.Future[CommitResult] | None = None
        # ACKs of committed leases not sent yet (see SPREAD_GAP), by spread.
        self._spreading: dict[int, tuple[asyncio.TimerHandle, list[Sender]]] = {}
        self._spread_id = 0
        self.commits = 0

    def store_back(self) -> None:
        """The store works again (a commit passed, or the owner's probe did): say so once,
        and write what stayed staged."""
        if self._down_since is None:
            return
        log.warning("leases.store_back", store=self.store.where,
                    down_for=round(time.monotonic() - self._down_since, 1),
                    failed_commits=self.failed)  # fmt: skip
        self._down_since = None
        self._retry = RETRY_FIRST
        if self._timer is not None and self._inflight is None:
            self._timer.cancel()
            self._timer = None
            self._start()

    def assume_down(self, since: float) -> None:
        """The store was found down before any commit (at start-up): say it is back when a
        commit passes, and do not say it is down again."""
        self._down_since = since

    @property
    def store_down(self) -> bool:
        """The last commit failed: nothing can be acknowledged until one passes."""
        return self._down_since is not None

    def submit(self, writes: Iterable[Lease], senders: Iterable[Sender]) -> None:
        """Write ``writes``; call each sender once they (and all submitted before) are
        durable, unless the database refused one of them (then none is called)."""
        self.submit_all([(list(writes), list(senders))])

    def submit_all(self, units: Iterable[tuple[list[Lease], list[Sender]]]) -> None:
        """``submit`` for each (writes, senders) of a burst, in one go (one transaction)."""
        self._waiting.extend(units)
        if self._inflight is None and self._timer is None:
            self._start()

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        if not self._waiting and not self.store.pending:
            return
        now = loop.time()
        wait = self._last_start + self.min_interval - now
        if wait > 0:
            self._timer = loop.call_later(wait, self._start)
            return
        self._last_start = now
        batch, self._waiting = self._waiting, []
        self._stage(batch)
        fut = loop.run_in_executor(self._executor, self.store.commit)
        self._inflight = fut
        fut.add_done_callback(lambda f: self._done(f, batch))

    def _stage(self, batch: list[_Unit]) -> None:
        for writes, _ in batch:
            for lease in writes:
                self.store.stage(lease)

    def _done(self, fut: asyncio.Future[CommitResult], batch: list[_Unit]) -> None:
        self._inflight = None
        if fut.cancelled():
            return
        exc = fut.exception()
        if isinstance(exc, StoreUnavailable):
            self._failed(exc, batch)
            return
        if exc is not None:
            # A batch the store cannot take (a row it cannot hold): its replies are dropped,
            # nothing is retried, and the store is not down for the others.
            log.error("leases.commit_rejected", store=self.store.where, error=str(exc),
                      replies_dropped=sum(len(unit) for _, unit in batch))  # fmt: skip
            if self._waiting or self.store.pending:
                self._start()
            return
        result = fut.result()
        self.commits += 1
        if self._down_since is not None and self.on_store is not None:
            self.on_store(True)  # the owner reloads and then calls store_back()
        elif self._down_since is not None:
            self.store_back()
        senders = _replies(batch, result.refused)
        if result.refused:
            self.refused += len(result.refused)
            log.info("leases.refused", count=len(result.refused), replies_dropped=sum(
                len(unit) for _, unit in batch) - len(senders))  # fmt: skip
            if self.on_refused is not None:
                self.on_refused(result.refused)
        self._send_paced(senders)
        if self._waiting or self.store.pending:
            self._start()

    def _failed(self, exc: BaseException, batch: list[_Unit]) -> None:
        """A commit failed: drop its replies (sending one would acknowledge what is not
        stored; the clients retransmit), keep its leases staged, and retry later."""
        self.failed += 1
        dropped = sum(len(unit) for _, unit in batch)
        if self._down_since is None:
            self._down_since = time.monotonic()
            # Once per outage: a database away for an hour must not write a line a second.
            log.error(
                "leases.store_down",
                store=self.store.where,
                error=str(exc),
                replies_dropped=dropped,
                retry="with backoff until it is back; nothing is acknowledged meanwhile",
            )
            if self.on_store is not None:
                self.on_store(False)
        else:
            log.debug("leases.commit_failed", error=str(exc), replies_dropped=dropped)
        wait, self._retry = self._retry, min(self._retry * 2, RETRY_MAX)
        self._timer = asyncio.get_running_loop().call_later(wait, self._start)

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
        if self._timer is not None:  # set by the last transaction's end (a retry, a next one)
            self._timer.cancel()
            self._timer = None
        if self._waiting or self.store.pending:
            batch, self._waiting = self._waiting, []
            self._stage(batch)
            try:
                result = await self.run(self.store.commit)
            except Exception as exc:
                log.error("leases.commit_failed", error=str(exc), replies_dropped=len(batch))
            else:
                for send in _replies(batch, result.refused):
                    send()
        # What is committed but still being spread goes out now, before the sockets close.
        for handle, rest in self._spreading.values():
            handle.cancel()
            for send in rest:
                send()
        self._spreading.clear()
        self._executor.shutdown(wait=True)


def _replies(batch: list[_Unit], refused: Refused) -> list[Sender]:
    """The replies of a committed batch that may leave: those of every datagram none of
    whose writes the database refused."""
    if not refused:
        return [send for _, unit in batch for send in unit]
    return [
        send
        for writes, unit in batch
        if not any((lease.subnet, int(lease.ip)) in refused for lease in writes)
        for send in unit
    ]
