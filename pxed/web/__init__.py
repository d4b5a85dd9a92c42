"""pxed's HTTP listener (``[metrics] listen``): the Prometheus scrape at ``/metrics`` and
the read-only status page at ``/`` (leases, and the recent boots as a timeline chart,
updated live over server-sent events)."""

from pxed.web.site import WebSite
from pxed.web.status import StatusFeed

__all__ = ["StatusFeed", "WebSite"]
