"""Micro benchmark of the lease layer: store commits and loads, table allocation and memory.

    .venv/bin/python bench/lease_store.py               # store figures, in a temp dir
    .venv/bin/python bench/lease_store.py --dir /var/lib/pxed-bench
    .venv/bin/python bench/lease_store.py table         # offer+ack rate, RSS at 100000 leases

Run the store part on the filesystem the state directory will live on: commits are bound by
fsync, and a tmpfs makes them look free. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pxed.leases import Lease, LeaseState, LeaseStore, LeaseTable

SUBNET = "198.18.0.0/15"
BASE = IPv4Address("198.18.0.0")
T0 = 1_700_000_000.0


def make_lease(n: int, now: float) -> Lease:
    mac = n.to_bytes(6, "big")
    return Lease(
        ip=BASE + 1 + n % 131000,
        client_key=b"\x01" + mac,
        mac=":".join(f"{b:02x}" for b in mac),
        hostname=f"node{n}",
        expires=now + 3600,
        state=LeaseState.ACTIVE,
        subnet=SUBNET,
        updated=now,
    )


def filesystem_of(path: Path) -> str:
    """The mount's type (ext4, tmpfs...), so a reader can tell what fsync cost."""
    best, kind = "", "?"
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                point = fields[1]
                if str(path).startswith(point) and len(point) > len(best):
                    best, kind = point, fields[2]
    except OSError:
        pass
    return kind


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set size of this process, MiB."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def bench_store(directory: Path, seconds: float, load_n: int) -> None:
    path = directory / "leases.sqlite3"
    print(f"lease store at {path} ({filesystem_of(directory.resolve())})")
    with LeaseStore(path) as store:
        n = 0
        for batch in (1, 10, 100):
            commits = 0
            start = time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds:
                now = time.time()
                for _ in range(batch):
                    store.stage(make_lease(n, now))
                    n += 1
                store.commit()
                commits += 1
            print(
                f"  batch {batch:>3}: {commits / elapsed:8.0f} commits/s "
                f"{commits * batch / elapsed:9.0f} leases/s "
                f"({elapsed / commits * 1e3:.2f} ms per commit)"
            )

    # A fresh file with exactly load_n rows, written in one transaction.
    load_path = directory / "load.sqlite3"
    with LeaseStore(load_path) as store:
        now = time.time()
        start = time.perf_counter()
        for i in range(load_n):
            store.stage(make_lease(i, now))
        store.commit()
        write = time.perf_counter() - start
    store = LeaseStore(load_path)
    start = time.perf_counter()
    store.open()  # includes PRAGMA quick_check
    opened = time.perf_counter() - start
    with store:
        start = time.perf_counter()
        leases = store.load()
        elapsed = time.perf_counter() - start
    assert len(leases) == load_n
    print(f"  write {load_n} leases in one commit: {load_n / write:9.0f} leases/s")
    print(f"  open (with quick_check) of that file: {opened * 1e3:.0f} ms")
    print(f"  load  {load_n} leases:               {load_n / elapsed:9.0f} leases/s")
    start = time.perf_counter()
    table = LeaseTable(IPv4Network(SUBNET), [(BASE + 1, BASE + 131070)])
    table.load(leases)
    print(
        f"  table.load of them:                 {load_n / (time.perf_counter() - start):9.0f}"
        " leases/s"
    )


def bench_table(count: int) -> None:
    gc.collect()
    before, _ = rss_mib()
    # A /15 so that 100000 leases fit; the pool is the same 65024 addresses as a full /16
    # minus 512, plus leases outside it (as after the ranges shrank): both kinds are stored.
    table = LeaseTable(
        IPv4Network(SUBNET), [(IPv4Address("198.19.0.0"), IPv4Address("198.19.253.255"))]
    )
    now = T0
    start = time.perf_counter()
    bound = 0
    for n in range(count):
        key = b"\x01" + n.to_bytes(6, "big")
        mac = ":".join(f"{b:02x}" for b in n.to_bytes(6, "big"))
        ip = table.offer(key, mac, None, now, 60.0)
        if ip is None:
            break  # the pool is full
        table.bind(key, mac, ip, f"node{n}", now, 3600)
        bound += 1
    elapsed = time.perf_counter() - start
    # The rest as loaded from the store, outside the ranges (the ranges shrank since).
    table.load(replace(make_lease(n, now), ip=BASE + 1 + n - bound) for n in range(bound, count))
    gc.collect()
    after, peak = rss_mib()
    print(f"table: {bound} x (offer + ack) until the pool was full: {bound / elapsed:,.0f} per s")
    print(
        f"  {len(table)} leases; RSS {after:.1f} MiB (peak {peak:.1f} MiB, "
        f"{before:.1f} MiB before the table); {table.stats(now)}"
    )
    # Reuse after expiry: a second generation of clients through the same pool.
    later = now + 4000
    start = time.perf_counter()
    for n in range(count, count + 65024):
        key = b"\x01" + n.to_bytes(6, "big")
        ip = table.offer(key, "m", None, later, 60.0)
        assert ip is not None
        table.bind(key, "m", ip, None, later, 3600)
    elapsed = time.perf_counter() - start
    print(f"  reuse of expired addresses: {65024 / elapsed:,.0f} (offer + ack) per s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="?", choices=["store", "table", "all"], default="store")
    parser.add_argument("--dir", type=Path, help="directory for the database (default: a temp dir)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per batch size")
    parser.add_argument("--leases", type=int, default=100_000, help="for load and table")
    args = parser.parse_args()
    if args.what in ("table", "all"):
        bench_table(args.leases)  # first: RSS of a process that did nothing else
    if args.what in ("store", "all"):
        if args.dir is not None:
            args.dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="pxed-bench-") as tmp:
            bench_store(Path(tmp), args.seconds, args.leases)
    print(f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
