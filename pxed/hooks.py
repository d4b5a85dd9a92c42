"""Hooks: a program run on each lease change, as dnsmasq's dhcp-script is, and on each boot.

The hook is a consumer of the event stream. An ACK makes ``add`` (a new binding: the client
was selecting our offer) or ``old`` (a renewal, a rebind, a reboot with its old address),
and a release or an expiry makes ``del`` (``PXED_REASON`` says which). Arguments are
dnsmasq's, ``ACTION MAC IP [HOSTNAME]``, so an existing dhcp-script runs unchanged, and the
details are in PXED_* environment variables.

The consumer only queues (a bounded queue; a full one drops and counts). One task runs the
programs one at a time, in order, each with a timeout after which it is killed. A hook that
fails or hangs is logged; it never delays a reply and never stops pxed.

The boot hook (``[hooks] boot``) runs the same way once a machine's boot story is finished
(pxed.boots.timeline): ``boot OUTCOME MAC IP`` with the story's details in PXED_BOOT_*
variables and the whole story as JSON in ``PXED_BOOT_JSON``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from pxed.events import Event

log = structlog.get_logger("pxed.hooks")

QUEUE = 256


@dataclass(frozen=True, slots=True)
class Job:
    action: str
    args: tuple[str, ...]
    env: dict[str, str]


def lease_job(event: Event) -> Job | None:
    """What the lease hook is run with for this event; None when it is no lease change."""
    if event.kind not in ("dhcp.ack", "dhcp.release", "dhcp.expired"):
        return None
    fields = event.fields()
    if event.kind == "dhcp.ack":
        action = "add" if fields.get("state") == "selecting" else "old"
    elif event.kind == "dhcp.release" and not fields.get("released"):
        return None  # nothing was bound: nothing changed
    else:
        action = "del"
    mac, ip = str(fields.get("mac", "")), str(fields.get("ip", ""))
    hostname = fields.get("hostname")
    args = (action, mac, ip) + ((str(hostname),) if hostname else ())
    env = {"PXED_ACTION": action, "PXED_MAC": mac, "PXED_IP": ip}
    if action == "del":
        env["PXED_REASON"] = "expired" if event.kind == "dhcp.expired" else "released"
    for key, name in (
        ("hostname", "PXED_HOSTNAME"),
        ("lease_time", "PXED_LEASE_TIME"),
        ("boot_file", "PXED_BOOT_FILE"),
        ("boot_reason", "PXED_BOOT_REASON"),
        ("arch", "PXED_CLIENT_ARCH"),
        ("xid", "PXED_XID"),
        ("giaddr", "PXED_RELAY_ADDRESS"),
    ):
        value = fields.get(key)
        if value is not None:
            env[name] = str(value)
    if "lease_time" in fields:
        env["DNSMASQ_LEASE_LENGTH"] = str(fields["lease_time"])  # dnsmasq's name for it
    return Job(action, args, env)


class Hook:
    """A program run for each job submitted, one at a time, off the event loop's path."""

    def __init__(self, program: Path, timeout: float, maxsize: int = QUEUE) -> None:
        self.program = program
        self.timeout = timeout
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize)
        self.runs = 0
        self.failures = 0
        self.dropped = 0
        """Lease changes not handed to the program: the queue was full (it is too slow)."""
        self._task: asyncio.Task[None] | None = None

    def submit(self, job: Job) -> None:
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("hooks.dropped", program=str(self.program), dropped=self.dropped)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self, grace: float = 2.0) -> None:
        """Let queued runs finish for ``grace`` seconds, then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), grace)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            job = await self.queue.get()
            try:
                await self._one(job)
            except Exception:  # a hook must never take pxed down
                self.failures += 1
                log.exception("hooks.error", program=str(self.program), action=job.action)
            finally:
                self.queue.task_done()

    async def _one(self, job: Job) -> None:
        self.runs += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                str(self.program), *job.args,
                env={**os.environ, **job.env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # a timeout kills what it started too
            )  # fmt: skip
        except OSError as exc:
            self.failures += 1
            log.warning("hooks.failed", program=str(self.program), action=job.action,
                        error=str(exc))  # fmt: skip
            return
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            self.failures += 1
            log.warning("hooks.timeout", program=str(self.program), action=job.action,
                        mac=job.env.get("PXED_MAC"), seconds=self.timeout)  # fmt: skip
            return
        if proc.returncode != 0:
            self.failures += 1
            log.warning(
                "hooks.failed", program=str(self.program), action=job.action,
                mac=job.env.get("PXED_MAC"), status=proc.returncode,
                output=out.decode(errors="replace")[-500:].strip(),
            )  # fmt: skip


class LeaseHook(Hook):
    """The ``[hooks] lease`` program, fed from the event stream."""

    def __call__(self, event: Event) -> None:
        job = lease_job(event)
        if job is not None:
            self.submit(job)


def boot_job(story: dict[str, Any]) -> Job:
    """What the boot hook is run with for a finished story (Boot.to_json())."""
    outcome = str(story.get("outcome"))
    mac, ip = str(story.get("mac", "")), str(story.get("ip") or "")
    files = [
        str(s["detail"].get("file"))
        for s in story.get("steps", [])
        if s.get("kind") != "dhcp" and s.get("ok") and not s["detail"].get("probe")
    ]
    env = {
        "PXED_ACTION": "boot",
        "PXED_MAC": mac,
        "PXED_IP": ip,
        "PXED_BOOT_OUTCOME": outcome,
        "PXED_BOOT_REASON": str(story.get("reason") or ""),
        "PXED_BOOT_LAST": str(story.get("last") or ""),
        "PXED_BOOT_FILES": " ".join(files),
        "PXED_BOOT_STARTED": str(story.get("started")),
        "PXED_BOOT_UPDATED": str(story.get("updated")),
        "PXED_BOOT_JSON": json.dumps(story, separators=(",", ":")),
    }
    if story.get("arch") is not None:
        env["PXED_CLIENT_ARCH"] = str(story["arch"])
    if story.get("hostname"):
        env["PXED_HOSTNAME"] = str(story["hostname"])
    return Job("boot", ("boot", outcome, mac, ip), env)
