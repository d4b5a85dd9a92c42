"""Metrics as a consumer of the event stream, and the [metrics] configuration."""

from __future__ import annotations

import logging

import pytest

from pxed.config.load import build_config
from pxed.errors import ConfigError
from pxed.events import Notice
from pxed.metrics import Metrics
from tests.unit.test_dhcp_server import PXE_VC, Client, make_server


def value(m: Metrics, name: str, **labels: str) -> float:
    got = m.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_replies_events_and_transfers_are_counted() -> None:
    m = Metrics()
    server = make_server()
    client = Client(server, o60=PXE_VC)
    offer, out = client.discover()
    for event in out.events:
        m(event)
    _ack, out = client.select(offer)
    for event in out.events:
        m(event)
    m(Notice("tftp.done", logging.INFO, {"bytes": 1000, "outcome": "ok"}))
    m(Notice("tftp.failed", logging.WARNING, {"bytes": 10, "outcome": "timeout"}))
    m(Notice("tftp.refused", logging.INFO, {"reason": "file not found"}))
    assert value(m, "pxed_dhcp_replies_total", type="offer") == 1
    assert value(m, "pxed_dhcp_replies_total", type="ack") == 1
    assert value(m, "pxed_events_total", kind="dhcp.ack") == 1
    assert value(m, "pxed_tftp_transfers_total", outcome="ok") == 1
    assert value(m, "pxed_tftp_transfers_total", outcome="timeout") == 1
    assert value(m, "pxed_tftp_transfers_total", outcome="refused") == 1
    assert value(m, "pxed_tftp_bytes_total") == 1010
    m.refresh(server.tables, client.now)
    (subnet,) = server.tables
    assert value(m, "pxed_leases", subnet=subnet, state="active") == 1
    assert value(m, "pxed_leases", subnet=subnet, state="free") > 0


def test_metrics_listen_is_checked() -> None:
    base = {"dhcp": {"enabled": False}, "tftp": {"enabled": False}}
    config = build_config({**base, "metrics": {"listen": "127.0.0.1:9167"}})
    assert config.metrics.listen == ("127.0.0.1", 9167)
    for bad, line in (
        ("9167", "[metrics] listen: '9167' is not HOST:PORT (like '127.0.0.1:9167')"),
        ("localhost:9167", "[metrics] listen: 'localhost' is not an IP address"),
        ("127.0.0.1:99999", "[metrics] listen: '127.0.0.1:99999' is not HOST:PORT "
                            "(like '127.0.0.1:9167')"),
    ):  # fmt: skip
        with pytest.raises(ConfigError) as err:
            build_config({**base, "metrics": {"listen": bad}})
        assert err.value.problems == [line]
