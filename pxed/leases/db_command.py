"""`pxed db init | upgrade | status`: the PostgreSQL lease database's schema.

The daemon never creates or migrates a shared database itself (several servers would race
to do it, and a new pxed must not silently change the schema under older ones): an admin
runs ``pxed db init`` once for a new database and ``pxed db upgrade`` once after installing
a pxed with a newer schema, from any one server. The DSN is ``--dsn``, else the
configuration's ``[leases] dsn``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pxed.errors import PxedError

PROG = "pxed db"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Create, upgrade or show pxed's PostgreSQL lease schema."
    )
    parser.add_argument("action", choices=("init", "upgrade", "status"))
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: the configuration's [leases] dsn)")
    parser.add_argument("--config", "-c", type=Path, help="TOML configuration file")
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    dsn = args.dsn
    if dsn is None:
        from pxed.leases.report import leases_config_or_say

        config = leases_config_or_say(PROG, args.config)
        if config is None:
            return 1
        if config.backend != "postgresql" or not config.dsn:
            where = args.config or "the default configuration"
            print(f"{PROG}: {where} has no [leases] dsn; give --dsn", file=sys.stderr)
            return 1
        dsn = config.dsn
    from pxed.leases import pg

    try:
        if args.action == "init":
            version = pg.init_schema(dsn)
            print(f"created pxed schema version {version} in {pg.safe_dsn(dsn)}")
        elif args.action == "upgrade":
            found, version = pg.upgrade_schema(dsn)
            if found == version:
                print(f"pxed schema of {pg.safe_dsn(dsn)} is version {version}: up to date")
            else:
                print(f"upgraded pxed schema of {pg.safe_dsn(dsn)}: {found} -> {version}")
        else:
            return _status(dsn)
    except PxedError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    return 0


def _status(dsn: str) -> int:
    from pxed.leases import pg

    conn = pg.connect(dsn, "pxed db status")
    try:
        found = pg.schema_version(conn)
    finally:
        conn.close()
    if found is None:
        print(f"{pg.safe_dsn(dsn)}: no pxed schema (pxed db init creates it)")
        return 1
    state = "up to date" if found == pg.SCHEMA_VERSION else f"this pxed needs {pg.SCHEMA_VERSION}"
    print(f"{pg.safe_dsn(dsn)}: pxed schema version {found} ({state})")
    for peer in pg.read_servers(dsn):
        print(f"server {peer.name} ({peer.address or 'no address'}): "
              f"last heartbeat {peer.age:.1f}s ago")  # fmt: skip
    return 0 if found == pg.SCHEMA_VERSION else 1
