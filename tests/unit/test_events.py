"""The cores' decision events: what they return instead of logging, and the fan-out."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from pxed.config import HostConfig
from pxed.dhcp.events import DhcpDecision
from pxed.dhcp.options import MessageType
from pxed.events import Event, EventBus, Notice
from tests.unit.test_dhcp_server import PXE_VC, Client, make_server


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


def test_offer_and_ack_are_decisions_with_the_rule_that_chose_the_file() -> None:
    client = Client(make_server(), o60=PXE_VC, o93=struct.pack("!H", 7))
    offer, out = client.discover()
    (decision,) = out.events
    assert isinstance(decision, DhcpDecision) and decision.kind == "dhcp.offer"
    fields = decision.fields()
    assert fields["mac"] == client.mac and fields["ip"] == str(offer.yiaddr)
    assert fields["arch"] == 7 and fields["boot_file"] and fields["boot_reason"]
    _ack, out = client.select(offer)
    assert kinds(out.events) == ["dhcp.ack"]


def test_events_below_the_level_are_not_made() -> None:
    quiet = make_server()
    quiet.min_level = logging.WARNING
    quiet._decisions = False
    client = Client(quiet)
    assert client.discover()[1].events == []
    chatty = make_server()
    chatty.min_level = logging.DEBUG
    stray = Client(chatty)
    out = stray.send(stray.packet(MessageType.OFFER))  # not a client message: dropped
    (drop,) = out.events
    assert isinstance(drop, Notice) and drop.kind == "dhcp.drop" and drop.level == logging.DEBUG
    assert "not a client message" in drop.fields()["reason"]
    assert Client(make_server()).send(stray.packet(MessageType.OFFER)).events == []


def test_pool_exhaustion_warns_once_then_not_again() -> None:
    server = make_server(ranges=(("198.19.1.0", "198.19.1.1"),))
    for i in range(2):
        Client(server, f"52:54:00:00:00:{i:02x}").dora()
    late = Client(server, "52:54:00:00:00:ff")
    first = late.send(late.packet(MessageType.DISCOVER)).events
    assert kinds(first) == ["dhcp.pool_exhausted"] and first[0].level == logging.WARNING
    assert late.send(late.packet(MessageType.DISCOVER)).events == []  # debug, not made


def test_chainload_loop_warning_is_an_event() -> None:
    host = HostConfig("52:54:00:12:34:56", None, None, "undionly.kpxe")
    client = Client(make_server(hosts=(host,)), host.mac, o60=PXE_VC, o77=b"iPXE",
                    o93=struct.pack("!H", 7))  # fmt: skip
    _offer, out = client.discover()
    warnings = [e for e in out.events if e.kind == "dhcp.boot_warning"]
    assert warnings and warnings[0].level == logging.WARNING
    assert warnings[0].fields()["mac"] == host.mac and warnings[0].fields()["detail"]


def test_a_failing_consumer_is_counted_and_the_others_still_run() -> None:
    seen: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("consumer bug")

    bus = EventBus([broken, lambda e: seen.append(e.kind)])
    bus.publish([Notice("dhcp.release", logging.INFO, {}), Notice("dhcp.nak", logging.INFO, {})])
    assert seen == ["dhcp.release", "dhcp.nak"] and bus.failures == 2
    remove = bus.subscribe(lambda e: seen.append("again"))
    remove()
    bus.publish([Notice("x", logging.INFO, {})])
    assert seen[-1] == "x"


@pytest.mark.asyncio
async def test_server_events_filters_by_kind_and_drops_when_the_subscriber_lags() -> None:
    from pxed.app import Server
    from pxed.config import Config

    server = Server(Config(dhcp_enabled=False, tftp=Config().tftp.__class__(enabled=False)))
    stream = server.events("dhcp.ack", maxsize=2)
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)  # the subscriber is in
    events = [Notice("dhcp.offer", logging.INFO, {})] + [
        Notice("dhcp.ack", logging.INFO, {"n": n}) for n in range(4)
    ]
    server.bus.publish(events)
    got = await asyncio.wait_for(first, 1)
    assert got.kind == "dhcp.ack" and got.fields() == {"n": 0}
    assert server.events_dropped == 2  # the queue holds two acks until the subscriber runs
    before = len(server.bus.consumers)
    await stream.aclose()
    assert len(server.bus.consumers) == before - 1  # the log and the timeline are left
