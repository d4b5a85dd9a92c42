"""The control socket: a UNIX socket in the state directory with a small JSON protocol.

One request a connection, as a JSON object on one line; one answer on one line, the way
Kea's control channel answers (``result`` 0 for success, 1 for an error, 3 for an unknown
command, with ``text`` saying what happened and ``arguments`` carrying the data):

    {"command": "leases", "arguments": {"mac": "52:54:00:12:34:56"}}
    {"result": 0, "text": "1 lease(s)", "arguments": {"leases": [...]}}

Commands: ``status``, ``stats``, ``leases`` (``mac``/``ip`` to filter), ``lease-delete``
(``mac`` or ``ip``: the binding is released, the address free at once), ``boots`` (``mac``),
``boots-follow`` (then a line for every changed story until the client hangs up) and
``reload``. The socket is owner-only (created with mode 0600, whatever the directory's
mode); `pxed leases` and `pxed boots` use it while the daemon runs and read the state
directory when it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("pxed.control")

SOCKET_NAME = "control.sock"
MAX_REQUEST = 64 * 1024

Answer = dict[str, Any]
Handler = Callable[[Mapping[str, Any]], Awaitable[Answer]]
Follower = Callable[[Mapping[str, Any], asyncio.StreamWriter], Awaitable[None]]


def answer(result: int, text: str, **arguments: Any) -> Answer:
    out: Answer = {"result": result, "text": text}
    if arguments:
        out["arguments"] = arguments
    return out


class ControlServer:
    """Serves the commands of ``handlers`` (and the streaming ones of ``followers``)."""

    def __init__(
        self,
        path: Path,
        handlers: Mapping[str, Handler],
        followers: Mapping[str, Follower] | None = None,
    ) -> None:
        self.path = path
        self.handlers = dict(handlers)
        self.followers = dict(followers or {})
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> bool:
        """Listen; False (logged) when another live pxed has the socket or it cannot be
        made: pxed serves on without it."""
        if self.path.exists() or self.path.is_symlink():
            if await _alive(self.path):
                log.warning("control.in_use", path=str(self.path),
                            serving="without a control socket")  # fmt: skip
                return False
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # a stale socket of a pxed that was killed
        old = os.umask(0o177)  # the socket is born owner-only, not chmod-ed after
        try:
            with short_path(self.path) as where:
                self._server = await asyncio.start_unix_server(
                    self._serve, path=where, limit=MAX_REQUEST
                )
        except OSError as exc:
            log.warning("control.failed", path=str(self.path), error=str(exc),
                        serving="without a control socket")  # fmt: skip
            return False
        finally:
            os.umask(old)
        return True

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            await self._one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if task is not None:
                self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10.0)
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("command"), str):
                raise ValueError("not an object with a command")
            arguments = request.get("arguments") or {}
            if not isinstance(arguments, dict):
                raise ValueError("arguments is not an object")
        except (ValueError, TimeoutError, asyncio.LimitOverrunError) as exc:
            await _send(writer, answer(1, f"bad request: {exc}"))
            return
        command = request["command"]
        follower = self.followers.get(command)
        if follower is not None:
            await follower(arguments, writer)
            return
        handler = self.handlers.get(command)
        if handler is None:
            known = ", ".join(sorted([*self.handlers, *self.followers]))
            await _send(writer, answer(3, f"unknown command {command!r} (known: {known})"))
            return
        try:
            reply = await handler(arguments)
        except Exception as exc:  # a bug in one command must not take the socket down
            log.exception("control.error", command=command)
            reply = answer(1, f"internal error: {exc!r}")
        await _send(writer, reply)


async def _send(writer: asyncio.StreamWriter, message: Answer) -> None:
    writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    await writer.drain()


async def send_line(writer: asyncio.StreamWriter, message: Answer) -> None:
    """One more line of a streaming answer (``boots-follow``)."""
    await _send(writer, message)


@contextlib.contextmanager
def short_path(path: Path) -> Iterator[str]:
    """A name for ``path`` that fits a UNIX socket address (108 bytes): the path itself, or,
    for a state directory deep in a tree, the socket's name under /proc/self/fd/N of its
    directory (the kernel resolves it there for bind and connect alike)."""
    if len(os.fsencode(path)) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


async def _alive(path: Path) -> bool:
    try:
        with short_path(path) as where:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(where), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


# -- the client side (the CLI) -------------------------------------------------------------


class NotRunning(Exception):
    """No daemon answers on the socket."""


def request(path: Path, command: str, timeout: float = 10.0, **arguments: Any) -> Answer:
    """Send one command and return its answer (blocking; the CLI's side)."""
    with _connect(path, timeout) as sock:
        sock.sendall(_encode(command, arguments))
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    try:
        reply = json.loads(data)
    except ValueError as exc:
        raise NotRunning(f"{path}: no answer ({exc})") from None
    if not isinstance(reply, dict):
        raise NotRunning(f"{path}: not an answer: {data[:80]!r}")
    return reply


def stream(path: Path, command: str, **arguments: Any) -> Any:
    """The lines of a streaming command, as they come (a generator; blocking)."""
    sock = _connect(path, None)
    with sock:
        sock.sendall(_encode(command, arguments))
        with sock.makefile("rb") as f:
            for line in f:
                yield json.loads(line)


def _encode(command: str, arguments: Mapping[str, Any]) -> bytes:
    return json.dumps({"command": command, "arguments": dict(arguments)}).encode() + b"\n"


def _connect(path: Path, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with short_path(path) as where:
            sock.connect(where)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise NotRunning(f"{path}: {exc.strerror}") from None
    except OSError:
        sock.close()
        raise
    return sock
