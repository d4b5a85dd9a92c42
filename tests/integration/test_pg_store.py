"""The PostgreSQL lease store against a real PostgreSQL 15 (the suite's own, tests/lab.py).

What the store must guarantee with several servers writing: one client per address (a
write that would take a bound address from its client is refused, with the row that won),
one binding per client, an outage that loses nothing and needs nobody, and a schema that
only `pxed db init` / `pxed db upgrade` create and change.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pxed.errors import PxedError, StoreUnavailable
from pxed.lab.postgres import PostgresServer
from pxed.leases import Lease, LeaseState
from pxed.leases.pg import SCHEMA_VERSION, PgLeaseStore, init_schema, upgrade_schema
from pxed.net.commit import GroupCommitter

pytestmark = pytest.mark.integration
SUBNET = "198.19.0.0/16"


def lease(ip: str, client: int, *, state: LeaseState = LeaseState.ACTIVE, now: float | None = None,
          length: float = 3600) -> Lease:  # fmt: skip
    now = time.time() if now is None else now
    return Lease(
        ip=IPv4Address(ip),
        client_key=b"\x01" + client.to_bytes(6, "big"),
        mac=":".join(f"{b:02x}" for b in client.to_bytes(6, "big")),
        hostname=f"host{client}",
        expires=now + length,
        state=state,
        subnet=SUBNET,
        updated=now,
        arch=7,
        boot_file="ipxe.efi",
    )


def opened(pg: PostgresServer, name: str) -> PgLeaseStore:
    store = PgLeaseStore(pg.dsn, name)
    store.open()
    return store


def test_the_daemon_refuses_a_database_without_the_schema_and_init_creates_it(
    postgres: PostgresServer,
) -> None:
    with pytest.raises(PxedError, match="run `pxed db init`"):
        opened(postgres, "a")
    assert init_schema(postgres.dsn) == SCHEMA_VERSION
    with pytest.raises(PxedError, match="already has pxed schema version 1"):
        init_schema(postgres.dsn)
    assert upgrade_schema(postgres.dsn) == (SCHEMA_VERSION, SCHEMA_VERSION)
    store = opened(postgres, "a")
    assert store.load() == []
    store.close()
    postgres.sql("UPDATE pxed_schema SET version = 99")
    with pytest.raises(PxedError, match="version 99, written by a newer pxed"):
        opened(postgres, "a")


def test_leases_round_trip_with_the_server_that_wrote_them(postgres: PostgresServer) -> None:
    init_schema(postgres.dsn)
    store = opened(postgres, "pxed-a")
    written = [lease(f"198.19.1.{i}", i) for i in range(1, 200)]
    for x in written:
        store.stage(x)
    result = store.commit()
    assert result.written == len(written) and result.refused == {}
    loaded = {x.ip: x for x in store.load()}
    for x in written:
        got = loaded[x.ip]
        assert got.server == "pxed-a"
        assert (got.client_key, got.mac, got.hostname, got.state, got.arch, got.boot_file) == (
            x.client_key, x.mac, x.hostname, x.state, x.arch, x.boot_file)  # fmt: skip
        assert got.expires == pytest.approx(x.expires)
    assert postgres.sql("SELECT ip FROM leases_readable WHERE hostname = 'host5'") == "198.19.1.5"
    store.close()


def test_an_address_bound_by_one_server_is_refused_to_another_client(
    postgres: PostgresServer,
) -> None:
    init_schema(postgres.dsn)
    a, b = opened(postgres, "a"), opened(postgres, "b")
    a.stage(lease("198.19.1.10", 1))
    assert a.commit().refused == {}
    # b's table did not know: it tries the same address for another client.
    b.stage(lease("198.19.1.10", 2))
    b.stage(lease("198.19.1.11", 3))
    result = b.commit()
    assert result.written == 1
    winner = result.refused[(SUBNET, int(IPv4Address("198.19.1.10")))]
    assert winner is not None and winner.client_key == lease("198.19.1.10", 1).client_key
    assert winner.server == "a"
    # The same client renewing (or rebinding) through b is its own binding: accepted.
    b.stage(lease("198.19.1.10", 1))
    assert b.commit().refused == {}
    # An expired binding is anyone's; the client an address is bound to may quarantine it
    # (DHCPDECLINE: another host answers on it).
    a.stage(lease("198.19.1.20", 4, now=time.time() - 7200))
    a.commit()
    b.stage(lease("198.19.1.20", 5))
    assert b.commit().refused == {}
    declined = Lease(IPv4Address("198.19.1.11"), b"", lease("198.19.1.11", 3).mac, None,
                     time.time() + 600, LeaseState.DECLINED, SUBNET, time.time())  # fmt: skip
    a.stage(declined)
    assert a.commit().refused == {}
    rows = {x.ip: x for x in a.load()}
    assert rows[IPv4Address("198.19.1.20")].client_key == lease("198.19.1.20", 5).client_key
    assert rows[IPv4Address("198.19.1.11")].state is LeaseState.DECLINED
    a.close()
    b.close()


def test_a_client_bound_elsewhere_by_another_server_keeps_one_binding(
    postgres: PostgresServer,
) -> None:
    init_schema(postgres.dsn)
    a, b = opened(postgres, "a"), opened(postgres, "b")
    a.stage(lease("198.19.1.30", 7))
    a.commit()
    b.stage(lease("198.19.1.31", 7, now=time.time() + 1))
    b.commit()
    rows = {str(x.ip): x for x in a.load()}
    assert rows["198.19.1.31"].state is LeaseState.ACTIVE
    assert rows["198.19.1.30"].state is LeaseState.RELEASED
    a.close()
    b.close()


def test_two_servers_racing_for_the_same_addresses_never_share_one(
    postgres: PostgresServer,
) -> None:
    """Two writers commit bindings of the same 400 addresses to different clients at the
    same time, in batches: each address ends up one client's, and each writer was told
    exactly which of its writes lost."""
    init_schema(postgres.dsn)
    stores = {name: opened(postgres, name) for name in ("a", "b")}
    won: dict[str, set[str]] = {"a": set(), "b": set()}
    start = threading.Barrier(2)

    def race(name: str, client_base: int) -> None:
        store = stores[name]
        start.wait()
        for first in range(0, 400, 20):
            for i in range(first, first + 20):
                store.stage(lease(f"198.19.2.{i % 250}" if i < 250 else f"198.19.3.{i - 250}",
                                  client_base + i))  # fmt: skip
            result = store.commit()
            refused = {str(IPv4Address(ip)) for _, ip in result.refused}
            for i in range(first, first + 20):
                ip = f"198.19.2.{i % 250}" if i < 250 else f"198.19.3.{i - 250}"
                if ip not in refused:
                    won[name].add(ip)

    threads = [threading.Thread(target=race, args=(n, base))
               for n, base in (("a", 10_000), ("b", 20_000))]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not won["a"] & won["b"], "an address was accepted for two clients"
    assert len(won["a"] | won["b"]) == 400
    rows = {str(x.ip): x for x in stores["a"].load()}
    for name, ips in won.items():
        for ip in ips:
            assert rows[ip].server == name
    for store in stores.values():
        store.close()


def test_a_database_outage_loses_nothing_and_ends_by_itself(postgres: PostgresServer) -> None:
    """A commit that fails keeps its releases for the next try and drops its bindings:
    their ACKs were never sent, and written later they could land on an address another
    server has given the same client since (the client binds again when it retransmits)."""
    init_schema(postgres.dsn)
    store = opened(postgres, "a")
    store.stage(lease("198.19.1.40", 1))
    store.stage(lease("198.19.1.42", 3))
    store.commit()
    postgres.crash()
    store.stage(lease("198.19.1.41", 2))
    store.stage(lease("198.19.1.42", 3, state=LeaseState.RELEASED))
    with pytest.raises(StoreUnavailable):
        store.commit()
    assert store.pending == 1  # the release
    postgres.start()
    assert store.commit().written == 1
    rows = {str(x.ip): x for x in store.load()}
    assert set(rows) == {"198.19.1.40", "198.19.1.42"}
    assert rows["198.19.1.42"].state is LeaseState.RELEASED
    store.close()


def test_a_write_older_than_the_row_or_a_strangers_decline_is_refused(
    postgres: PostgresServer,
) -> None:
    init_schema(postgres.dsn)
    a, b = opened(postgres, "a"), opened(postgres, "b")
    now = time.time()
    b.stage(lease("198.19.1.70", 1, now=now))
    b.commit()
    # a's write of the same client's binding from before b's (kept through an outage):
    a.stage(lease("198.19.1.70", 1, now=now - 30))
    assert (SUBNET, int(IPv4Address("198.19.1.70"))) in a.commit().refused
    # A DHCPDECLINE from a MAC the address is not bound to (a stale table's holder):
    stranger = Lease(IPv4Address("198.19.1.70"), b"", "02:00:00:00:00:99", None, now + 600,
                     LeaseState.DECLINED, SUBNET, now + 1)  # fmt: skip
    a.stage(stranger)
    assert a.commit().refused
    holder = lease("198.19.1.70", 1).mac
    a.stage(Lease(IPv4Address("198.19.1.70"), b"", holder, None, now + 600,
                  LeaseState.DECLINED, SUBNET, now + 2))  # fmt: skip
    assert a.commit().refused == {}
    # A host name with a NUL (option 12 is bytes) is stored without it, not an outage.
    a.stage(replace(lease("198.19.1.71", 5), hostname="evil\0name"))
    assert a.commit().written == 1
    assert {x.hostname for x in a.load() if str(x.ip) == "198.19.1.71"} == {"evilname"}
    a.close()
    b.close()


async def test_no_reply_leaves_while_the_database_is_down(postgres: PostgresServer) -> None:
    """The group committer drops the replies of a failed commit, retries with backoff and
    sends again once a commit passes; it says so once each way."""
    init_schema(postgres.dsn)
    store = opened(postgres, "a")
    states: list[bool] = []
    committer = GroupCommitter(store, on_store=states.append)
    sent: list[str] = []
    committer.submit([lease("198.19.1.50", 1)], [lambda: sent.append("first")])
    await asyncio.sleep(0.3)
    assert sent == ["first"]
    await asyncio.to_thread(postgres.crash)
    committer.submit([lease("198.19.1.51", 2)], [lambda: sent.append("during")])
    for _ in range(50):
        await asyncio.sleep(0.1)
        if committer.store_down:
            break
    assert committer.store_down and states == [False]
    await asyncio.to_thread(postgres.start)
    committer.submit([lease("198.19.1.52", 3)], [lambda: sent.append("after")])
    for _ in range(150):
        await asyncio.sleep(0.1)
        if "after" in sent:
            break
    assert sent == ["first", "after"], "a reply left for a lease that was not committed"
    assert states[:2] == [False, True]
    await committer.close()
    # The binding whose reply was dropped is not stored either: its client retransmits.
    assert {str(x.ip) for x in store.load()} == {"198.19.1.50", "198.19.1.52"}
    store.close()


def test_a_dsn_with_two_hosts_follows_the_promoted_standby(
    postgres_server: PostgresServer,  # not used: its skip when not root; this test has two
) -> None:
    """PostgreSQL's own replication is the answer to "the database machine died": with both
    hosts in the DSN and target_session_attrs=read-write, the store writes to whichever is
    the primary, and a synchronous standby loses no committed lease at its promotion."""
    standby_dir = Path(tempfile.mkdtemp(prefix="pxed-pg-standby-"))
    primary = PostgresServer(Path(tempfile.mkdtemp(prefix="pxed-pg-primary-")))
    try:
        init_schema(primary.dsn)
        standby = primary.standby(standby_dir)
        dsn = (f"host={primary.socket_dir},{standby.socket_dir} port=5432,5432 user=postgres "
               "dbname=pxed target_session_attrs=read-write")  # fmt: skip
        store = PgLeaseStore(dsn, "a")
        store.open()
        store.stage(lease("198.19.1.60", 1))
        store.commit()
        primary.crash()
        store.stage(lease("198.19.1.61", 2))
        with pytest.raises(StoreUnavailable):
            store.commit()  # the standby is read-only: not taken for the primary
        standby.promote()
        store.stage(lease("198.19.1.61", 2))  # the client's retransmission, bound again
        assert store.commit().written == 1
        assert {str(x.ip) for x in store.load()} == {"198.19.1.60", "198.19.1.61"}
        store.close()
        standby.close()
    finally:
        primary.close()
        shutil.rmtree(standby_dir, ignore_errors=True)
