"""The HTTP boot server (``[http] listen``): the boot root over HTTP, on aiohttp.

iPXE, UEFI HTTP boot and installers fetch kernels, initrds and ISOs far faster over TCP than
over lock-step TFTP. The same :class:`~pxed.files.FileStore` answers both transports, so a
name resolves, and is refused, the same way: a refusal is 404 (nothing by that name) or 403
(not served), never a redirect (UEFI HTTP boot fails on one). GET and HEAD only; HTTP/1.1
connections persist (EDK2 sends HEAD then GET on one connection); one byte range
(``Range: bytes=A-B``, ``A-``, ``-N``) is honoured with 206, several are answered with the
whole file; the body goes with ``sendfile`` from the checked descriptor, never read into
Python. Each request ends in one event (``http.done``, ``http.failed``, ``http.refused``,
and ``http.declined`` for a HEAD, the size probe TFTP clients make with tsize: client, MAC
when known, file, bytes, size, seconds, outcome), as a TFTP transfer does, so the log, the
metrics and the boot timeline see HTTP files as they see TFTP ones.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import web

from pxed.events import Event, Notice
from pxed.files import FileRefused, FileStore, Refusal, Rendered, canonical
from pxed.net.site import bound_port, open_site

CONTENT_TYPE = "application/octet-stream"
"""Every file is bytes to a firmware: no type guessing, nothing for a client to render."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int
    """Last byte, inclusive (as Content-Range says it)."""

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class Unsatisfiable(ValueError):
    """A range that starts past the end of the file: 416."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range of a ``Range`` header over a file of ``size`` bytes; None for the whole
    file (no header, a unit other than bytes, several ranges, or one that does not parse:
    RFC 9110 lets a server ignore Range); :class:`Unsatisfiable` when it cannot be served."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0:
            raise Unsatisfiable(spec)
        return ByteRange(max(size - n, 0), size - 1) if size else None
    start = int(first)
    if start >= size:
        raise Unsatisfiable(spec)
    end = min(int(last), size - 1) if last.isdigit() else size - 1
    if last.isdigit() and int(last) < start:
        return None  # invalid: ignored, the whole file
    return ByteRange(start, end)


def request_name(raw_path: str) -> str:
    """The file name a request-target asks for: the path without its query, percent-escapes
    decoded (so ``%2e%2e`` is ``..`` and ``%00`` a NUL, both refused by the store as they
    are over TFTP). An absolute-form target (``GET http://host/path``, RFC 9112 3.2.2)
    names its path."""
    if not raw_path.startswith("/") and "://" in raw_path:
        raw_path = urlsplit(raw_path).path or "/"
    path = raw_path.split("?", 1)[0].split("#", 1)[0]
    return unquote(path, errors="surrogateescape")


class HttpBootServer:
    """The boot root over HTTP: ``start(host, port)``, then files for every client."""

    def __init__(
        self,
        files: Callable[[], FileStore],
        publish: Callable[[Iterable[Event]], None],
        client_dir: Callable[[str], str | None],
        mac_for: Callable[[str], str | None],
        grace: float = 5.0,
        rendered: Rendered | None = None,
    ) -> None:
        """``files``: the store now (a reload may bring a new root); ``publish``: where the
        per-file events go; ``client_dir``: the per-client directory for an address;
        ``mac_for``: the MAC behind an address (leases, ARP), for the events; ``grace``:
        seconds running responses get at close (``[server] stop_grace``); ``rendered``:
        the files made per machine (profiles), asked before the root."""
        self._rendered = rendered
        self.grace = grace
        self._files = files
        self._publish = publish
        self._client_dir = client_dir
        self._mac_for = mac_for
        self._runner: web.AppRunner | None = None
        self.active = 0
        """Responses being sent."""

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_route("*", "/{name:.*}", self._serve)
        # Each request is an event of its own (http.done ...): no access log besides.
        self._runner = await open_site(app, host, port, shutdown_timeout=self.grace,
                                       backlog=1024)  # fmt: skip

    @property
    def port(self) -> int:
        return bound_port(self._runner)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- one request ---------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        ip = str(peer[0]) if peer else "?"
        client = f"{ip}:{peer[1]}" if peer else "?"
        name = request_name(request.raw_path)
        base: dict[str, Any] = {"client": client, "mac": self._mac_for(ip), "file": name}
        if request.method not in ("GET", "HEAD"):
            self._refused(base, 405, "bad_request", f"method {request.method} not served")
            return web.Response(status=405, headers={"Allow": "GET, HEAD"})
        try:
            data = None
            if self._rendered is not None:
                sock = request.transport.get_extra_info("sockname") if request.transport else None
                data = self._rendered(name, ip, str(sock[0]) if sock else None)
            if data is not None:
                base["file"] = canonical(name)
                return await self._send(request, data, len(data), base)
            fd, size, served = self._files().open_fd(name, under=self._client_dir(ip))
        except FileRefused as exc:
            status = 404 if exc.kind == Refusal.NOT_FOUND else 403
            self._refused(base, status, str(exc.kind), exc.reason)
            return web.Response(status=status, text=f"{exc.reason}\n")
        except (OSError, ValueError) as exc:  # a root that went away; a bad client dir
            self._refused(base, 403, "forbidden", str(exc))
            return web.Response(status=403, text="not served\n")
        with os.fdopen(fd, "rb") as fobj:
            base["file"] = served
            return await self._send(request, fobj, size, base)

    async def _send(
        self, request: web.Request, body: Any, size: int, base: dict[str, Any]
    ) -> web.StreamResponse:
        """``body``: an open file (sent with sendfile) or the bytes of a rendered one."""
        try:
            wanted = parse_range(request.headers.get("Range"), size)
        except Unsatisfiable:
            self._refused(base, 416, "bad_request", "range not satisfiable")
            return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        offset, count = (wanted.start, wanted.length) if wanted else (0, size)
        response = web.StreamResponse(status=206 if wanted else 200)
        response.content_type = CONTENT_TYPE
        response.content_length = count
        response.headers["Accept-Ranges"] = "bytes"
        if wanted:
            response.headers["Content-Range"] = f"bytes {wanted.start}-{wanted.end}/{size}"
        fields = {**base, "size": size, "status": response.status, "method": request.method}
        if wanted:
            fields["range"] = f"{wanted.start}-{wanted.end}"
        started = time.monotonic()
        self.active += 1
        try:
            await response.prepare(request)
            if request.method == "GET" and count:
                if isinstance(body, bytes):
                    await response.write(body[offset : offset + count])
                else:
                    transport = request.transport
                    if transport is None:
                        raise ConnectionResetError("connection lost")
                    await asyncio.get_running_loop().sendfile(transport, body, offset, count)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError) as exc:  # the client went away
            self._end("http.failed", logging.WARNING, fields, started,
                      sent=0, outcome="aborted", error=type(exc).__name__)  # fmt: skip
            if isinstance(exc, asyncio.CancelledError):
                raise
            return response
        finally:
            self.active -= 1
        if request.method == "HEAD":  # a size probe (EDK2 asks before its GET), as TFTP's
            self._end("http.declined", logging.INFO, fields, started, sent=0, outcome="head")
        else:
            self._end("http.done", logging.INFO, fields, started, sent=count, outcome="ok")
        return response

    def _end(self, kind: str, level: int, fields: dict[str, Any], started: float, *,
             sent: int, outcome: str, error: str | None = None) -> None:  # fmt: skip
        seconds = round(time.monotonic() - started, 6)
        data = {**fields, "bytes": sent, "seconds": seconds, "outcome": outcome}
        if error is not None:
            data["error"] = error
        self._publish([Notice(kind, level, data)])

    def _refused(self, base: dict[str, Any], status: int, cause: str, reason: str) -> None:
        data = {**base, "status": status, "cause": cause, "reason": reason}
        self._publish([Notice("http.refused", logging.INFO, data)])
