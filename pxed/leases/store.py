"""The lease database: SQLite under the state directory, the only lease I/O in pxed.

Durability contract with the DHCP server: a lease is acknowledged (DHCPACK sent) only after
the ``commit()`` that contains it has returned. WAL journal + ``synchronous=FULL`` make the
commit durable (WAL fsynced) before it returns, so a ``kill -9`` or power loss at any moment
never loses an acknowledged lease. An fsync costs about as much as 30 DHCP exchanges, so the
server stages the leases of a whole burst and commits them together: one fsync for all.
"""

from __future__ import annotations

import json
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType

from pxed.errors import PxedError, StoreUnavailable
from pxed.leases.model import CommitResult, Lease, LeaseState

SCHEMA_VERSION = 3
"""``PRAGMA user_version`` of the schema this code writes; bump it with a migration."""

APPLICATION_ID = 0x70786564
"""``PRAGMA application_id`` ("pxed"): tells our database from any other SQLite file."""

# For people with the sqlite3 shell: SELECT * FROM leases_readable;
_VIEW = """
CREATE VIEW leases_readable AS
SELECT subnet,
       (ip >> 24) || '.' || ((ip >> 16) & 255) || '.' || ((ip >> 8) & 255) || '.' || (ip & 255)
           AS ip,
       hex(client_key) AS client_key,
       mac,
       hostname,
       datetime(expires, 'unixepoch') AS expires,
       state,
       datetime(updated, 'unixepoch') AS updated,
       arch,
       boot_file
FROM leases;
"""

# Boot-once state (version 3): the profile a machine boots next, by MAC; 'local' once its
# install was handed out (pxed.leases.next_boot).
_NEXT_BOOT = """
CREATE TABLE next_boot (
    mac     TEXT PRIMARY KEY,
    profile TEXT NOT NULL,
    updated REAL NOT NULL          -- epoch seconds
) WITHOUT ROWID;
"""

# The schema of SCHEMA_VERSION, as a new database gets it (an older one is migrated to it).
_SCHEMA = f"""
CREATE TABLE leases (
    subnet     TEXT    NOT NULL,
    ip         INTEGER NOT NULL,   -- IPv4 address as an int: compact, fast to load
    client_key BLOB    NOT NULL,
    mac        TEXT    NOT NULL,
    hostname   TEXT,
    expires    REAL    NOT NULL,   -- epoch seconds
    state      TEXT    NOT NULL CHECK (state IN ('active', 'released', 'declined')),
    updated    REAL    NOT NULL,   -- epoch seconds
    arch       INTEGER,            -- option 93 of the binding request (version 2)
    boot_file  TEXT,               -- the boot file its ACK named (version 2)
    PRIMARY KEY (subnet, ip)
) WITHOUT ROWID;
{_VIEW}

-- Finds a client's other ACTIVE row when it is bound to a new address (see _RELEASE_OTHERS).
-- Partial: only ACTIVE rows, the ones the lookup wants, cost index space and writes.
CREATE INDEX leases_active_by_client ON leases (subnet, client_key) WHERE state = 'active';
{_NEXT_BOOT}"""
# No index on expires: prune() runs rarely and scans 100000 rows in milliseconds, while an
# index would cost another B-tree write for every lease of every commit.


def _add_boot_columns(conn: sqlite3.Connection) -> None:
    """Version 1 -> 2: the client's architecture and boot file, for `pxed leases`. Added
    columns are NULL in the existing rows (unknown), which is what a reader shows."""
    conn.execute("ALTER TABLE leases ADD COLUMN arch INTEGER")
    conn.execute("ALTER TABLE leases ADD COLUMN boot_file TEXT")
    conn.execute("DROP VIEW IF EXISTS leases_readable")
    conn.execute(_VIEW.strip().rstrip(";"))


def _add_next_boot(conn: sqlite3.Connection) -> None:
    """Version 2 -> 3: boot-once state."""
    conn.execute(_NEXT_BOOT.strip().rstrip(";"))


_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _add_boot_columns,
    2: _add_next_boot,
}
"""``from_version -> step`` that upgrades a database to ``from_version + 1``."""

# A commit writes its whole batch in two statements, whatever its size: the rows travel as
# one JSON array (client keys, which JSON cannot carry, as offsets into one blob). Row by
# row, the sqlite3 module would release and retake the GIL around every statement, and each
# retake fights the event loop thread for it; two statements make that two handoffs.
_BATCH_ROWS = """
SELECT j.value ->> 0 AS subnet, j.value ->> 1 AS ip,
       substr(?2, j.value ->> 2, j.value ->> 3) AS client_key,
       j.value ->> 4 AS mac, j.value ->> 5 AS hostname, j.value ->> 6 AS expires,
       j.value ->> 7 AS state, j.value ->> 8 AS updated,
       j.value ->> 9 AS arch, j.value ->> 10 AS boot_file
FROM json_each(?1) AS j
"""

