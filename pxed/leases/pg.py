"""The PostgreSQL lease store: one database shared by every pxed serving a network.

Same contract as the SQLite store (pxed.leases.store): an ACK leaves only after the commit
holding its lease returned, and the server stages a whole burst into one transaction (one
WAL flush for many ACKs; ``synchronous_commit`` is PostgreSQL's default, on). What is new
with several writers is that a server's in-memory table may not know what another server
bound a moment ago, so the database decides: a binding is written only when the row is
free, expired or already that client's, tested on the locked row inside the upsert
(``_UPSERT``). A write it refuses comes back in ``CommitResult.refused`` with the row that
won, and its ACK is never sent.

The database going away is an outage, not an error to stop on: ``commit`` raises
PxedError (the leases stay staged), the connection is dropped, and the next commit connects
again. The group committer paces the retries and logs the outage once.

The schema is versioned SQL in ``pxed/leases/sql/postgresql-N.sql``, applied by ``pxed db
init`` and ``pxed db upgrade`` (never by the daemon: several servers must not race to
migrate the database they share); the daemon refuses a database of another version.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from importlib import resources
from ipaddress import IPv4Address
from typing import Any, NoReturn

import psycopg
import psycopg.errors
from psycopg import conninfo

from pxed.errors import PxedError, StoreUnavailable
from pxed.leases.model import CommitResult, Lease, LeaseState
from pxed.leases.store import final_rows

SCHEMA_VERSION = 1
"""The PostgreSQL schema this code reads and writes (``pxed_schema.version``)."""

_COLUMNS = (
    "subnet, ip, client_key, mac, hostname, expires, state, updated, arch, boot_file, server"
)
_SELECT = f"SELECT {_COLUMNS} FROM leases"
_ROWS = """unnest(%s::text[], %s::bigint[], %s::bytea[], %s::text[], %s::text[],
       %s::float8[], %s::text[], %s::float8[], %s::integer[], %s::text[], %s::text[])"""

# The test that makes an address one client's across all servers, on the row the conflict
# locked: the write is not older than the stored row (a write from before another server's
# change never undoes it), and the row is that client's, or given back, or run out (by the
# writer's clock: servers sharing a database must keep time, NTP), or this write is a
# quarantine (DHCPDECLINE) by the client the row is bound to, or of a row bound to nobody.
# A DECLINED row names its decliner's MAC (pxed.leases.table.decline). RETURNING lists what
# was written; a staged row missing from it was refused.
_UPSERT = f"""
INSERT INTO leases AS l ({_COLUMNS})
SELECT * FROM {_ROWS}
ON CONFLICT (subnet, ip) DO UPDATE SET
    client_key = excluded.client_key, mac = excluded.mac, hostname = excluded.hostname,
    expires = excluded.expires, state = excluded.state, updated = excluded.updated,
    arch = excluded.arch, boot_file = excluded.boot_file, server = excluded.server
WHERE l.updated <= excluded.updated
  AND (l.state <> 'active' OR l.expires <= excluded.updated
       OR (excluded.state = 'declined' AND l.mac = excluded.mac)
       OR (excluded.state <> 'declined' AND l.client_key = excluded.client_key))
RETURNING l.subnet, l.ip
"""

# A client has one binding per subnet: its other active row (another server may have
# written it) is released by the transaction that stores the new one. Run after the upsert,
# with the bindings it accepted only (the batch holds one active row per client at most).
# The plan is pinned, whatever the statistics say (a young table has none, and a scan of
# every active row per commit made a commit cost 5-8 ms at 10000-20000 leases, and
# growing): LATERAL with OFFSET 0 is one probe of leases_active_by_client per binding, and
# the MATERIALIZED CTE makes the target rows found by their primary key (flattened, the
# client-key test was used to scan the index by its second column). The WHERE tests each
# target again: under READ COMMITTED a row another server changed meanwhile is re-checked
# against it only, and it must still be this client's older binding to be released.
_RELEASE_OTHERS = """
WITH x AS MATERIALIZED (
    SELECT o.subnet, o.ip, b.key, b.updated
    FROM unnest(%s::text[], %s::bigint[], %s::bytea[], %s::float8[]) AS b(subnet, ip, key, updated)
    CROSS JOIN LATERAL (
        SELECT subnet, ip FROM leases
        WHERE subnet = b.subnet AND client_key = b.key AND state = 'active' AND ip <> b.ip
        OFFSET 0
    ) AS o
)
UPDATE leases AS l
SET state = 'released', expires = least(l.expires, x.updated), updated = x.updated
FROM x
WHERE l.subnet = x.subnet AND l.ip = x.ip AND l.client_key = x.key AND l.state = 'active'
  AND l.updated <= x.updated
