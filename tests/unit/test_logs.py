"""The daemon's log writer: a line that cannot be encoded costs its own bytes, not the batch."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from pxed.logs import BatchingLogger


def test_a_name_that_is_not_utf8_does_not_drop_the_batch() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    logger = BatchingLogger(stream)
    logger.msg("tftp.refused before")
    # What packet._text makes of the bytes b"boot\xff.0" a client sent (surrogateescape).
    logger.msg("tftp.refused file=" + b"boot\xff.0".decode("utf-8", "surrogateescape"))
    logger.msg("tftp.refused after")
    logger.flush()
    lines = raw.getvalue().decode().splitlines()
    assert lines == ["tftp.refused before", "tftp.refused file=boot\\udcff.0", "tftp.refused after"]


def test_decisions_below_the_level_cost_nothing_and_json_lines_are_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pxed import logs
    from pxed.events import Event, Notice, log_event

    built: list[str] = []

    class Counted(Event):
        def fields(self) -> dict[str, Any]:
            built.append(self.kind)
            return {"mac": "02:00:00:00:00:01"}

    stream = io.StringIO()
    logger = BatchingLogger(stream)
    monkeypatch.setattr(logs, "_threshold", logging.INFO)
    monkeypatch.setattr(logs, "_json", logger)
    log_event(Counted("dhcp.drop", logging.DEBUG))  # below the level: fields never built
    name = b"n\xff".decode("utf-8", "surrogateescape")  # a client's bytes, as packet.py keeps them
    log_event(Notice("dhcp.ack", logging.INFO, {"mac": "02:00:00:00:00:01", "ip": "198.19.0.9",
                                                "name": name}))  # fmt: skip
    logger.flush()
    assert built == []
    (line,) = stream.getvalue().splitlines()
    got = json.loads(line)
    assert got["event"] == "dhcp.ack" and got["level"] == "info" and got["ip"] == "198.19.0.9"
    assert got["timestamp"].endswith("Z") and got["name"] == "n\udcff"