# WHERE true: without it SQLite would read ON CONFLICT as part of a join (lang_upsert).
_UPSERT = f"""
INSERT INTO leases (subnet, ip, client_key, mac, hostname, expires, state, updated, arch,
                    boot_file)
SELECT * FROM ({_BATCH_ROWS}) WHERE true
ON CONFLICT (subnet, ip) DO UPDATE SET
    client_key = excluded.client_key,
    mac = excluded.mac,
    hostname = excluded.hostname,
    expires = excluded.expires,
    state = excluded.state,
    updated = excluded.updated,
    arch = excluded.arch,
    boot_file = excluded.boot_file
"""

# A client has one binding per subnet. The server stages the release of a client's other
# address that LeaseTable.bind returns; this statement also releases any other ACTIVE row of
# the client on disk (a duplicate that LeaseTable.load released only in memory, or a caller
# that stages bindings alone), in the transaction that stores the new binding; the new
# lease's ``updated`` is the moment of release.
# The batch rows are each client's final binding (see final_rows), so this runs before the
# upsert and never touches a row the upsert then writes differently.
# INDEXED BY: without statistics the planner prefers the primary key (subnet = ?), a scan of
# the whole subnet for every lease written; this way it fails loudly if the index is gone.
_RELEASE_OTHERS = f"""
UPDATE leases INDEXED BY leases_active_by_client
SET state = 'released', expires = min(leases.expires, b.updated), updated = b.updated
FROM ({_BATCH_ROWS}) AS b
WHERE b.state = 'active' AND leases.subnet = b.subnet AND leases.client_key = b.client_key
  AND leases.state = 'active' AND leases.ip != b.ip
"""

LeaseRow = tuple[str, int, bytes, str, str | None, float, str, float, int | None, str | None]

_COLUMNS = "subnet, ip, client_key, mac, hostname, expires, state, updated"
_SELECT = f"SELECT {_COLUMNS}, arch, boot_file FROM leases"
_SELECT_V1 = f"SELECT {_COLUMNS}, NULL, NULL FROM leases"
"""What a reader selects from a version 1 database, which it must not migrate."""

_STATES = {state.value: state for state in LeaseState if state is not LeaseState.OFFERED}


