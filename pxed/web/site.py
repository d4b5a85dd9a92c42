"""The HTTP listener of ``[metrics] listen``, on aiohttp and the event loop.

``/metrics`` is rendered on a worker thread (prometheus-client's registry is thread-safe,
and a big scrape must not hold the loop); the status page's snapshots are built on the
loop, where the tables and the timeline live. Everything here is read-only: GET and HEAD.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Final

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pxed.net.site import bound_port, open_site
from pxed.web.status import StatusFeed

log = structlog.get_logger("pxed")

KEEPALIVE = 15.0
"""Seconds between comment lines on an idle event stream, so that proxies and browsers
do not take a quiet stream for a dead one."""

_STATIC: Final = {
    "/": ("index.html", "text/html"),
    "/status.js": ("status.js", "text/javascript"),
    "/status.css": ("status.css", "text/css"),
}
# The page is pxed's own files only: a hostname a client sent is drawn as text, and even a
# mistake there could not load a script from elsewhere.
_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class WebSite:
    """``/metrics``, and with a feed the status page (``/``, ``/api/status``,
    ``/api/stream``)."""

    def __init__(self, registry: CollectorRegistry, feed: StatusFeed | None) -> None:
        self.registry = registry
        self.feed = feed
        self._runner: web.AppRunner | None = None
        self._files = {
            path: (resources.files("pxed.web").joinpath(name).read_bytes(), ctype)
            for path, (name, ctype) in _STATIC.items()
        }
        self._streams: set[asyncio.Task[object]] = set()
        """The handlers of open event streams: ended at close, not left to time out."""

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        if self.feed is not None:
            for path in self._files:
                app.router.add_get(path, self._static)
            app.router.add_get("/api/status", self._status)
            app.router.add_get("/api/stream", self._stream)
        # No access log: a scrape every 15 s is not news; the page's requests neither.
        self._runner = await open_site(app, host, port)

    @property
    def port(self) -> int:
        """The port bound (``listen`` may have asked for 0)."""
        return bound_port(self._runner)

    async def close(self) -> None:
        if self.feed is not None:
            await self.feed.close()
        for task in list(self._streams):  # an open page would hold the shutdown
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(
            None, generate_latest, self.registry
        )
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _static(self, request: web.Request) -> web.Response:
        body, ctype = self._files[request.path]
        return web.Response(body=body, content_type=ctype, charset="utf-8", headers=_HEADERS)

    async def _status(self, request: web.Request) -> web.Response:
        assert self.feed is not None
        return web.Response(text=self.feed.current(), content_type="application/json",
                            headers=_HEADERS)  # fmt: skip

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: one ``data:`` line per changed snapshot."""
        assert self.feed is not None
        response = web.StreamResponse(headers={**_HEADERS, "Content-Type": "text/event-stream"})
        await response.prepare(request)
        queue = self.feed.subscribe()
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        try:
            while True:
                try:
                    text = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except TimeoutError:
                    await response.write(b": idle\n\n")
                    continue
                await response.write(f"data: {text}\n\n".encode())
        except ConnectionResetError:  # the page was closed
            pass
        except Exception:
            log.exception("web.stream_error", client=request.remote)
        finally:
            self.feed.unsubscribe(queue)
            self._streams.discard(task)
        return response
