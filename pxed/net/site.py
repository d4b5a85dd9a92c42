"""An aiohttp application on one TCP address, for pxed's HTTP listeners (the boot server,
the metrics and status site): bound or refused as a whole, its port readable (a test may
ask for 0), no access log (each listener tells what matters as events), no signal handling
(pxed.service owns the signals)."""

from __future__ import annotations

from aiohttp import web


async def open_site(
    app: web.Application, host: str, port: int, *, shutdown_timeout: float = 60.0,
    backlog: int = 128,
) -> web.AppRunner:  # fmt: skip
    """``app`` served on host:port; OSError (nothing left open) when it cannot bind."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=shutdown_timeout)  # fmt: skip
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, backlog=backlog)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


def bound_port(runner: web.AppRunner | None) -> int:
    """The port ``runner`` listens on."""
    assert runner is not None
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("not listening")
