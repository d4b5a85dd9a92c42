"""pxed as a subprocess in a namespace, with its JSON log collected for assertions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.lab import LogCollector, Netns, wait_for


class Pxed:
    """``pxed ARGS --state-dir WORKDIR/state --log-format json`` running in ``ns``."""

    def __init__(self, ns: Netns, workdir: Path, *args: str) -> None:
        self.proc = ns.popen(
            sys.executable, "-m", "pxed", "--state-dir", str(workdir / "state"),
            "--log-format", "json", *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.collector = LogCollector(self.proc.stdout, workdir / "pxed.log")

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.collector.snapshot() if e.get("event") == name]

    def wait_ready(self, timeout: float = 20) -> dict[str, Any]:
        ok = wait_for(lambda: self.events("pxed.ready") or self.proc.poll() is not None, timeout)
        assert ok, "pxed not ready:\n" + self.log()
        assert self.proc.poll() is None, "pxed exited:\n" + self.log()
        return self.events("pxed.ready")[0]

    def log(self) -> str:
        return self.collector.tail(200)