class LeaseStore:
    """Leases of every subnet in one SQLite file (pxed.leases.backend.Backend).

    Not a connection pool: one process, one store. ``stage`` may be called from the event
    loop while ``commit`` runs in a worker thread (``asyncio.to_thread``); everything else
    is meant to be called from one thread at a time.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._staged: dict[tuple[str, int], Lease] = {}
        # Guards swapping the staging buffer against a stage() from another thread.
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return str(self.path)

    # ----------------------------------------------------------------- lifecycle

    def open(self) -> None:
        """Open (creating directories, file and schema as needed); refuse what is not ours."""
        if self._conn is not None:
            return
        try:
            # 0o750: leases name the machines on the network; not for every local user.
            self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as exc:
            raise PxedError(f"cannot create lease directory {self.path.parent}: {exc}") from exc
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so it is plain which
            # statements share a transaction (and an fsync). check_same_thread=False lets the
            # server run commit() in a worker thread.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise PxedError(f"cannot open lease database {self.path}: {exc}") from exc
        try:
            self._prepare(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise PxedError(
                f"{self.path} is not a usable pxed lease database (corrupt, or not ours): {exc}"
            ) from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        # Reading the header is the first thing that fails on a file that is not SQLite.
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute("PRAGMA busy_timeout = 5000")
        if application_id == 0 and version == 0:
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise PxedError(
                    f"{self.path} is an SQLite database of something else, not pxed's leases; "
                    "move it away or choose another state directory"
                )
            self._create(conn)
        elif application_id != APPLICATION_ID:
            raise PxedError(
                f"{self.path} is an SQLite database of something else "
                f"(application_id {application_id:#x}), not pxed's leases"
            )
        elif version > SCHEMA_VERSION:
            raise PxedError(
                f"{self.path} has lease schema version {version}, written by a newer pxed; "
                f"this one knows up to version {SCHEMA_VERSION}"
            )
        elif version < SCHEMA_VERSION:
            self._migrate(conn, version)
        check = conn.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            problems = "; ".join(str(row[0]) for row in check[:5])
            raise PxedError(f"{self.path} is corrupt (sqlite quick_check: {problems})")
        # WAL: a commit appends to the log and fsyncs it once; readers (an admin's sqlite3
        # shell) do not block the daemon. The mode is stored in the file.
        conn.execute("PRAGMA journal_mode = WAL").fetchone()
        # FULL (not WAL's usual NORMAL): the WAL is fsynced at every commit, so a commit is
        # durable when it returns; NORMAL could lose the last commits on power loss.
        conn.execute("PRAGMA synchronous = FULL")

    def _create(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        # executescript() would COMMIT first on its own; run the statements one by one
        # inside our transaction so that a half-created schema never exists.
        for statement in _split_sql(_SCHEMA):
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        while version < SCHEMA_VERSION:
            step = _MIGRATIONS.get(version)
            if step is None:
                raise PxedError(f"{self.path}: no migration from lease schema version {version}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                step(conn)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Commit what is staged, then close. Closing a closed store does nothing."""
        if self._conn is None:
            return
        try:
            self.commit()
        finally:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> LeaseStore:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- leases

    def load(self) -> list[Lease]:
        """Every stored lease (what was committed; not what is only staged)."""
        return _load(self._connection(), self.path)

    def stage(self, lease: Lease) -> None:
        """Buffer an upsert of ``lease`` (keyed by subnet + ip) for the next ``commit``.

        Staging the same address twice keeps the later lease: a burst writes each row once.
        """
        if lease.state is LeaseState.OFFERED:
            raise ValueError(f"OFFERED holds are never stored ({lease.ip})")
        key = (lease.subnet, int(lease.ip))
        with self._lock:
            # Re-insert at the end: rows are written in staging order, which matters for
            # the release of a client's other binding (a client bound to A, then B, then A
            # again in one burst must end bound to A).
            self._staged.pop(key, None)
            self._staged[key] = lease

    @property
    def pending(self) -> int:
        """Leases staged and not yet committed."""
        return len(self._staged)

    def commit(self) -> CommitResult:
        """Write everything staged in one transaction (one fsync); says how many rows.

        Durable when it returns. Without anything staged: no transaction, 0 rows. Nothing is
        refused: this database is one server's own, and its table decided every write.
        On failure the leases stay staged (newer stagings win) and PxedError is raised.
        """
        if not self._staged:
            return CommitResult(0, {})
        conn = self._connection()
        with self._lock:
            batch, self._staged = self._staged, {}
        params = _batch_parameters(final_rows(batch.values()))
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_RELEASE_OTHERS, params)
                conn.execute(_UPSERT, params)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except BaseException as exc:
            with self._lock:
                for key, lease in batch.items():
                    self._staged.setdefault(key, lease)
            if isinstance(exc, sqlite3.Error):
                # Disk full, I/O error, a lock held too long: wait it out (the committer
                # retries with backoff), with the leases kept staged.
                raise StoreUnavailable(
                    f"could not commit {len(batch)} leases to {self.path}: {exc}"
                ) from exc
            raise
        return CommitResult(len(batch), {})

    def prune(self, older_than: float) -> int:
        """Delete records whose ``expires`` is before ``older_than``; returns how many.

        Only long-dead records should go (``older_than`` well in the past): a released or
        expired record is how a returning client gets its previous address back.
        """
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                deleted = conn.execute(
                    "DELETE FROM leases WHERE expires < ?", (older_than,)
                ).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise PxedError(f"could not prune leases in {self.path}: {exc}") from exc
        return deleted

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"lease store {self.path} is not open")
        return self._conn


