"""Prometheus metrics: a consumer of the event stream, and the lease tables' counts.

Counters follow the events as they are published: DHCP replies by message type, every
event by kind (NAKs, drops, declines, refusals ...), TFTP transfers by outcome and their
bytes. Lease gauges (active, free, held, declined per subnet) are computed on the event
loop every few seconds, never on the scrape thread, so that a scrape never reads a table
while the loop changes it. pxed.web answers the scrapes (``/metrics`` on ``[metrics]
listen``), rendering them on a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from pxed.events import Event
from pxed.leases import LeaseTable

REFRESH = 5.0
"""Seconds between updates of the lease gauges."""

_REPLY_KINDS = {
    "dhcp.offer": "offer",
    "dhcp.ack": "ack",
    "dhcp.inform": "inform",
    "dhcp.nak": "nak",
    "proxy.offer": "proxy_offer",
    "proxy.ack": "proxy_ack",
}
_TRANSFER_KINDS = {"tftp.done", "tftp.failed", "tftp.declined"}


class Metrics:
    """pxed's metrics in a registry of their own (an embedder's default registry is left
    alone)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.replies = Counter("pxed_dhcp_replies", "DHCP replies decided, by type",
                               ["type"], registry=r)  # fmt: skip
        self.events = Counter("pxed_events", "Decision events, by kind", ["kind"], registry=r)
        self.transfers = Counter("pxed_tftp_transfers", "TFTP transfers ended, by outcome",
                                 ["outcome"], registry=r)  # fmt: skip
        self.tftp_bytes = Counter("pxed_tftp_bytes", "Bytes of TFTP transfers acknowledged",
                                  registry=r)  # fmt: skip
        self.leases = Gauge("pxed_leases", "Addresses per subnet, by state",
                            ["subnet", "state"], registry=r)  # fmt: skip
        self.reloads = Counter("pxed_reloads", "Configuration reloads, by result", ["result"],
                               registry=r)  # fmt: skip

    def __call__(self, event: Event) -> None:
        """The consumer: counts one event (cheap: its fields are read only for TFTP)."""
        kind = event.kind
        self.events.labels(kind).inc()
        reply = _REPLY_KINDS.get(kind)
        if reply is not None:
            self.replies.labels(reply).inc()
        elif kind in _TRANSFER_KINDS:
            fields = event.fields()
            self.transfers.labels(str(fields.get("outcome") or kind.split(".", 1)[1])).inc()
            sent = fields.get("bytes")
            if isinstance(sent, int) and sent > 0:
                self.tftp_bytes.inc(sent)
        elif kind == "tftp.refused":
            self.transfers.labels("refused").inc()

    def refresh(self, tables: Mapping[str, LeaseTable], now: float) -> None:
        """The lease gauges from the tables as they are now (on the event loop)."""
        for subnet, table in tables.items():
            stats = table.stats(now)
            for state in ("active", "free", "held", "declined"):
                self.leases.labels(subnet, state).set(getattr(stats, state))
