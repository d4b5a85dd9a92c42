"""Several pxed on one segment sharing a PostgreSQL lease database, and the clients beside them.

Layout: a switch namespace with a bridge; each server in a namespace of its own plugged
into it (198.19.0.1, 198.19.0.3, 198.19.0.4 ...), and a client namespace on it too, where
dhclient runs and perfdhcp poses as a relay (198.19.0.2) that sends every request to the
segment's broadcast address, so that each server gets a copy, as from a relay configured
with all of them.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pxed.lab.dhcp import (
    CLIENT_IF,
    PREFIX,
    RELAY_IP,
    SERVER_IF,
    DhcpSetup,
    KeaDhcp,
    Lease,
    PxedDhcp,
    norm_mac,
    pxed_dhcp_config,
    stop_servers,
)
from pxed.lab.netns import Lab, Netns
from pxed.lab.postgres import PostgresServer

SERVER_IPS = ("198.19.0.1", "198.19.0.3", "198.19.0.4", "198.19.0.5")
BROADCAST = "198.19.255.255"


class PxedClusterDhcp(PxedDhcp):
    """pxed with its leases in the shared PostgreSQL database, as server ``name``."""

    def __init__(self, ns: Netns, setup: DhcpSetup, workdir: Path, *, dsn: str, name: str,
                 takeover: int = 3, quiet: bool = False) -> None:  # fmt: skip
        super().__init__(ns, SERVER_IF, setup, workdir, quiet=quiet)
        self.dsn = dsn
        self.server_name = name
        self.settings = pxed_dhcp_config(setup, SERVER_IF, workdir)
        """The configuration mapping (a test may add to it before start())."""
        self.settings["leases"] = {"backend": "postgresql", "dsn": dsn}
        self.settings["cluster"] = {"name": name, "heartbeat": "1s", "takeover": f"{takeover}s"}
        self.config = self.settings

    def leases(self) -> list[Lease]:
        return shared_leases(self.dsn)


class KeaPgDhcp(KeaDhcp):
    """Kea 2.2 with its PostgreSQL lease backend (``kea-admin db-init pgsql``), on the
    lab's PostgreSQL through its socket: the peer of pxed's PostgreSQL store."""

    def __init__(self, ns: Netns, setup: DhcpSetup, workdir: Path, *,
                 postgres: PostgresServer, quiet: bool = False) -> None:  # fmt: skip
        super().__init__(ns, SERVER_IF, setup, workdir, quiet=quiet, socket_type="raw")
        self.postgres = postgres
        self.database = "kea"

    def init_database(self) -> None:
        self.postgres.create_database(self.database)
        res = subprocess.run(
            ["kea-admin", "db-init", "pgsql", "-u", "postgres", "-n", self.database,
             "-h", str(self.postgres.socket_dir), "-P", "5432"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"kea-admin db-init pgsql failed: {res.stdout}{res.stderr}")

    def kea_config(self) -> dict[str, Any]:
        config = super().kea_config()
        config["Dhcp4"]["lease-database"] = {
            "type": "postgresql", "name": self.database, "user": "postgres",
            "host": str(self.postgres.socket_dir), "port": 5432,
        }  # fmt: skip
        return config

    def leases(self) -> list[Lease]:
        out = self.postgres.sql(
            "SELECT '0.0.0.0'::inet + address, encode(hwaddr, 'hex'), state, "
            "extract(epoch FROM expire)::bigint FROM lease4",
            self.database,
        )
        rows = []
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) == 4:
                state = {"0": "ACTIVE", "1": "DECLINED"}.get(parts[2], "EXPIRED")
                mac = norm_mac(bytes.fromhex(parts[1]))
                rows.append(Lease(parts[0], mac, state, float(parts[3]), None))
        return rows


def shared_leases(dsn: str) -> list[Lease]:
    """Every row of the shared database, as the lab's Lease (what all servers stored)."""
    from pxed.leases.pg import PgLeaseStore

    store = PgLeaseStore(dsn, "lab")
    store.open()
    try:
        return [
            Lease(str(x.ip), x.mac, x.state.value.upper(), x.expires, x.hostname)
            for x in store.load()
        ]
    finally:
        store.close()


@dataclass
class ClusterNet:
    lab: Lab
    postgres: PostgresServer
    switch: Netns
    client_ns: Netns
    server_ns: list[Netns]
    setup: DhcpSetup
    servers: list[PxedClusterDhcp] = field(default_factory=list)

    def server(self, index: int, *, takeover: int = 3, quiet: bool = False,
               **config: Any) -> PxedClusterDhcp:  # fmt: skip
        """The pxed of server namespace ``index`` (name pxed-a, pxed-b ...)."""
        setup = replace(self.setup, server_ip=SERVER_IPS[index])
        srv = PxedClusterDhcp(
            self.server_ns[index], setup, self.lab.tmp / f"pxed-{index}",
            dsn=self.postgres.dsn, name=f"pxed-{'abcd'[index]}", takeover=takeover, quiet=quiet,
        )  # fmt: skip
        srv.settings.update(config)
        self.servers.append(srv)
        return srv

    def add_relay_address(self) -> str:
        self.lab.addr(self.client_ns, CLIENT_IF, f"{RELAY_IP}/{PREFIX}")
        return RELAY_IP

    def close(self) -> None:
        stop_servers(list(self.servers))


def make_cluster_net(lab: Lab, postgres: PostgresServer, count: int = 2,
                     setup: DhcpSetup | None = None,
                     client_mac: str = "02:00:5e:10:00:01") -> ClusterNet:  # fmt: skip
    setup = setup or DhcpSetup()
    switch = lab.ns("sw")
    lab.bridge(switch, "br0")
    servers = []
    for i in range(count):
        ns = lab.ns(f"s{i}")
        lab.veth(ns, SERVER_IF, switch, f"port{i}")
        switch.run("ip", "link", "set", f"port{i}", "master", "br0")
        lab.addr(ns, SERVER_IF, f"{SERVER_IPS[i]}/{PREFIX}")
        servers.append(ns)
    client = lab.ns("c")
    lab.veth(client, CLIENT_IF, switch, "portc")
    switch.run("ip", "link", "set", "portc", "master", "br0")
    client.run("ip", "link", "set", CLIENT_IF, "address", client_mac)
    return ClusterNet(lab, postgres, switch, client, servers, setup)