def read_leases(path: Path) -> list[Lease]:
    """Every committed lease of the database at ``path``, opened read-only.

    For tools beside a running daemon (``pxed leases``): no schema is created, migrated or
    checked for corruption, nothing is written, and WAL lets this read while the daemon
    commits. FileNotFoundError when there is no database; PxedError when it is not pxed's,
    was written by a newer pxed, or cannot be read.
    """
    path = Path(path)
    try:
        # stat, not is_file(): a state directory this user may not enter (0o750) must say
        # so, not pass for one without a database.
        is_file = stat.S_ISREG(path.stat().st_mode)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise PxedError(f"cannot read {path}: {exc.strerror}") from exc
    if not is_file:
        raise PxedError(f"{path} is not a file")
    conn = _open_read_only(path)
    try:
        try:
            application_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise PxedError(f"{path} is not a pxed lease database: {exc}") from exc
        if application_id == 0 and version == 0:
            # What open() makes of an empty file before the daemon's first commit.
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if not tables:
                return []
        if application_id != APPLICATION_ID:
            raise PxedError(f"{path} is an SQLite database of something else, not pxed's leases")
        if version > SCHEMA_VERSION:
            raise PxedError(
                f"{path} has lease schema version {version}, written by a newer pxed; "
                f"this one knows up to version {SCHEMA_VERSION}"
            )
        if version < 1:
            raise PxedError(f"{path}: unknown lease schema version {version}")
        # The daemon migrates an older database at its next start; a reader must not.
        conn.execute("PRAGMA busy_timeout = 5000")
        return _load(conn, path, _SELECT if version >= 2 else _SELECT_V1)
    finally:
        conn.close()


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection, also for a user who may read the file but not write beside it.

    mode=ro never creates or changes the file. But a WAL database is read through its -shm
    index, which a reader creates when it is missing: a user who may not write the state
    directory then fails. The -wal and -shm files exist while a daemon has the database
    open and are removed when the last connection closes, so without a -wal file nobody is
    writing, and the file can be read as immutable (no -shm, no locks).
    """
    uri = path.absolute().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise PxedError(f"cannot open lease database {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # the first read opens the index
        return conn
    except sqlite3.DatabaseError as exc:
        conn.close()
        if not isinstance(exc, sqlite3.OperationalError):
            raise PxedError(f"{path} is not a pxed lease database: {exc}") from exc
        if Path(f"{path}-wal").exists():
            raise PxedError(f"cannot read lease database {path}: {exc}") from exc
    try:
        return sqlite3.connect(f"{uri}?immutable=1", uri=True)
    except sqlite3.Error as exc:
        raise PxedError(f"cannot open lease database {path}: {exc}") from exc


def _load(conn: sqlite3.Connection, path: Path, select: str = _SELECT) -> list[Lease]:
    """The rows of ``conn``'s lease table as Leases (shared by the daemon and readers)."""
    subnets: dict[str, str] = {}
    leases: list[Lease] = []
    try:
        rows: Iterator[LeaseRow] = conn.execute(select)
        for subnet, ip, key, mac, hostname, expires, state, updated, arch, boot in rows:
            # One string object per subnet, not one per lease.
            subnet = subnets.setdefault(subnet, subnet)
            leases.append(
                Lease(
                    ip=IPv4Address(ip),
                    client_key=key,
                    mac=mac,
                    hostname=hostname,
                    expires=expires,
                    state=_STATES[state],
                    subnet=subnet,
                    updated=updated,
                    arch=arch,
                    boot_file=boot,
                )
            )
    except sqlite3.DatabaseError as exc:
        raise PxedError(f"cannot read leases from {path}: {exc}") from exc
    except (KeyError, ValueError, TypeError) as exc:
        raise PxedError(f"{path} holds a malformed lease row: {exc!r}") from exc
    return leases


def final_rows(batch: Iterable[Lease]) -> list[Lease]:
    """The batch as it must end up on disk, in staging order.

    A client bound to A and then to B within one batch ends bound to B: its A row is written
    released at B's ``updated``, exactly what a commit per lease would have left behind.
    """
    leases = list(batch)
    last: dict[tuple[str, bytes], Lease] = {}
    bindings = 0
    for lease in leases:
        if lease.state is LeaseState.ACTIVE and lease.client_key:
            last[(lease.subnet, lease.client_key)] = lease
            bindings += 1
    if len(last) == bindings:
        return leases  # the common case: no client bound twice in the batch
    final = []
    for lease in leases:
        if lease.state is LeaseState.ACTIVE and lease.client_key:
            newest = last[(lease.subnet, lease.client_key)]
            if newest is not lease:
                lease = replace(
                    lease,
                    state=LeaseState.RELEASED,
                    expires=min(lease.expires, newest.updated),
                    updated=newest.updated,
                )
        final.append(lease)
    return final


def _batch_parameters(leases: list[Lease]) -> tuple[str, bytes]:
    """(JSON rows, client-key blob): the parameters of _RELEASE_OTHERS and _UPSERT."""
    rows = []
    # substr() counts from 1, and gives NULL, not an empty blob, on an empty blob: one
    # leading byte keeps a batch whose keys are all empty (declines) NOT NULL.
    keys = [b"\0"]
    offset = 2
    for lease in leases:
        key = lease.client_key
        rows.append(
            (
                lease.subnet,
                int(lease.ip),
                offset,
                len(key),
                lease.mac,
                lease.hostname,
                lease.expires,
                lease.state.value,
                lease.updated,
                lease.arch,
                lease.boot_file,
            )
        )
        keys.append(key)
        offset += len(key)
    return json.dumps(rows, separators=(",", ":")), b"".join(keys)


def _split_sql(script: str) -> list[str]:
    """Statements of a script without semicolons inside literals (true of our schema)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