"""

_WINNERS = f"""
SELECT {_COLUMNS} FROM leases
WHERE (subnet, ip) IN (SELECT * FROM unnest(%s::text[], %s::bigint[]))
"""

_STATES = {state.value: state for state in LeaseState if state is not LeaseState.OFFERED}

# Connection settings for a daemon: give up connecting after 5 s (then retry later), and
# notice a database host that vanished without a word (TCP keepalives, user timeout) in
# about 10 s rather than after the kernel's two hours. Ignored on a UNIX socket. The DSN's
# own settings win.
_CONNECT: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10000,
}


def safe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(a malformed PostgreSQL DSN)"
    parts.pop("password", None)
    return conninfo.make_conninfo("", **{k: v for k, v in parts.items() if v is not None})


def _reason(exc: BaseException) -> str:
    """psycopg's message, first line only (libpq adds hints and context lines)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def connect(dsn: str, application: str) -> psycopg.Connection[Any]:
    """An autocommit connection (transactions are explicit); PxedError when it fails."""
    try:
        params = {**_CONNECT, "application_name": application, **conninfo.conninfo_to_dict(dsn)}
        return psycopg.connect(conninfo.make_conninfo("", **params), autocommit=True)
    except psycopg.Error as exc:
        raise StoreUnavailable(
            f"cannot connect to PostgreSQL {safe_dsn(dsn)}: {_reason(exc)}"
        ) from exc


def _check_schema(conn: psycopg.Connection[Any], where: str) -> None:
    version = schema_version(conn)
    if version is None:
        raise PxedError(f"{where} has no pxed schema: run `pxed db init` for it first")
    if version < SCHEMA_VERSION:
        raise PxedError(
            f"{where} has pxed schema version {version}; this pxed needs {SCHEMA_VERSION}: "
            "run `pxed db upgrade` (once, from one server)"
        )
    if version > SCHEMA_VERSION:
        raise PxedError(
            f"{where} has pxed schema version {version}, written by a newer pxed; this one "
            f"knows up to version {SCHEMA_VERSION}"
        )


