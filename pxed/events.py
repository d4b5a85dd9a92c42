"""Decision events: what a core decided, as a frozen value, and their fan-out.

The protocol cores never log. They return events with their answers (the DHCP cores in
``Outcome.events``), and the glue hands them to an ``EventBus`` once the replies are out, so
turning an event into a log line (or anything else) is never on the reply path. An event
knows its kind (the log event name, ``dhcp.ack``), its level, and how to become fields; the
fields are built only when a consumer asks, so a core only pays for making the value.

Consumers subscribe to the bus: the log is one (``log_event``); Python callers are others.
A consumer must not block: the bus calls each in turn on the event loop, and one that
raises is dropped from the log with a counted error, never from the hot path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from pxed import logs


@dataclass(frozen=True, slots=True)
class Event:
    """Something a core decided or saw."""

    kind: str
    """The log event name: ``dhcp.ack``, ``dhcp.drop``, ``proxy.offer`` ..."""
    level: int
    """A ``logging`` level: what the log does with it."""

    def fields(self) -> dict[str, Any]:
        """The event's details, as the log line carries them."""
        return {}


@dataclass(frozen=True, slots=True)
class Notice(Event):
    """An event whose details the core already holds as fields."""

    data: Mapping[str, Any]

    def fields(self) -> dict[str, Any]:
        return dict(self.data)


Consumer = Callable[[Event], None]


@dataclass(slots=True)
class EventBus:
    """Every event goes to each consumer in turn."""

    consumers: list[Consumer] = field(default_factory=list)
    failures: int = 0
    """Consumer calls that raised (each is logged once as ``pxed.consumer_error``)."""

    def subscribe(self, consumer: Consumer) -> Callable[[], None]:
        """Add a consumer; returns what removes it again."""
        self.consumers.append(consumer)
        return lambda: self.consumers.remove(consumer) if consumer in self.consumers else None

    def publish(self, events: Iterable[Event]) -> None:
        for event in events:
            for consumer in self.consumers:
                try:
                    consumer(event)
                except Exception:  # a broken consumer costs its own events, not the daemon
                    self.failures += 1
                    structlog.get_logger("pxed").exception(
                        "pxed.consumer_error", consumer=repr(consumer), event_kind=event.kind
                    )


_log = structlog.get_logger("pxed")
_METHODS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
}


def log_event(event: Event) -> None:
    """The log as a consumer: one line per decision, as the cores logged before. An event
    below the log's level costs nothing (its fields are not built: the timeline or the
    metrics may have made the core produce it); a JSON log gets the line directly."""
    if event.level < logs.threshold():
        return
    fields = event.fields()
    if not logs.emit_json(event.kind, event.level, fields):
        getattr(_log, _METHODS.get(event.level, "info"))(event.kind, **fields)
