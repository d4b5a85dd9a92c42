"""Metrics as a consumer of the event stream, and the [metrics] configuration."""

from __future__ import annotations

import logging
import struct
from ipaddress import IPv4Address

import pytest

from pxed.config.load import build_config
from pxed.dhcp.events import DropReason
from pxed.dhcp.options import MessageType, OptionCode
from pxed.dhcp.packet import DhcpPacket, build
from pxed.dhcp.proxy import PROXY_PORT
from pxed.dhcp.server import Source
from pxed.errors import ConfigError
from pxed.events import Notice
from pxed.metrics import Metrics
from pxed.tftp.server import RefusalReason
from tests.unit import test_dhcp_proxy as proxy_tests
from tests.unit.test_dhcp_server import IFACE, NOW, PXE_VC, SERVER_IP, Client, make_server

OC = OptionCode


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
    m(Notice("tftp.refused", logging.INFO, {"reason": "file not found", "cause": "not_found"}))
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


def shown(m: Metrics, name: str, **labels: str) -> bool:
    """Whether the sample is exposed at all (a series at 0 is, from the start)."""
    return m.registry.get_sample_value(name, labels) is not None


def test_messages_in_and_drops_are_counted_by_the_core_at_any_level() -> None:
    server = make_server()
    server.min_level = logging.WARNING  # no DEBUG drop event, no INFO decision is made
    server._decisions = False
    client = Client(server)
    offer, _ = client.discover()
    ack, _ = client.select(offer)
    other = Client(server, "52:54:00:aa:bb:02")
    outs = [
        # Taking another server's offer.
        other.send(other.packet(MessageType.REQUEST, options={
            OC.REQUESTED_IP: IPv4Address("198.19.1.5").packed,
            OC.SERVER_ID: IPv4Address("198.19.0.254").packed})),
        # Releasing the first client's address.
        other.send(other.packet(MessageType.RELEASE, ciaddr=ack.yiaddr,
                                options={OC.SERVER_ID: SERVER_IP.packed})),
        other.send(other.packet(MessageType.OFFER)),
        other.send(DhcpPacket(op=1, xid=7, chaddr=other.chaddr, options={})),  # BOOTP
        server.receive(b"\x01\x01\x06\x00 too short", Source(IFACE, SERVER_IP, 68), NOW),
        server.receive(build(other.packet(MessageType.DISCOVER)), Source("eth9", SERVER_IP, 68),
                       NOW),
    ]  # fmt: skip
    assert all(out.replies == [] and out.events == [] for out in outs)
    assert server.drops == {
        DropReason.OTHER_SERVER: 1,
        DropReason.NOT_HOLDER: 1,
        DropReason.NOT_CLIENT_MESSAGE: 1,
        DropReason.BOOTP: 1,
        DropReason.MALFORMED: 1,
        DropReason.WRONG_INTERFACE: 1,
    }
    m = Metrics()
    m.refresh(server.tables, NOW, dhcp=[server], tftp_active=2)
    received = {t: value(m, "pxed_dhcp_received_total", type=t)
                for t in ("DISCOVER", "REQUEST", "RELEASE", "OFFER", "none")}  # fmt: skip
    assert received == {"DISCOVER": 1, "REQUEST": 2, "RELEASE": 1, "OFFER": 1, "none": 1}
    assert shown(m, "pxed_dhcp_received_total", type="DECLINE")
    for reason in DropReason:
        count = value(m, "pxed_dhcp_drops_total", reason=reason.value)
        assert count == server.drops.get(reason, 0), reason
        assert shown(m, "pxed_dhcp_drops_total", reason=reason.value)
    assert value(m, "pxed_tftp_active") == 2


def test_a_drop_event_keeps_its_words_and_names_its_cause() -> None:
    server = make_server()
    server.min_level = logging.DEBUG
    client = Client(server)
    out = client.send(client.packet(MessageType.DECLINE, options={
        OC.REQUESTED_IP: IPv4Address("198.19.1.1").packed,
        OC.SERVER_ID: IPv4Address("198.19.0.254").packed}))  # fmt: skip
    (drop,) = out.events
    fields = drop.fields()
    assert drop.kind == "dhcp.drop" and fields["reason"] == "DECLINE not for us"
    assert fields["cause"] == "other_server" and fields["server_id"] == "198.19.0.254"
    assert fields["mac"] == client.mac and fields["msg_type"] == "DECLINE"
    (bad,) = server.receive(b"\x01\x01", Source(IFACE, SERVER_IP, 68), NOW).events
    assert bad.fields()["cause"] == "malformed" and bad.fields()["reason"]