class PgLeaseStore:
    """Leases of every subnet and server in one PostgreSQL database
    (pxed.leases.backend.Backend). Driven from one worker thread, except ``stage``."""

    def __init__(self, dsn: str, server: str) -> None:
        self.dsn = dsn
        self.server = server
        self._conn: psycopg.Connection[Any] | None = None
        self._staged: dict[tuple[str, int], Lease] = {}
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"PostgreSQL {safe_dsn(self.dsn)}"

    @property
    def pending(self) -> int:
        return len(self._staged)

    def open(self) -> None:
        """Connect and check the schema's version (PxedError with what to do)."""
        if self._conn is None:
            self._conn = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        conn = connect(self.dsn, f"pxed {self.server}"[:63])
        try:
            _check_schema(conn, self.where)
        except psycopg.Error as exc:
            conn.close()
            raise StoreUnavailable(
                f"cannot read the schema of {self.where}: {_reason(exc)}"
            ) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _lost(self) -> None:
        """Forget a connection that failed: the next call connects again."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        if self._conn is None:
            return
        try:
            self.commit()
        except PxedError:
            pass  # the database is away: what is staged was never acknowledged
        finally:
            self._lost()

    # ----------------------------------------------------------------- leases

    def load(self) -> list[Lease]:
        try:
            rows = self._connection().execute(_SELECT).fetchall()
        except psycopg.Error as exc:
            self._lost()
            raise StoreUnavailable(f"cannot read leases from {self.where}: {_reason(exc)}") from exc
        return [_lease(row) for row in rows]

    def stage(self, lease: Lease) -> None:
        if lease.state is LeaseState.OFFERED:
            raise ValueError(f"OFFERED holds are never stored ({lease.ip})")
        key = (lease.subnet, int(lease.ip))
        with self._lock:
            self._staged.pop(key, None)
            self._staged[key] = lease

    def commit(self) -> CommitResult:
        if not self._staged:
            return CommitResult(0, {})
        with self._lock:
            batch, self._staged = self._staged, {}
        # In address order: two servers' transactions lock rows in one order (no deadlock).
        rows = sorted(final_rows(batch.values()), key=lambda x: (x.subnet, int(x.ip)))
        for attempt in range(3):
            try:
                return self._write(rows)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == 2:
                    return self._failed(batch, rows, "deadlocked three times")
            except psycopg.errors.DataError as exc:
                # A row PostgreSQL cannot store: not an outage, and retrying would not help.
                raise PxedError(
                    f"{self.where} refused a batch of {len(rows)} leases: {_reason(exc)}"
                ) from exc
            except psycopg.Error as exc:
                self._lost()
                return self._failed(batch, rows, _reason(exc))
        raise AssertionError("unreachable")

    def _failed(
        self, batch: dict[tuple[str, int], Lease], rows: list[Lease], why: str
    ) -> NoReturn:
        """Nothing of the batch is known to be stored. Its releases and quarantines stay
        staged (the recency test keeps them from undoing a newer change); its bindings are
        dropped: their ACKs were not sent, and the clients' retransmissions bind again,
        whereas a binding written after the outage could land on an address another
        server has given to the same client since."""
        with self._lock:
            for key, lease in batch.items():
                if lease.state is not LeaseState.ACTIVE:
                    self._staged.setdefault(key, lease)
        raise StoreUnavailable(f"could not commit {len(rows)} leases to {self.where}: {why}")

    def _write(self, rows: list[Lease]) -> CommitResult:
        conn = self._connection()
        with conn.transaction():
            cur = conn.cursor()
            cur.execute(_UPSERT, self._columns(rows))
            written = {(str(subnet), int(ip)) for subnet, ip in cur.fetchall()}
            bound = [
                lease
                for lease in rows
                if lease.state is LeaseState.ACTIVE and (lease.subnet, int(lease.ip)) in written
            ]
            if bound:
                cur.execute(
                    _RELEASE_OTHERS,
                    (
                        [lease.subnet for lease in bound],
                        [int(lease.ip) for lease in bound],
                        [lease.client_key for lease in bound],
                        [lease.updated for lease in bound],
                    ),
                )
            refused: dict[tuple[str, int], Lease | None] = {
                (lease.subnet, int(lease.ip)): None
                for lease in rows
                if (lease.subnet, int(lease.ip)) not in written
            }
            if refused:
                cur.execute(_WINNERS, ([s for s, _ in refused], [ip for _, ip in refused]))
                for row in cur.fetchall():
                    winner = _lease(row)
                    refused[(winner.subnet, int(winner.ip))] = winner
        return CommitResult(len(written), refused)

    def _columns(self, rows: list[Lease]) -> tuple[list[Any], ...]:
        return (
            [lease.subnet for lease in rows],
            [int(lease.ip) for lease in rows],
            [lease.client_key for lease in rows],
            [lease.mac for lease in rows],
            # PostgreSQL text cannot hold NUL, which a client's option 12 may carry.
            [None if x.hostname is None else x.hostname.replace("\0", "") for x in rows],
            [lease.expires for lease in rows],
            [lease.state.value for lease in rows],
            [lease.updated for lease in rows],
            [lease.arch for lease in rows],
            [lease.boot_file for lease in rows],
            [self.server] * len(rows),
        )

    def prune(self, older_than: float) -> int:
        try:
            cur = self._connection().execute(
                "DELETE FROM leases WHERE expires < %s", (older_than,)
            )
        except psycopg.Error as exc:
            self._lost()
            raise PxedError(f"could not prune leases in {self.where}: {_reason(exc)}") from exc
        return cur.rowcount


def _lease(row: tuple[Any, ...]) -> Lease:
    subnet, ip, key, mac, hostname, expires, state, updated, arch, boot_file, server = row
    return Lease(
        ip=IPv4Address(ip),
        client_key=bytes(key),
        mac=mac,
        hostname=hostname,
        expires=expires,
        state=_STATES[state],
        subnet=subnet,
        updated=updated,
        arch=arch,
        boot_file=boot_file,
        server=server,
    )


class PgNextBoots:
    """The shared ``next_boot`` table, with the interface of pxed.leases.next_boot.NextBoots
    (written rarely, from the event loop: a row is committed before the change is
    acknowledged)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None

    def open(self) -> dict[str, str]:
        try:
            if self._conn is None or self._conn.closed:
                conn = connect(self.dsn, "pxed boot-once")
                try:
                    _check_schema(conn, f"PostgreSQL {safe_dsn(self.dsn)}")
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
            rows = self._conn.execute("SELECT mac, profile FROM next_boot").fetchall()
        except psycopg.Error as exc:
            self.close()
            raise StoreUnavailable(f"cannot read boot-once state: {_reason(exc)}") from exc
        return {str(mac): str(profile) for mac, profile in rows}

    def set(self, mac: str, profile: str | None) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self.open()
            assert self._conn is not None
            if profile is None:
                self._conn.execute("DELETE FROM next_boot WHERE mac = %s", (mac,))
            else:
                self._conn.execute(
                    "INSERT INTO next_boot (mac, profile, updated) "
                    "VALUES (%s, %s, extract(epoch FROM now())) ON CONFLICT (mac) DO UPDATE "
                    "SET profile = excluded.profile, updated = excluded.updated",
                    (mac, profile),
                )
        except psycopg.Error as exc:
            self.close()
            raise StoreUnavailable(f"cannot write boot-once state: {_reason(exc)}") from exc

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


