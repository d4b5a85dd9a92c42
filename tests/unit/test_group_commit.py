"""GroupCommitter: ACKs after their commit, commits spaced under load, nothing left at close."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from pxed.leases import CommitResult, Lease, LeaseState, LeaseStore
from pxed.net.commit import GroupCommitter

T0 = 1_700_000_000.0


def lease(n: int) -> Lease:
    return Lease(
        ip=IPv4Address("198.19.0.0") + n,
        client_key=b"\x01" + n.to_bytes(6, "big"),
        mac="m",
        hostname=None,
        expires=T0 + 3600,
        state=LeaseState.ACTIVE,
        subnet="198.19.0.0/16",
        updated=T0,
    )


class RecordingStore(LeaseStore):
    """A real store that notes when each commit started (loop clock) and what it held."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(path)
        self.loop = loop
        self.starts: list[float] = []

    def commit(self) -> CommitResult:
        if self.pending:
            self.starts.append(self.loop.time())
        return super().commit()


def on_disk(store: LeaseStore) -> set[IPv4Address]:
    return {x.ip for x in store.load()}


async def test_a_reply_leaves_only_once_its_lease_is_on_disk(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "l.sqlite3", asyncio.get_running_loop())
    store.open()
    committer = GroupCommitter(store, min_interval=0.05)
    seen: list[tuple[int, bool]] = []
    done = asyncio.Event()

    def sender(n: int) -> None:
        # Called from the loop after the commit returned: the row must be readable now.
        seen.append((n, lease(n).ip in on_disk(store)))
        if len(seen) == 3:
            done.set()

    for n in (1, 2, 3):
        committer.submit([lease(n)], [lambda n=n: sender(n)])
    await asyncio.wait_for(done.wait(), 5)
    await committer.close()
    store.close()
    assert seen == [(1, True), (2, True), (3, True)]


async def test_commits_under_load_are_spaced_and_grouped(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    store = RecordingStore(tmp_path / "l.sqlite3", loop)
    store.open()
    interval = 0.05
    committer = GroupCommitter(store, min_interval=interval)
    sent: list[int] = []
    for n in range(40):  # 40 submissions over about 0.2 s, one every 5 ms
        committer.submit([lease(n)], [lambda n=n: sent.append(n)])
        await asyncio.sleep(0.005)
    under_load = list(store.starts)  # close() then writes the rest at once, by design
    await committer.close()
    store.close()
    assert sorted(sent) == list(range(40))
    gaps = [b - a for a, b in itertools.pairwise(under_load)]
    # The starts are stamped by the writer thread, which a loaded machine may pick up a few
    # ms late for one commit and not the next: the loop spaces them by the interval.
    assert gaps and min(gaps) >= interval - 0.005
    # Grouped: far fewer commits than submissions (each waited for the interval).
    assert len(store.starts) < 20


async def test_the_first_commit_after_a_quiet_spell_does_not_wait(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    store = RecordingStore(tmp_path / "l.sqlite3", loop)
    store.open()
    committer = GroupCommitter(store, min_interval=10.0)  # would show as a 10 s wait
    sent = asyncio.Event()
    submitted = loop.time()
    committer.submit([lease(1)], [sent.set])
    await asyncio.wait_for(sent.wait(), 5)
    assert store.starts[0] - submitted < 1.0
    # The next one within the interval waits for the timer; close() must not: it cancels
    # the timer and writes what is staged at once.
    late: list[int] = []
    committer.submit([lease(2)], [lambda: late.append(2)])
    await asyncio.wait_for(committer.close(), 5)
    assert late == [2]
    assert lease(2).ip in on_disk(store)
    store.close()


class SliceRecorder:
    """Senders that note which loop callback sent them: one callback is one slice."""

    def __init__(self, loop: asyncio.AbstractEventLoop, total: int) -> None:
        self.loop = loop
        self.total = total
        self.slices: list[tuple[float, list[int]]] = []
        self.open = False
        self.done = asyncio.Event()

    def sender(self, n: int) -> Callable[[], None]:
        def send() -> None:
            if not self.open:
                # Runs right after the callback sending this slice returns.
                self.loop.call_soon(self._close)
                self.open = True
                self.slices.append((self.loop.time(), []))
            self.slices[-1][1].append(n)
            if sum(len(ns) for _, ns in self.slices) == self.total:
                self.done.set()

        return send

    def _close(self) -> None:
        self.open = False


async def test_a_big_batch_of_acks_is_spread_a_small_one_is_not(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    store = RecordingStore(tmp_path / "l.sqlite3", loop)
    store.open()
    committer = GroupCommitter(store, min_interval=0.0)
    # 40 ACKs behind one commit: four slices of 10, a millisecond or more apart.
    big = SliceRecorder(loop, 40)
    committer.submit([lease(n) for n in range(40)], [big.sender(n) for n in range(40)])
    await asyncio.wait_for(big.done.wait(), 5)
    assert [len(ns) for _, ns in big.slices] == [10, 10, 10, 10]
    assert sorted(n for _, ns in big.slices for n in ns) == list(range(40))
    starts = [t for t, _ in big.slices]
    assert all(b - a >= 0.0009 for a, b in itertools.pairwise(starts))
    # Five ACKs: all at once, no spreading.
    small = SliceRecorder(loop, 5)
    committer.submit([lease(n) for n in range(100, 105)], [small.sender(n) for n in range(5)])
    await asyncio.wait_for(small.done.wait(), 5)
    assert [len(ns) for _, ns in small.slices] == [5]
    # 100 ACKs (a commit that took long): never more than 16 at a time.
    slow = SliceRecorder(loop, 100)
    committer.submit([lease(n) for n in range(200, 300)], [slow.sender(n) for n in range(100)])
    await asyncio.wait_for(slow.done.wait(), 5)
    assert [len(ns) for _, ns in slow.slices] == [16] * 6 + [4]
    await committer.close()
    store.close()


async def test_close_sends_what_is_committed_but_still_spread(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    store = RecordingStore(tmp_path / "l.sqlite3", loop)
    store.open()
    committer = GroupCommitter(store, min_interval=0.0)
    sent: list[int] = []
    first = asyncio.Event()

    def sender(n: int) -> None:
        sent.append(n)
        first.set()

    committer.submit([lease(n) for n in range(40)], [lambda n=n: sender(n) for n in range(40)])
    await asyncio.wait_for(first.wait(), 5)  # the first slice is out, the rest is waiting
    assert len(sent) < 40
    await committer.close()
    assert sorted(sent) == list(range(40))
    store.close()
