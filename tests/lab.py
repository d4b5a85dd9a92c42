"""pytest fixtures over the lab (pxed.lab): the namespaces, the servers and the machines.

Everything that builds namespaces, starts pxed or a peer, or boots a machine lives in
pxed.lab (used by `pxed demo` and bench/ too); this module only hands it to tests. A
program a test needs that is not installed raises pxed.lab.ToolMissing, which
tests/conftest.py reports as a skip naming the Debian package (`make test` installs them
all, so CI never skips).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxed.lab import Lab
from pxed.lab.dhcp import DhcpNet, DhcpSetup, make_dhcp_net
from pxed.lab.postgres import PostgresServer
from pxed.lab.tftp import TftpLab

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "tests" / ".cache"

DHCP_SERVER = os.environ.get("PXED_TEST_DHCP_SERVER", "pxed")
"""The DHCP server the integration tests drive: pxed, or dnsmasq / Kea to check that the
tests themselves are right (PXED_TEST_DHCP_SERVER=dnsmasq make test)."""


def dhcp_net(lab: Lab, setup: DhcpSetup | None = None, **kwargs: str) -> DhcpNet:
    """The server <-> client namespaces with DHCP_SERVER as the server under test."""
    return make_dhcp_net(lab, setup, server=DHCP_SERVER, **kwargs)


@pytest.fixture
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (run the suite as root: make test)")
    with Lab() as the_lab:
        yield the_lab


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL 15 of the suite's own (UNIX socket only), removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("the lab's PostgreSQL runs as the postgres user: run the suite as root")
    with PostgresServer(Path(tempfile.mkdtemp(prefix="pxed-pg-"))) as server:
        yield server


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> PostgresServer:
    """The suite's PostgreSQL with database ``pxed`` emptied (no pxed schema) for this test;
    running (a test that stopped it gets it started again)."""
    if not postgres_server.running():
        postgres_server.start()
    postgres_server.reset()
    return postgres_server


@pytest.fixture
def tftp_lab(lab: Lab) -> Iterator[TftpLab]:
    tl = TftpLab(lab)
    try:
        yield tl
    finally:
        tl.close()


def keep_dir(request: pytest.FixtureRequest) -> Path:
    """Where a test's logs, serial consoles and screenshots stay after it
    (tests/.cache/e2e-logs/NAME)."""
    return CACHE / "e2e-logs" / re.sub(r"[^\w.-]", "_", request.node.name)
