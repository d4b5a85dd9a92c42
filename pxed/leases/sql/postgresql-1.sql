-- pxed's lease schema for PostgreSQL, version 1: what `pxed db init` creates.
-- Later versions come as postgresql-N.sql, each upgrading N-1 to N and ending with
-- UPDATE pxed_schema SET version = N (`pxed db upgrade` runs them in one transaction).

-- The schema's version: one row, read by every pxed at start (it refuses another version).
CREATE TABLE pxed_schema (
    version  integer     NOT NULL,
    upgraded timestamptz NOT NULL DEFAULT now()
);

-- One row per address and subnet, shared by every server: the primary key is what makes
-- one address one client's. A server's write of a binding goes through only when the row
-- is free, expired or already that client's (pxed.leases.pg, _UPSERT): an atomic test on a
-- locked row, never a read and then a write.
CREATE TABLE leases (
    subnet     text             NOT NULL,
    ip         bigint           NOT NULL CHECK (ip BETWEEN 0 AND 4294967295),
    client_key bytea            NOT NULL,
    mac        text             NOT NULL,
    hostname   text,
    expires    double precision NOT NULL,   -- epoch seconds
    state      text             NOT NULL CHECK (state IN ('active', 'released', 'declined')),
    updated    double precision NOT NULL,   -- epoch seconds
    arch       integer,
    boot_file  text,
    server     text             NOT NULL,   -- the pxed that wrote the row ([cluster] name)
    PRIMARY KEY (subnet, ip)
);

-- A client's other active row, released when it is bound to a new address.
CREATE INDEX leases_active_by_client ON leases (subnet, client_key) WHERE state = 'active';

-- Boot-once state (`pxed host MAC --next PROFILE`), shared: whichever server answers the
-- machine boots it the same way, and the one that sent its install flips it to 'local'.
CREATE TABLE next_boot (
    mac     text             PRIMARY KEY,
    profile text             NOT NULL,
    updated double precision NOT NULL    -- epoch seconds
);

-- Servers sharing this database find each other here: each writes its row every heartbeat.
CREATE TABLE servers (
    name      text        PRIMARY KEY,
    address   text,
    started   timestamptz NOT NULL,
    last_seen timestamptz NOT NULL
);

-- For people with psql: SELECT * FROM leases_readable;
CREATE VIEW leases_readable AS
SELECT subnet, '0.0.0.0'::inet + ip AS ip, encode(client_key, 'hex') AS client_key, mac,
       hostname, to_timestamp(expires) AS expires, state, to_timestamp(updated) AS updated,
       arch, boot_file, server
FROM leases;

INSERT INTO pxed_schema (version) VALUES (1);
