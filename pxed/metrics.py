"""Prometheus metrics: a consumer of the event stream, and the lease tables' counts.

What the events cannot say at every log level (a drop is a DEBUG event, not made at INFO)
the DHCP cores count themselves in plain dicts (``received`` by message type, ``drops`` by
:class:`~pxed.dhcp.events.DropReason`); :meth:`Metrics.refresh` copies those and the number
of running TFTP transfers into a :class:`Snapshot` on the event loop, which a custom
collector serves. The consumer adds TFTP refusals by reason and finished boots by outcome.

Counters follow the events as they are published: DHCP replies by message type, every
event by kind (NAKs, drops, declines, refusals ...), TFTP transfers by outcome and their
bytes. Lease gauges (active, free, held, declined per subnet) are computed on the event
loop every few seconds, never on the scrape thread, so that a scrape never reads a table
while the loop changes it. pxed.web answers the scrapes (``/metrics`` on ``[metrics]
listen``), rendering them on a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pxed.dhcp.events import DropReason
from pxed.dhcp.options import MessageType
from pxed.events import Event
from pxed.leases import LeaseTable
from pxed.tftp.server import RefusalReason

if TYPE_CHECKING:  # psycopg is needed only with the PostgreSQL store
    from pxed.cluster import Balance
    from pxed.leases.pg import Peer

REFRESH = 5.0
"""Seconds between updates of the lease gauges and the cores' counters."""

_REPLY_KINDS = {
    "dhcp.offer": "offer",
    "dhcp.ack": "ack",
    "dhcp.inform": "inform",
    "dhcp.nak": "nak",
    "proxy.offer": "proxy_offer",
    "proxy.ack": "proxy_ack",
}
_TRANSFER_KINDS = {"tftp.done", "tftp.failed", "tftp.declined"}
_HTTP_KINDS = frozenset({"http.done", "http.failed", "http.declined", "http.refused"})
_DETAILED = frozenset({*_TRANSFER_KINDS, *_HTTP_KINDS, "tftp.refused", "tftp.malformed",
                       "boots.finished"})  # fmt: skip
"""The kinds whose fields a metric needs (the others are counted by kind alone)."""
CLIENT_TYPES = ("DISCOVER", "REQUEST", "DECLINE", "RELEASE", "INFORM")
"""Message types ``pxed_dhcp_received`` shows from the start, at 0 (others once seen)."""
NO_TYPE = "none"
"""The ``type`` of a message without a (valid) DHCP message type: BOOTP."""
BOOT_OUTCOMES = ("loaded", "failed", "booting")
"""A story finished while still "booting": it went quiet before anything said how it ended."""


class StoreCounts(Protocol):
    """What the group committer knows of the lease store (pxed.net.commit)."""

    @property
    def store_down(self) -> bool: ...

    failed: int
    refused: int


class ClusterView(Protocol):
    """The heartbeat loop's view of the servers (pxed.net.cluster.ClusterMember)."""

    @property
    def balance(self) -> Balance: ...

    peers: list[Peer]
    holdings: dict[str, int]


