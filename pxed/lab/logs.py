"""A process's output read on a thread: JSON lines become events, every line is kept.

pxed logs one JSON object a line (``--log-format json``); the peers log text, which their
classes parse into the same event shape. The lines also go to a file as they come, so that
a failed test or boot leaves the whole log behind.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

Event = dict[str, Any]
Parse = Callable[[str], Event | None]


def json_event(line: str) -> Event | None:
    """A JSON log line as a dict; None for anything else."""
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


class EventLog:
    """Drains a stream on a thread into events and lines (and a file, flushed per line).

    ``on_event`` is called on the reader thread for each event as it arrives (the demo's
    live timeline).
    """

    def __init__(
        self,
        stream: IO[bytes] | None,
        copy_to: Path | None = None,
        on_event: Callable[[Event], None] | None = None,
        parse: Parse = json_event,
    ) -> None:
        self.events: list[Event] = []
        self.lines: list[str] = []
        self._parse = parse
        self._copy_to = copy_to
        self._on_event = on_event
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        out = self._copy_to.open("a") if self._copy_to is not None else None
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace").rstrip("\n")
                if out is not None:
                    out.write(line + "\n")
                    out.flush()
                event = self._parse(line)
                with self._lock:
                    self.lines.append(line)
                    if event is not None:
                        self.events.append(event)
                if event is not None and self._on_event is not None:
                    self._on_event(event)
        finally:
            if out is not None:
                out.close()

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    def snapshot(self) -> list[Event]:
        with self._lock:
            return list(self.events)

    def named(self, name: str, **match: Any) -> list[Event]:
        """Events called ``name`` whose fields equal every given value."""
        return [
            e
            for e in self.snapshot()
            if e.get("event") == name and all(e.get(k) == v for k, v in match.items())
        ]

    def said(self, needle: str) -> bool:
        """Whether any line so far contains ``needle`` (text-logging peers' readiness)."""
        with self._lock:
            return any(needle in line for line in self.lines)

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def tail(self, n: int = 60) -> str:
        with self._lock:
            return "\n".join(self.lines[-n:])
