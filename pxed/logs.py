"""structlog set-up for the daemon: readable lines on a terminal, JSON lines for machines.

Only the command line calls this; a program embedding pxed.Server keeps its own logging.

Lines are collected and written once per event-loop turn rather than one write(2) each:
at thousands of DHCP decisions a second, a flushed print per event costs as much as the
decision itself. Outside a running loop every line is written at once.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class BatchingLogger:
    """A structlog logger that writes the lines of one loop iteration in one go."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._pending: list[str] = []

    def msg(self, message: str) -> None:
        self._pending.append(message)
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg

    def flush(self) -> None:
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        text = "\n".join(lines) + "\n"
        try:
            try:
                self._stream.write(text)
            except UnicodeEncodeError:
                # A name a client sent that is not valid UTF-8 (kept as surrogates) must cost
                # its own bytes an escape, never the batch of lines it came in.
                encoding = getattr(self._stream, "encoding", None) or "utf-8"
                self._stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken log stream must not stop the daemon


class BatchingLoggerFactory:
    def __init__(self, stream: TextIO) -> None:
        self.logger = BatchingLogger(stream)

    def __call__(self, *args: Any) -> BatchingLogger:
        return self.logger


_factory: BatchingLoggerFactory | None = None
_threshold = logging.NOTSET
"""Events below this level are not logged (the configured level; NOTSET until configured,
when an embedder's own structlog set-up decides)."""
_json: BatchingLogger | None = None
"""The JSON log's writer, when the log is JSON: decisions are rendered straight to it."""
_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
          logging.ERROR: "error", logging.CRITICAL: "critical"}  # fmt: skip
_UTC = datetime.UTC


def threshold() -> int:
    """The level below which the configured log drops an event (NOTSET: not configured)."""
    return _threshold


def emit_json(kind: str, level: int, fields: Mapping[str, Any]) -> bool:
    """Write one event as the JSON log's line, if the log is JSON; False otherwise.

    The line is what structlog's chain would make of it (the fields, event, level, an ISO
    UTC timestamp), rendered in one json.dumps: at thousands of decisions a second the
    processor chain cost three times the rendering itself."""
    if _json is None:
        return False
    now = datetime.datetime.now(_UTC).isoformat().replace("+00:00", "Z")
    line = {**fields, "event": kind, "level": _NAMES.get(level, "info"), "timestamp": now}
    _json.msg(json.dumps(line, default=str))
    return True


def configure(fmt: str = "console", level: str = "info", stream: TextIO | None = None) -> None:
    global _factory, _threshold, _json
    stream = stream or sys.stderr
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    _factory = BatchingLoggerFactory(stream)
    _threshold = LEVELS.get(level, logging.INFO)
    _json = _factory.logger if fmt == "json" else None
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        # The filtering logger turns disabled levels into no-ops at bind time: debug events
        # on the packet path cost nothing unless asked for.
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=_factory,
        cache_logger_on_first_use=True,
    )


def flush() -> None:
    """Write out what is pending (at shutdown, before the loop stops)."""
    if _factory is not None:
        _factory.logger.flush()