class DhcpCounts(Protocol):
    """What a DHCP core counts (:class:`~pxed.dhcp.server.DhcpServer`, the ProxyDHCP)."""

    @property
    def received(self) -> Mapping[MessageType | None, int]: ...

    @property
    def drops(self) -> Mapping[DropReason, int]: ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The cores' counters as they were at one moment on the event loop. A scrape reads one
    of these whole (a reference swapped by :meth:`Metrics.refresh`), never the live dicts."""

    received: tuple[tuple[str, int], ...] = ()
    """(message type, DHCP messages received)."""
    drops: tuple[tuple[str, int], ...] = tuple((r.value, 0) for r in DropReason)
    """(DropReason value, datagrams left unanswered)."""
    tftp_active: int = 0
    """TFTP transfers running."""
    store_up: int | None = None
    """1 while the lease store takes writes, 0 while it is down; None without DHCP."""
    store_failed: int = 0
    store_refused: int = 0
    servers: tuple[tuple[str, int, float], ...] = ()
    """Servers sharing the lease database: (name, 1 if in the split now else 0, seconds
    since its heartbeat)."""
    holdings: tuple[tuple[str, int], ...] = ()
    """(server, bound leases it wrote) in the shared database."""


class CoreCollector(Collector):
    """The families whose values come from a :class:`Snapshot` (set by the loop)."""

    def __init__(self) -> None:
        self.snapshot = Snapshot(tuple((t, 0) for t in CLIENT_TYPES))

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot  # one read: the loop swaps in a new one, never changes this one
        yield from self._families(snap)

    def describe(self) -> Iterator[Metric]:
        yield from self._families(Snapshot())

    @staticmethod
    def _families(snap: Snapshot) -> Iterator[Metric]:
        received = CounterMetricFamily(
            "pxed_dhcp_received", "DHCP messages received, by message type", labels=["type"]
        )
        for mtype, count in snap.received:
            received.add_metric([mtype], count)
        yield received
        drops = CounterMetricFamily(
            "pxed_dhcp_drops", "DHCP datagrams left unanswered, by reason", labels=["reason"]
        )
        for reason, count in snap.drops:
            drops.add_metric([reason], count)
        yield drops
        yield GaugeMetricFamily("pxed_tftp_active", "TFTP transfers running", snap.tftp_active)
        if snap.store_up is not None:
            yield GaugeMetricFamily("pxed_lease_store_up", "1 while the lease store takes "
                                    "writes, 0 while it is down", snap.store_up)  # fmt: skip
            yield CounterMetricFamily("pxed_lease_commit_failures", "Lease commits that "
                                      "failed (the store was down)", snap.store_failed)  # fmt: skip
            yield CounterMetricFamily("pxed_lease_refusals", "Lease writes the shared "
                                      "database refused (another server's binding won)",
                                      snap.store_refused)  # fmt: skip
        if snap.servers:
            live = GaugeMetricFamily(
                "pxed_cluster_server_live",
                "Servers sharing the lease database: 1 when in the split now",
                labels=["server"],
            )
            age = GaugeMetricFamily(
                "pxed_cluster_heartbeat_age_seconds",
                "Seconds since each server's last heartbeat",
                labels=["server"],
            )
            for name, up, seconds in snap.servers:
                live.add_metric([name], up)
                age.add_metric([name], seconds)
            yield live
            yield age
            held = GaugeMetricFamily(
                "pxed_cluster_leases",
                "Bound leases in the shared database, by the server that wrote them",
                labels=["server"],
            )
            for name, count in snap.holdings:
                held.add_metric([name], count)
            yield held


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
        self.http = Counter("pxed_http_requests", "HTTP boot requests ended, by outcome (ok, "
                            "head, aborted, and the refusal's cause)", ["outcome"],
                            registry=r)  # fmt: skip
        self.http_bytes = Counter("pxed_http_bytes", "Bytes of HTTP boot files sent",
                                  registry=r)  # fmt: skip
        self.refusals = Counter("pxed_tftp_refusals", "TFTP requests not served (and datagrams "
                                "from peers without a transfer), by reason", ["reason"],
                                registry=r)  # fmt: skip
        self.boots = Counter("pxed_boots", "Boot stories finished, by outcome", ["outcome"],
                             registry=r)  # fmt: skip
        self.leases = Gauge("pxed_leases", "Addresses per subnet, by state",
                            ["subnet", "state"], registry=r)  # fmt: skip
        self.reloads = Counter("pxed_reloads", "Configuration reloads, by result", ["result"],
                               registry=r)  # fmt: skip
        self.cores = CoreCollector()
        r.register(self.cores)
        # Label children made once: labels() costs a lock and a tuple a call, and the
        # consumer runs for every event on the bus.
        self._kinds: dict[str, Any] = {}
        self._replies = {kind: self.replies.labels(t) for kind, t in _REPLY_KINDS.items()}
        self._refusals = {str(x): self.refusals.labels(str(x)) for x in RefusalReason}
        for outcome in BOOT_OUTCOMES:
            self.boots.labels(outcome)

    def __call__(self, event: Event) -> None:
        """The consumer: counts one event (cheap: fields are read only for the kinds in
        _DETAILED, TFTP transfers ending or refused and boots finished)."""
        kind = event.kind
        child = self._kinds.get(kind)
        if child is None:
            child = self._kinds[kind] = self.events.labels(kind)
        child.inc()
        reply = self._replies.get(kind)
        if reply is not None:
            reply.inc()
        elif kind in _DETAILED:
            self._detailed(kind, event.fields())

    def _detailed(self, kind: str, fields: Mapping[str, Any]) -> None:
        if kind in _TRANSFER_KINDS:
            self.transfers.labels(str(fields.get("outcome") or kind.split(".", 1)[1])).inc()
            sent = fields.get("bytes")
            if isinstance(sent, int) and sent > 0:
                self.tftp_bytes.inc(sent)
        elif kind in _HTTP_KINDS:
            outcome = fields.get("outcome") if kind != "http.refused" else fields.get("cause")
            self.http.labels(str(outcome)).inc()
            sent = fields.get("bytes")
            if isinstance(sent, int) and sent > 0:
                self.http_bytes.inc(sent)
        elif kind == "boots.finished":
            self.boots.labels(str(fields.get("outcome"))).inc()
        else:  # tftp.refused, tftp.malformed
            if kind == "tftp.refused":
                self.transfers.labels("refused").inc()
            cause = fields.get("cause")
            refusal = self._refusals.get(cause) if isinstance(cause, str) else None
            if refusal is None:  # an event not from the TFTP core (no known cause)
                refusal = self.refusals.labels("unknown")
            refusal.inc()

    def refresh(
        self,
        tables: Mapping[str, LeaseTable],
        now: float,
        *,
        dhcp: Iterable[DhcpCounts] = (),
        tftp_active: int = 0,
        store: StoreCounts | None = None,
        cluster: ClusterView | None = None,
    ) -> None:
        """The lease gauges from the tables as they are now, and a :class:`Snapshot` of the
        DHCP cores' counters and the running TFTP transfers (on the event loop)."""
        for subnet, table in tables.items():
            stats = table.stats(now)
            for state in ("active", "free", "held", "declined"):
                self.leases.labels(subnet, state).set(getattr(stats, state))
        received = dict.fromkeys(CLIENT_TYPES, 0)
        drops = dict.fromkeys((str(x) for x in DropReason), 0)
        for core in dhcp:
            for mtype, count in core.received.items():
                name = mtype.name if mtype is not None else NO_TYPE
                received[name] = received.get(name, 0) + count
            for reason, count in core.drops.items():
                drops[str(reason)] += count
        servers: tuple[tuple[str, int, float], ...] = ()
        holdings: tuple[tuple[str, int], ...] = ()
        if cluster is not None:
            split = set(cluster.balance.servers)
            servers = tuple((p.name, int(p.name in split), p.age) for p in cluster.peers)
            holdings = tuple(sorted(cluster.holdings.items()))
        self.cores.snapshot = Snapshot(
            tuple(received.items()), tuple(drops.items()), tftp_active,
            store_up=None if store is None else int(not store.store_down),
            store_failed=0 if store is None else store.failed,
            store_refused=0 if store is None else store.refused,
            servers=servers, holdings=holdings,
        )  # fmt: skip