def test_a_scrape_reads_the_snapshot_taken_on_the_loop_not_the_live_counters() -> None:
    server = make_server()
    m = Metrics()
    client = Client(server)
    client.discover()
    m.refresh(server.tables, NOW, dhcp=[server])
    client.xid += 1
    client.discover()
    assert server.received[MessageType.DISCOVER] == 2
    assert value(m, "pxed_dhcp_received_total", type="DISCOVER") == 1
    m.refresh(server.tables, NOW, dhcp=[server])
    assert value(m, "pxed_dhcp_received_total", type="DISCOVER") == 2


def test_a_reloaded_core_goes_on_counting() -> None:
    old = make_server()
    stray = Client(old)
    stray.send(stray.packet(MessageType.ACK))
    new = make_server()
    new.take_counters(old)
    Client(new).send(stray.packet(MessageType.NAK))
    assert new.drops == {DropReason.NOT_CLIENT_MESSAGE: 2}
    assert new.received == {MessageType.ACK: 1, MessageType.NAK: 1}
    assert new.stats is old.stats


def test_the_proxy_counts_what_it_hears_and_what_it_leaves() -> None:
    server = proxy_tests.proxy()
    server.min_level = logging.WARNING
    vc = proxy_tests.PXE_VC
    send = proxy_tests.send
    send(server, MessageType.DISCOVER)  # a laptop: the router's
    taken = IPv4Address("198.19.1.9").packed  # firmware taking the router's offer
    send(server, MessageType.REQUEST, o60=vc, o54=proxy_tests.ROUTER.packed, o50=taken)
    send(server, MessageType.DISCOVER, o60=vc, port=PROXY_PORT)
    send(server, MessageType.DISCOVER, o60=vc, o93=struct.pack("!H", 6))  # IA32: no file
    assert len(send(server, MessageType.DISCOVER, o60=vc).replies) == 1
    assert server.received == {MessageType.DISCOVER: 4, MessageType.REQUEST: 1}
    assert server.drops == {
        DropReason.NOT_PXE: 1,
        DropReason.OTHER_SERVER: 1,
        DropReason.UNEXPECTED: 1,
        DropReason.NO_BOOT_FILE: 1,
    }
    m = Metrics()
    m.refresh({}, 0.0, dhcp=[server])
    assert value(m, "pxed_dhcp_drops_total", reason="not_pxe") == 1
    assert value(m, "pxed_dhcp_received_total", type="DISCOVER") == 4


def test_tftp_refusals_by_cause_and_boots_by_outcome() -> None:
    m = Metrics()
    for reason in RefusalReason:
        assert shown(m, "pxed_tftp_refusals_total", reason=reason.value)
    assert shown(m, "pxed_boots_total", outcome="failed")
    m(Notice("tftp.refused", logging.INFO,
             {"reason": "file not found", "cause": "not_found", "file": "x"}))  # fmt: skip
    m(Notice("tftp.refused", logging.INFO, {"reason": "server busy", "cause": "busy"}))
    m(Notice("tftp.malformed", logging.INFO, {"reason": "Ack from ...", "cause": "malformed"}))
    for outcome in ("failed", "loaded", "loaded"):
        m(Notice("boots.finished", logging.INFO, {"mac": "52:54:00:aa:bb:01", "outcome": outcome}))
    assert value(m, "pxed_tftp_refusals_total", reason="not_found") == 1
    assert value(m, "pxed_tftp_refusals_total", reason="busy") == 1
    assert value(m, "pxed_tftp_refusals_total", reason="malformed") == 1
    assert value(m, "pxed_tftp_refusals_total", reason="access_violation") == 0
    assert value(m, "pxed_tftp_transfers_total", outcome="refused") == 2
    assert value(m, "pxed_boots_total", outcome="failed") == 1
    assert value(m, "pxed_boots_total", outcome="loaded") == 2
    assert value(m, "pxed_events_total", kind="boots.finished") == 3


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


def test_http_requests_by_outcome_and_bytes() -> None:
    m = Metrics()
    base = {"client": "198.19.0.9:40000", "file": "ipxe.efi", "mac": None}
    m(Notice("http.declined", logging.INFO, {**base, "bytes": 0, "outcome": "head"}))
    m(Notice("http.done", logging.INFO, {**base, "bytes": 1_000_000, "outcome": "ok"}))
    m(Notice("http.failed", logging.WARNING, {**base, "bytes": 0, "outcome": "aborted"}))
    m(Notice("http.refused", logging.INFO, {**base, "status": 404, "cause": "not_found"}))
    for outcome in ("head", "ok", "aborted", "not_found"):
        assert value(m, "pxed_http_requests_total", outcome=outcome) == 1, outcome
    assert value(m, "pxed_http_bytes_total") == 1_000_000
