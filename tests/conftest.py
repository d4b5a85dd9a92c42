"""Shared fixtures (tests/lab.py) and the suite's markers."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

from pxed.lab import ToolMissing
from tests.lab import lab, postgres, postgres_server, tftp_lab  # noqa: F401  (fixtures)


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, Any, None]:
    """A program the lab needs is missing (pxed.lab.ToolMissing): a skip naming its package."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if call.excinfo is not None and call.excinfo.errisinstance(ToolMissing):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {call.excinfo.value}")
