"""structlog set-up for the daemon: readable lines on a terminal, JSON lines for machines.

Only the command line calls this; a program embedding pxed.Server keeps its own logging.

Lines are collected and written once per event-loop turn rather than one write(2) each:
at thousands of DHCP decisions a second, a flushed print per event costs as much as the
decision itself. Outside a running loop every line is written at once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
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


def configure(fmt: str = "console", level: str = "info", stream: TextIO | None = None) -> None:
    global _factory
    stream = stream or sys.stderr
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    _factory = BatchingLoggerFactory(stream)
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
