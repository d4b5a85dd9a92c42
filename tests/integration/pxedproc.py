"""pxed as a subprocess in a namespace, with its JSON log collected for assertions."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.lab import Netns, wait_for


class Pxed:
    """``pxed ARGS --state-dir WORKDIR/state --log-format json`` running in ``ns``."""

    def __init__(self, ns: Netns, workdir: Path, *args: str) -> None:
        self.lines: list[str] = []
        self.proc = ns.popen(
            sys.executable, "-m", "pxed", "--state-dir", str(workdir / "state"),
            "--log-format", "json", *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                out.append(event)
        return out

    def wait_ready(self, timeout: float = 20) -> dict[str, Any]:
        ok = wait_for(lambda: self.events("pxed.ready") or self.proc.poll() is not None, timeout)
        assert ok, "pxed not ready:\n" + self.log()
        assert self.proc.poll() is None, "pxed exited:\n" + self.log()
        return self.events("pxed.ready")[0]

    def log(self) -> str:
        return "\n".join(self.lines)
