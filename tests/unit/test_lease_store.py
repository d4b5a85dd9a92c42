"""LeaseStore: schema, round trip, batching, refusal of foreign/corrupt files, kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxed.errors import PxedError
from pxed.leases import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Lease,
    LeaseState,
    LeaseStore,
    LeaseTable,
    read_leases,
)

ROOT = Path(__file__).resolve().parents[2]
SUBNET = "198.19.0.0/16"
T0 = 1_700_000_000.0


def lease(n: int, state: LeaseState = LeaseState.ACTIVE, **changes: object) -> Lease:
    values: dict[str, object] = {
        "ip": IPv4Address("198.19.0.0") + n,
        "client_key": b"\x01" + n.to_bytes(6, "big"),
        "mac": ":".join(f"{b:02x}" for b in n.to_bytes(6, "big")),
        "hostname": f"node{n}" if n % 2 else None,
        "expires": T0 + 3600 + n,
        "state": state,
        "subnet": SUBNET,
        "updated": T0 + n / 8,
    }
    values.update(changes)
    return Lease(**values)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "sub" / "leases.sqlite3"


def test_open_creates_directories_schema_and_pragmas(db: Path) -> None:
    with LeaseStore(db) as store:
        assert store.load() == []
    assert db.exists()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    # reopening an existing database is fine, and open() twice is harmless
    store = LeaseStore(db)
    store.open()
    store.open()
    store.close()
    store.close()


def test_round_trip_every_field_and_state(db: Path) -> None:
    leases = [
        lease(1),
        lease(2, LeaseState.RELEASED),
        lease(3, LeaseState.DECLINED, client_key=b"", mac="", hostname=None),
        lease(4, hostname="ünïcode-host"),
        lease(5, subnet="198.18.0.0/16", ip=IPv4Address("198.18.0.5")),
        lease(6, ip=IPv4Address("198.19.255.254"), expires=2.0**40),
    ]
    with LeaseStore(db) as store:
        for x in leases:
            store.stage(x)
        assert store.pending == len(leases)
        assert store.commit().written == len(leases)
        assert store.pending == 0
    with LeaseStore(db) as store:
        loaded = store.load()
    key = lambda x: (x.subnet, int(x.ip))  # noqa: E731
    assert sorted(loaded, key=key) == sorted(leases, key=key)
    # one string per subnet, shared by its leases (memory with 100000 leases)
    same = [x.subnet for x in loaded if x.subnet == SUBNET]
    assert all(s is same[0] for s in same)


def test_commit_batches_upserts_and_is_a_noop_when_empty(db: Path) -> None:
    with LeaseStore(db) as store:
        assert store.commit().written == 0
        store.stage(lease(1))
        store.stage(lease(1, expires=T0 + 7))  # same address: the later wins, one row
        store.stage(lease(2))
        assert store.pending == 2
        assert store.commit().written == 2
        store.stage(lease(2, LeaseState.RELEASED, updated=T0 + 9))
        assert store.commit().written == 1
        got = {int(x.ip) & 0xFF: x for x in store.load()}
    assert got[1].expires == T0 + 7
    assert got[2].state is LeaseState.RELEASED
    assert len(got) == 2


def test_offered_holds_are_never_stored(db: Path) -> None:
    store = LeaseStore(db)
    with pytest.raises(ValueError, match="never stored"):
        store.stage(lease(1, LeaseState.OFFERED))


def test_close_commits_what_is_staged(db: Path) -> None:
    store = LeaseStore(db)
    store.open()
    store.stage(lease(1))
    store.close()
    with LeaseStore(db) as again:
        assert [x.ip for x in again.load()] == [lease(1).ip]


def test_closed_store_refuses_io(db: Path) -> None:
    store = LeaseStore(db)
    store.stage(lease(1))  # staging needs no file
    with pytest.raises(RuntimeError, match="not open"):
        store.commit()
    with pytest.raises(RuntimeError, match="not open"):
        store.load()


def test_new_binding_releases_the_clients_other_active_row(db: Path) -> None:
    # The table releases a client's old address in memory on ack and hands back only the
    # new lease; the store must write that release too, in the same transaction.
    old = lease(1)
    new = lease(2, client_key=old.client_key, updated=T0 + 50)
    other_subnet = lease(3, client_key=old.client_key, subnet="198.18.0.0/16")
    with LeaseStore(db) as store:
        store.stage(old)
        store.stage(other_subnet)
        store.commit()
        store.stage(new)
        store.commit()
        rows = {(x.subnet, x.ip): x for x in store.load()}
    was = rows[(SUBNET, old.ip)]
    assert was.state is LeaseState.RELEASED and was.updated == T0 + 50
    assert was.expires == T0 + 50
    assert rows[(SUBNET, new.ip)] == new
    assert rows[("198.18.0.0/16", other_subnet.ip)] == other_subnet  # one binding per subnet


def test_staging_order_decides_the_binding_within_one_burst(db: Path) -> None:
    a, b = lease(1), lease(2, client_key=lease(1).client_key)
    with LeaseStore(db) as store:
        store.stage(a)
        store.stage(b)
        store.stage(a)  # bound to a, then b, then a again
        store.commit()
        states = {x.ip: x.state for x in store.load()}
    assert states == {a.ip: LeaseState.ACTIVE, b.ip: LeaseState.RELEASED}


def test_table_store_table_round_trip(db: Path) -> None:
    net = IPv4Network("198.19.0.0/24")
    ranges = [(IPv4Address("198.19.0.10"), IPv4Address("198.19.0.20"))]
    table = LeaseTable(net, ranges)
    k1, k2 = b"\x01one", b"\x01two"
    with LeaseStore(db) as store:
        for k in (k1, k2):
            ip = table.offer(k, "m", None, T0, 60)
            assert ip is not None
            store.stage(table.bind(k, "m", ip, None, T0, 3600)[0])
        # k1 moves to another address (INIT-REBOOT with a new one); the old one is freed
        moved = table.bind(k1, "m", IPv4Address("198.19.0.15"), None, T0 + 1, 3600)[0]
        store.stage(moved)
        declined = table.decline(IPv4Address("198.19.0.11"), T0 + 2, 600)
        assert declined is not None
        store.stage(declined)
        store.commit()
        fresh = LeaseTable(net, ranges)
        fresh.load(store.load())
    assert fresh.by_client(k1) == moved
    assert fresh.by_client(k2) is None  # its address was declined
    assert fresh.available_for(IPv4Address("198.19.0.10"), b"\x01new", T0 + 3)
    assert not fresh.available_for(IPv4Address("198.19.0.11"), b"\x01new", T0 + 3)
    assert not fresh.available_for(IPv4Address("198.19.0.15"), b"\x01new", T0 + 3)
    assert fresh.stats(T0 + 3) == table.stats(T0 + 3)


def test_prune_deletes_only_long_dead_records(db: Path) -> None:
    with LeaseStore(db) as store:
        store.stage(lease(1, expires=T0 - 100))
        store.stage(lease(2, LeaseState.RELEASED, expires=T0 - 50))
        store.stage(lease(3, expires=T0 + 100))
        store.commit()
        assert store.prune(T0) == 2
        assert [int(x.ip) & 0xFF for x in store.load()] == [3]
        assert store.prune(T0) == 0


def test_failed_commit_keeps_the_leases_staged(db: Path) -> None:
    with LeaseStore(db) as store:
        blocker = sqlite3.connect(db, timeout=0)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        store._connection().execute("PRAGMA busy_timeout = 0")
        store.stage(lease(1))
        try:
            with pytest.raises(PxedError, match=str(db)):
                store.commit()
            assert store.pending == 1
        finally:
            blocker.rollback()
            blocker.close()
        assert store.commit().written == 1


# ------------------------------------------------------------------ files not ours


def test_garbage_file_is_refused_naming_it(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a database, just some text that happens to be here\n" * 100)
    with pytest.raises(PxedError, match=str(db)):
        LeaseStore(db).open()


def test_corrupt_database_is_refused_naming_it(db: Path) -> None:
    with LeaseStore(db) as store:
        for n in range(2000):
            store.stage(lease(n))
        store.commit()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    for offset in range(2 * page, len(data) - page, page):
        data[offset : offset + 64] = b"\xa5" * 64  # smash every page header after the 2nd
    db.write_bytes(bytes(data))
    with pytest.raises(PxedError, match=str(db)):
        store = LeaseStore(db)
        store.open()
        store.load()


def test_someone_elses_sqlite_database_is_refused(db: Path) -> None:
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE accounts (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(PxedError, match="something else"):
        LeaseStore(db).open()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA application_id = 1234")
    conn.commit()
    conn.close()
    with pytest.raises(PxedError, match="something else"):
        LeaseStore(db).open()


def test_newer_schema_is_refused(db: Path) -> None:
    LeaseStore(db).open()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(PxedError, match="newer pxed"):
        LeaseStore(db).open()


def test_empty_file_is_initialised(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.touch()
    with LeaseStore(db) as store:
        store.stage(lease(1))
    with LeaseStore(db) as store:
        assert len(store.load()) == 1


def test_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PxedError, match="lease directory"):
        LeaseStore(blocker / "sub" / "leases.sqlite3").open()


# ------------------------------------------------------------------ durability

CHILD = textwrap.dedent(
    """
    import sys
    from ipaddress import IPv4Address
    from pathlib import Path
    from pxed.leases import Lease, LeaseState, LeaseStore

    store = LeaseStore(Path(sys.argv[1]))
    store.open()
    n = 0
    while True:
        batch = []
        for _ in range(1 + n % 7):  # bursts of 1..7 leases, one commit each
            ip = IPv4Address("198.18.0.0") + n
            store.stage(Lease(ip, b"\\x01" + n.to_bytes(6, "big"), "m", None,
                              2e9, LeaseState.ACTIVE, "198.18.0.0/15", 1.7e9))
            batch.append(str(ip))
            n += 1
        store.commit()
        # Only now may these be acknowledged: print them as the server would send ACKs.
        sys.stdout.write("\\n".join(batch) + "\\n")
        sys.stdout.flush()
    """
)


@pytest.mark.parametrize("kill_after", [1, 250, 1500])
def test_sigkill_never_loses_a_committed_lease(tmp_path: Path, kill_after: int) -> None:
    db = tmp_path / "leases.sqlite3"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert child.stdout is not None
    acked: list[str] = []
    try:
        while len(acked) < kill_after:
            line = child.stdout.readline()
            assert line, f"child exited early with {child.wait()}"
            acked.append(line.strip())
        child.send_signal(signal.SIGKILL)  # mid-run: likely inside a commit
        acked.extend(x.strip() for x in child.stdout.read().splitlines() if x.strip())
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    with LeaseStore(db) as store:
        stored = {str(x.ip) for x in store.load()}
    missing = [ip for ip in acked if ip not in stored]
    assert not missing, f"{len(missing)} acknowledged leases lost, e.g. {missing[:5]}"
    assert len(stored) >= len(acked)


def test_batch_keeps_keys_of_any_length_and_any_hostname_exactly(db: Path) -> None:
    # Rows travel to SQLite as JSON plus one blob of client keys (see store._batch_parameters):
    # keys of odd lengths and empty ones, and hostnames JSON must escape, come back as they went.
    leases = [
        lease(1, client_key=b"\xff" * 255, hostname='q"uote\\back\nslash'),
        lease(2, client_key=b"\x00\x01", hostname="h\u00f6st-\u2603-\U0001f600"),
        lease(3, LeaseState.DECLINED, client_key=b"", mac="", hostname=None),
        lease(4, client_key=b"\x01" + bytes(range(6)), expires=T0 + 0.1 + 0.2, updated=T0 / 3),
    ]
    with LeaseStore(db) as store:
        for x in leases:
            store.stage(x)
        assert store.commit().written == 4
        assert sorted(store.load(), key=lambda x: x.ip) == leases


_IPS = [IPv4Address("198.19.0.10") + n for n in range(4)]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["bind", "bind", "release", "decline", "commit"]),
            st.integers(0, 2),  # client
            st.integers(0, len(_IPS) - 1),  # address
        ),
        max_size=30,
    )
)
def test_disk_equals_the_table_wherever_the_commits_fall(tmp_path: Path, steps: list) -> None:
    # What a server does: each table change's records staged in order, commits whenever.
    # However many changes share a commit (a client bound twice, released and its address
    # rebound to another client, all in one batch), the file must say what the table says.
    net = IPv4Network("198.19.0.0/24")
    table = LeaseTable(net, [(_IPS[0], _IPS[-1])])
    path = tmp_path / f"{len(list(tmp_path.iterdir()))}.sqlite3"
    now = T0
    with LeaseStore(path) as store:
        for action, client, index in steps:
            now += 1
            key, address = b"\x01client" + bytes([client]), _IPS[index]
            if action == "bind" and table.available_for(address, key, now):
                new, released = table.bind(key, f"m{client}", address, None, now, 3600)
                for record in (released, new):
                    if record is not None:
                        store.stage(record)
            elif action == "release":
                record = table.release(key, address, now)
                if record is not None:
                    store.stage(record)
            elif action == "decline":
                record = table.decline(address, now, 600)
                if record is not None:
                    store.stage(record)
            elif action == "commit":
                store.commit()
        store.commit()
        on_disk = {x.ip: x for x in store.load()}
    in_memory = {a: table.by_ip(a) for a in _IPS if table.by_ip(a) is not None}
    assert on_disk == in_memory


# Version 1 as released (its columns, view and index; spacing condensed): the migration
# must take such a file forward.
_SCHEMA_V1 = """
CREATE TABLE leases (
    subnet TEXT NOT NULL, ip INTEGER NOT NULL, client_key BLOB NOT NULL, mac TEXT NOT NULL,
    hostname TEXT, expires REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'released', 'declined')),
    updated REAL NOT NULL, PRIMARY KEY (subnet, ip)
) WITHOUT ROWID;
CREATE VIEW leases_readable AS SELECT subnet, ip, hex(client_key) AS client_key, mac, hostname,
    datetime(expires, 'unixepoch') AS expires, state, datetime(updated, 'unixepoch') AS updated
