"""The status page's feed and the HTTP listener, on a loopback port the test opens."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from pxed.web import StatusFeed, WebSite
from pxed.web.status import latest_boots


def test_a_snapshot_is_sent_once_and_a_slow_page_gets_the_newest() -> None:
    async def main() -> None:
        state: dict[str, Any] = {"leases": [], "n": 0}
        feed = StatusFeed(lambda: dict(state), interval=3600)
        queue = feed.subscribe()
        first = json.loads(queue.get_nowait())
        assert first["n"] == 0 and "now" in first
        feed.publish(dict(state))  # unchanged: not sent again
        assert queue.empty()
        for n in (1, 2, 3):  # the page reads nothing meanwhile
            state["n"] = n
            feed.publish(dict(state))
        assert queue.qsize() == 1 and json.loads(queue.get_nowait())["n"] == 3
        feed.unsubscribe(queue)
        await feed.close()

    asyncio.run(main())


def test_latest_boots_keeps_the_most_recently_active_in_start_order() -> None:
    stories = [{"mac": f"m{i}", "started": float(i), "updated": float(100 - i)} for i in range(5)]
    assert [s["mac"] for s in latest_boots(stories, limit=2)] == ["m0", "m1"]


def test_the_site_serves_metrics_the_page_and_a_stream() -> None:
    async def main() -> None:
        registry = CollectorRegistry()
        Counter("pxed_test", "a counter", registry=registry).inc(3)
        state = {"leases": [{"mac": "02:00:00:00:00:01"}], "boots": []}
        feed = StatusFeed(lambda: dict(state), interval=0.05)
        site = WebSite(registry, feed)
        await site.start("127.0.0.1", 0)
        base = f"http://127.0.0.1:{site.port}"
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(base + "/metrics") as r:
                    assert r.status == 200 and "pxed_test_total 3.0" in await r.text()
                async with http.get(base + "/") as r:
                    assert r.status == 200 and r.content_type == "text/html"
                    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
                    assert 'src="status.js"' in await r.text()
                async with http.head(base + "/status.js") as r:
                    assert r.status == 200 and r.content_type == "text/javascript"
                async with http.get(base + "/nothing") as r:
                    assert r.status == 404
                async with http.post(base + "/api/status") as r:
                    assert r.status == 405
                async with http.get(base + "/api/status") as r:
                    assert (await r.json())["leases"][0]["mac"] == "02:00:00:00:00:01"
                async with http.get(base + "/api/stream") as r:
                    assert r.content_type == "text/event-stream"
                    first = await r.content.readline()
                    assert json.loads(first.removeprefix(b"data: "))["boots"] == []
                    await r.content.readline()  # the blank line ending the event
                    state["boots"] = [{"mac": "02:00:00:00:00:01"}]
                    changed = await asyncio.wait_for(r.content.readline(), 5)
                    assert json.loads(changed.removeprefix(b"data: "))["boots"], changed
        finally:
            await site.close()

    asyncio.run(main())


def test_without_a_feed_only_metrics_are_served() -> None:
    async def main() -> None:
        site = WebSite(CollectorRegistry(), None)
        await site.start("127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{site.port}/"
            ) as r:
                assert r.status == 404
        finally:
            await site.close()

    asyncio.run(main())


def test_a_listener_that_cannot_bind_is_one_line_naming_its_table() -> None:
    import pytest

    from pxed.app import _listen
    from pxed.errors import PxedError

    async def taken(host: str, port: int) -> None:
        raise OSError(98, "Address already in use")

    with pytest.raises(PxedError) as info:
        asyncio.run(_listen("[http]", taken, ("0.0.0.0", 8080)))
    assert str(info.value) == "[http] listen 0.0.0.0:8080: Address already in use"
