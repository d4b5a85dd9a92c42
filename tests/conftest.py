"""Shared fixtures: the namespace lab for integration and e2e tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.lab import Lab


def pytest_configure(config: pytest.Config) -> None:
    # Files the tests write must be readable by everyone whatever the caller's umask: pxed,
    # as root, serves only world-readable files ([tftp] world_readable_only).
    os.umask(0o022)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests under integration/ and e2e/ carry their marker without repeating it in every file.
    for item in items:
        path = str(item.fspath)
        if f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
        if f"{os.sep}e2e{os.sep}" in path:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (run the suite as root: make test)")
    with Lab() as the_lab:
        yield the_lab