# --------------------------------------------------------------------- servers


@dataclass(frozen=True, slots=True)
class Peer:
    """One server's heartbeat row, as the database saw it."""

    name: str
    address: str | None
    age: float
    """Seconds since its last heartbeat, by the database's clock (no skew between servers)."""
    started: float
    """Epoch seconds its current run began."""


# Every server's heartbeat row; ages by the database's clock (no skew between servers).
_SERVERS = (
    "SELECT name, address, extract(epoch FROM now() - last_seen)::float8, "
    "extract(epoch FROM started)::float8 FROM servers ORDER BY name"
)


class Heartbeat:
    """This server's row in ``servers``, on a connection of its own (a commit in flight
    must not delay a heartbeat, nor a heartbeat a commit). Driven from one thread."""

    def __init__(self, dsn: str, name: str, address: str | None) -> None:
        self.dsn = dsn
        self.name = name
        self.address = address
        self._conn: psycopg.Connection[Any] | None = None
        self._first = True
        self._started: Any = None
        self.clash = False
        """Set when the row's start time is not the one this run wrote: another server
        writes heartbeats under the same name (cloned machines keep one host name)."""

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.dsn, f"pxed {self.name} heartbeat"[:63])
        return self._conn

    def next_boots(self) -> dict[str, str]:
        """The shared boot-once state (read every heartbeat: another server may have
        changed it, or flipped a machine to 'local' after its install)."""
        try:
            rows = self._connection().execute("SELECT mac, profile FROM next_boot").fetchall()
        except psycopg.Error as exc:
            self.close()
            raise StoreUnavailable(f"cannot read boot-once state: {_reason(exc)}") from exc
        return {str(mac): str(profile) for mac, profile in rows}

    def holdings(self) -> dict[str, int]:
        """Bound leases in the whole database, by the server that wrote them (a scan of
        the table: for a metric refreshed now and then, not every heartbeat)."""
        try:
            rows = self._connection().execute(
                "SELECT server, count(*) FROM leases WHERE state = 'active' "
                "AND expires > extract(epoch FROM now()) GROUP BY server"
            ).fetchall()
        except psycopg.Error as exc:
            self.close()
            raise StoreUnavailable(f"cannot count leases: {_reason(exc)}") from exc
        return {str(server): int(n) for server, n in rows}

    def beat(self) -> list[Peer]:
        """Write this server's row and return every server's (this one's included)."""
        try:
            conn = self._connection()
            with conn.transaction():
                # started: when this run began, so that the others can tell a restart (and
                # this run, a namesake that restarted: see clash).
                row = conn.execute(
                    "INSERT INTO servers (name, address, started, last_seen) "
                    "VALUES (%s, %s, now(), now()) ON CONFLICT (name) DO UPDATE SET "
                    "address = excluded.address, last_seen = excluded.last_seen, "
                    "started = CASE WHEN %s THEN excluded.started ELSE servers.started END "
                    "RETURNING started",
                    (self.name, self.address, self._first),
                ).fetchone()
                rows = conn.execute(_SERVERS).fetchall()
        except psycopg.Error as exc:
            self.close()
            raise PxedError(
                f"heartbeat to PostgreSQL {safe_dsn(self.dsn)} failed: {_reason(exc)}"
            ) from exc
        started = row[0] if row is not None else None
        if self._first:
            self._started = started
        elif started != self._started:
            self.clash, self._started = True, started
        self._first = False
        return [Peer(str(n), a, float(age), float(st)) for n, a, age, st in rows]

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def read_servers(dsn: str) -> list[Peer]:
    """Every server's heartbeat row (for `pxed leases`), without writing one."""
    conn = connect(dsn, "pxed leases")
    try:
        rows = conn.execute(_SERVERS).fetchall()
    except psycopg.Error as exc:
        raise PxedError(f"cannot read servers from {safe_dsn(dsn)}: {_reason(exc)}") from exc
    finally:
        conn.close()
    return [Peer(str(n), a, float(age), float(st)) for n, a, age, st in rows]