FROM leases;
CREATE INDEX leases_active_by_client ON leases (subnet, client_key) WHERE state = 'active';
"""


def _v1_database(db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    conn.executescript(_SCHEMA_V1)
    conn.execute(
        "INSERT INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            SUBNET,
            int(IPv4Address("198.19.0.7")),
            b"\x01k",
            "52:54:00:00:00:07",
            "n7",
            T0,
            "active",
            T0,
        ),
    )
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_version_1_database_is_migrated_keeping_its_rows(db: Path) -> None:
    _v1_database(db)
    # A reader beside an old daemon sees the rows without the new columns, and migrates nothing.
    (old,) = read_leases(db)
    assert (str(old.ip), old.arch, old.boot_file) == ("198.19.0.7", None, None)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    with LeaseStore(db) as store:
        (kept,) = store.load()
        assert kept == old
        store.stage(lease(9, arch=7, boot_file="ipxe.efi"))
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert conn.execute("SELECT count(*) FROM next_boot").fetchone()[0] == 0
        view = conn.execute(
            "SELECT ip, arch, boot_file FROM leases_readable ORDER BY ip"
        ).fetchall()
        assert view == [("198.19.0.7", None, None), ("198.19.0.9", 7, "ipxe.efi")]
    finally:
        conn.close()
    got = {str(x.ip): (x.arch, x.boot_file) for x in read_leases(db)}
    assert got == {"198.19.0.7": (None, None), "198.19.0.9": (7, "ipxe.efi")}


def test_arch_and_boot_file_round_trip_and_are_updated(db: Path) -> None:
    with LeaseStore(db) as store:
        store.stage(lease(1, arch=0, boot_file="pxelinux.0"))
        store.commit()
        store.stage(lease(1, arch=7, boot_file=None))
        store.commit()
        (got,) = store.load()
    assert (got.arch, got.boot_file) == (7, None)
