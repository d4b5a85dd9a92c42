"""The daemon's log writer: a line that cannot be encoded costs its own bytes, not the batch."""

from __future__ import annotations

import io

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