# --------------------------------------------------------------------- schema


def schema_version(conn: psycopg.Connection[Any]) -> int | None:
    """The database's pxed schema version; None when it has no pxed schema."""
    if conn.execute("SELECT to_regclass('pxed_schema')").fetchone() == (None,):
        return None
    row = conn.execute("SELECT max(version) FROM pxed_schema").fetchone()
    return int(row[0]) if row is not None and row[0] is not None else None


def _script(version: int) -> str:
    return (resources.files("pxed.leases") / "sql" / f"postgresql-{version}.sql").read_text()


# One migration at a time across every server and admin: a transaction-scoped advisory
# lock (the number spells "pxed") around the version check and the scripts.
_MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(1886930276)"


def init_schema(dsn: str) -> int:
    """Create pxed's schema in an empty database (``pxed db init``); returns its version."""
    conn = connect(dsn, "pxed db init")
    try:
        with conn.transaction():
            conn.execute(_MIGRATION_LOCK)
            found = schema_version(conn)
            if found is not None:
                raise PxedError(
                    f"PostgreSQL {safe_dsn(dsn)} already has pxed schema version {found}"
                    + ("" if found >= SCHEMA_VERSION else "; run `pxed db upgrade`")
                )
            conn.execute(_script(1))
            for version in range(2, SCHEMA_VERSION + 1):
                conn.execute(_script(version))
    except psycopg.Error as exc:
        raise PxedError(f"pxed db init on {safe_dsn(dsn)} failed: {_reason(exc)}") from exc
    finally:
        conn.close()
    return SCHEMA_VERSION


def upgrade_schema(dsn: str) -> tuple[int, int]:
    """Bring pxed's schema to this pxed's version (``pxed db upgrade``): (from, to)."""
    conn = connect(dsn, "pxed db upgrade")
    try:
        with conn.transaction():
            conn.execute(_MIGRATION_LOCK)
            found = schema_version(conn)
            if found is None:
                raise PxedError(f"PostgreSQL {safe_dsn(dsn)} has no pxed schema: `pxed db init`")
            if found > SCHEMA_VERSION:
                raise PxedError(
                    f"PostgreSQL {safe_dsn(dsn)} has pxed schema version {found}, newer than "
                    f"this pxed's {SCHEMA_VERSION}"
                )
            for version in range(found + 1, SCHEMA_VERSION + 1):
                conn.execute(_script(version))
    except psycopg.Error as exc:
        raise PxedError(f"pxed db upgrade on {safe_dsn(dsn)} failed: {_reason(exc)}") from exc
    finally:
        conn.close()
    return found, SCHEMA_VERSION
