"""The boot timeline: a consumer of the event stream that tells each machine's boot as a story.

The consumer itself only appends the event to a list (it runs on the reply path's loop
iteration, after the replies are out); ``fold()``, called a few times a second by the
server, turns the batch into steps. A DHCP decision for a client that is no network boot
(no PXE vendor class, architecture or iPXE user class) costs one look at the packet and is
dropped, unless that machine has a story open: then it is the booted system asking for its
address, the best sign a boot worked.

A story starts with a PXE client's DISCOVER (or whatever DHCP message comes first from a
machine with no open story), goes on through iPXE's DHCP and every file, and is finished
once the machine has been quiet for ``quiet`` seconds or the booted system got its
address. Finished stories are appended to ``boots.jsonl`` in the state directory (kept
across restarts, compacted to the last ``keep``) and handed to ``on_finished`` (the server publishes
``boots.finished`` and runs the boot hook).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from pxed.boots.story import Boot, Step, diagnose, human_size, is_chainload_loop, not_found
from pxed.dhcp.events import DhcpDecision
from pxed.events import Event, Notice

log = structlog.get_logger("pxed.boots")

BOOTS_FILE = "boots.jsonl"
RUNNING_MAX = 3600.0
"""Seconds a story with a transfer still running waits before it is finished all the same."""
MAX_RUNNING_SCAN = 20
"""The last steps looked at for a running transfer (a client runs a few at a time)."""
QUIET = 60.0
"""Seconds without a word from a machine after which its story is finished."""
_DHCP_KINDS = frozenset({"dhcp.offer", "dhcp.ack", "dhcp.inform", "proxy.offer", "proxy.ack"})
_TRANSFER_KINDS = frozenset(f"{proto}.{what}" for proto in ("tftp", "http")
                            for what in ("start", "done", "failed", "declined", "refused"))
"""A file's transfer, over TFTP or HTTP: the same fields (client, file, bytes, size, seconds,
outcome; a refusal's reason and cause), the same step."""
_OTHER_KINDS = _TRANSFER_KINDS | {"dhcp.nak", "dhcp.release"}
"""What a story is made of besides the DHCP decisions."""
_PENDING_MAX = 100_000
"""Events waiting for fold(): beyond this (a flood between two folds) they are dropped."""


def is_network_boot(decision: DhcpDecision) -> bool:
    p = decision.packet
    if p.client_arch or p.is_ipxe:
        return True
    vendor = p.vendor_class
    return vendor is not None and vendor.startswith((b"PXEClient", b"HTTPClient"))


class Timeline:
    """Recent boots by MAC, from the events; the consumer is the instance itself."""

    def __init__(
        self,
        path: Path | None,
        keep: int = 500,
        quiet: float = QUIET,
        on_finished: Callable[[Boot], None] | None = None,
    ) -> None:
        self.path = path
        self.keep = keep
        self.quiet = quiet
        self.on_finished = on_finished
        self.boots: OrderedDict[str, Boot] = OrderedDict()
        """MAC -> its latest story, least recently changed first."""
        self.open: dict[str, Boot] = {}
        """MAC -> the story still going (also in ``boots``)."""
        self.by_ip: dict[str, str] = {}
        """Client address -> MAC, for transfers whose MAC the server could not tell."""
        self.version = 0
        """Bumped on every change (the status page republishes when it moved)."""
        self.dropped = 0
        self.listeners: list[Callable[[Boot], None]] = []
        """Called with each story that changed, after a fold (`pxed boots --follow`)."""
        self._pending: list[Event] = []
        self._booting: set[str] = set()
        """MACs of the network boots in ``_pending`` (not open until the fold)."""
        self._changed: dict[str, Boot] = {}
        self._written = 0

    # -- the consumer (hot path: as little as possible) -----------------------------------

    def __call__(self, event: Event) -> None:
        kind = event.kind
        if kind in _DHCP_KINDS:
            if not isinstance(event, DhcpDecision):
                return  # an embedder's own event of that name: nothing to tell a story from
            mac = event.packet.mac
            if is_network_boot(event):
                self._booting.add(mac)
            elif mac not in self.open and mac not in self._booting:
                return
        elif kind not in _OTHER_KINDS:
            return
        if len(self._pending) >= _PENDING_MAX:
            self.dropped += 1
            return
        self._pending.append(event)

    # -- folding (a few times a second, on the loop) --------------------------------------

    def fold(self, now: float | None = None) -> None:
        """Turn the events since the last fold into steps; finish quiet stories."""
        now = time.time() if now is None else now
        pending, self._pending = self._pending, []
        self._booting.clear()
        for event in pending:
            try:
                self._take(event, now)
            except Exception:  # a story is not worth the daemon
                log.exception("boots.fold_error", event_kind=event.kind)
        for mac, boot in list(self.open.items()):
            if self._quiet(boot, now):
                self._finish(boot, now)
            elif mac in self._changed:
                boot.outcome, boot.reason, boot.last = diagnose(boot, quiet=False)
                if not boot.reported and is_chainload_loop(boot):
                    self._report(boot)  # it never goes quiet by itself: tell it now
        if self._changed:
            self.version += 1
            changed, self._changed = list(self._changed.values()), {}
            for listener in list(self.listeners):
                for boot in changed:
                    listener(boot)

    def _take(self, event: Event, now: float) -> None:
        kind = event.kind
        if isinstance(event, DhcpDecision):
            self._dhcp(event, now)
            return
        if not isinstance(event, Notice):
            return
        data = event.data
        if kind == "dhcp.nak" or kind == "dhcp.release":
            boot = self.open.get(str(data.get("mac")))
            if boot is not None:
                self._dhcp_notice(boot, kind, data, now)
            return
        if kind in _TRANSFER_KINDS:
            self._transfer(kind, data, now)

    def _dhcp(self, event: DhcpDecision, now: float) -> None:
        p = event.packet
        mac = p.mac
        boot = self.open.get(mac)
        pxe = is_network_boot(event)
        if boot is None:
            if not pxe:
                return
            boot = self._new(mac, now)
        ip = str(event.ip) if int(event.ip) else None
        if ip is not None:
            boot.ip = ip
            self.by_ip[ip] = mac
        # The ACK's hostname is the lease's (a [[dhcp.host]] name before the client's own).
        hostname = event.extra.get("hostname") or p.hostname
        if hostname:
            boot.hostname = str(hostname)
        arch = p.client_arch[0] if p.client_arch else None
        if boot.arch is None and arch is not None:
            boot.arch = arch
        message = event.kind.split(".", 1)[1].upper()
        xid = f"0x{p.xid:08x}"
        previous = boot.steps[-1] if boot.steps else None
        if (
            previous is not None
            and previous.kind == "dhcp"
            and previous.detail.get("xid") == xid
        ):
            step = previous
            step.end = now
            step.detail["messages"].append(message)
        else:
            step = Step("dhcp", now, now, True, "", {"xid": xid, "messages": [message]})
            boot.add(step)
        d = step.detail
        d["ip"] = ip
        if arch is not None:
            d["arch"] = arch
        if p.is_ipxe:
            d["ipxe"] = True
        if p.user_class:
            d["user_class"] = p.user_class.decode("ascii", "replace")
        if p.vendor_class:
            d["vendor_class"] = p.vendor_class.decode("ascii", "replace")
        if event.boot is not None:
            d["boot_file"] = event.boot.file
            d["rule"] = event.boot.reason
            if event.boot.profile is not None:
                d["profile"] = event.boot.profile
        if event.kind.startswith("proxy."):
            d["proxy"] = True
        if not pxe:
            d["system"] = True  # the booted system's own DHCP client
        step.label = _dhcp_label(d)
        self._touch(boot, now)
        if d.get("system") and message == "ACK":
            boot.outcome, boot.reason, boot.last = diagnose(boot, quiet=False)
            self._finish(boot, now)

    def _dhcp_notice(self, boot: Boot, kind: str, data: Any, now: float) -> None:
        if kind == "dhcp.nak":
            step = Step("dhcp", now, now, False, f"DHCP NAK: {data.get('reason')}",
                        {"xid": data.get("xid"), "messages": ["NAK"],
                         "nak": data.get("reason")})  # fmt: skip
        else:
            step = Step("dhcp", now, now, True, f"DHCP RELEASE {data.get('ip')}",
                        {"messages": ["RELEASE"], "ip": data.get("ip")})  # fmt: skip
        boot.add(step)
        self._touch(boot, now)

    def _transfer(self, kind: str, data: Any, now: float) -> None:
        proto, _, what = kind.partition(".")
        client = str(data.get("client", ""))
        ip = client.rpartition(":")[0]
        mac = data.get("mac") or self.by_ip.get(ip)
        if not mac:
            mac = f"ip:{ip}"  # no DHCP seen and no neighbour entry: the address stands in
        mac = str(mac)
        boot = self.open.get(mac)
        if boot is None:
            boot = self._new(mac, now)
        if boot.ip is None and ip:  # ProxyDHCP: the router gave the address, TFTP shows it
            boot.ip = ip
        name = str(data.get("file", "?"))
        if what == "start":
            boot.add(Step(proto, now, None, None, f"{name} ...",
                          {"file": name, "client": client}))  # fmt: skip
            self._touch(boot, now)
            return
        step = _running(boot, client, name)
        seconds = float(data.get("seconds") or 0.0)
        if step is None:
            step = Step(proto, now - seconds, now, None, "", {"file": name, "client": client})
            boot.add(step)
        step.end = now
        d = step.detail
        for key in ("bytes", "size", "seconds", "retransmissions", "outcome", "options",
                    "blksize", "windowsize", "error", "reason", "code", "cause", "status",
                    "range"):  # fmt: skip
            if data.get(key) is not None:
                d[key] = data[key]
        if what == "done":
            step.ok = True
            sent = int(data.get("bytes") or 0)
            speed = sent / seconds if seconds > 0 else 0.0
            d["speed"] = round(speed)
            retrans = int(data.get("retransmissions") or 0)
            rate = human_size(int(speed))
            step.label = f"{name} {human_size(sent)} in {seconds:.2f} s ({rate}/s)"
            if retrans:
                step.label += f", {retrans} retransmission(s)"
            boot.fetched[name] = boot.fetched.get(name, 0) + 1
            for earlier in boot.steps:  # names a loader probed for before it found this one
                if earlier.detail.get("refused") and not_found(earlier.detail):
                    earlier.ok = True
                    earlier.detail["probe"] = True
        elif what == "declined":
            step.ok = True
            d["probe"] = True
            step.label = f"{name}: size asked ({human_size(int(data.get('size') or 0))})"
        elif what == "refused":
            step.ok = False
            d["refused"] = True
            why = "not found" if not_found(d) else f"refused: {data.get('reason')}"
            step.label = f"{name} {why}"
        else:
            step.ok = False
            sent = int(data.get("bytes") or 0)
            step.label = f"{name} failed: {data.get('outcome')} after {human_size(sent)}"
        self._touch(boot, now)

    # -- stories --------------------------------------------------------------------------

    def _new(self, mac: str, now: float) -> Boot:
        boot = Boot(mac, now, now)
        old = self.boots.pop(mac, None)
        if old is not None and not old.finished:
            self._finish(old, now)
        self.boots[mac] = boot
        self.open[mac] = boot
        while len(self.boots) > max(self.keep, 1):
            gone_mac, _ = self.boots.popitem(last=False)
            self.open.pop(gone_mac, None)
        return boot

    def _quiet(self, boot: Boot, now: float) -> bool:
        """Nothing more is coming: quiet for ``quiet`` seconds with no transfer running.
        A running transfer says nothing until it ends (a 500 MB ISO over TFTP takes minutes),
        and it always ends with an event; RUNNING_MAX covers an end this timeline missed."""
        idle = now - boot.updated
        if idle < self.quiet:
            return False
        running = any(step.end is None for step in boot.steps[-MAX_RUNNING_SCAN:])
        return not running or idle >= max(self.quiet, RUNNING_MAX)

    def _touch(self, boot: Boot, now: float) -> None:
        boot.updated = now
        self.boots.move_to_end(boot.mac)
        self._changed[boot.mac] = boot

    def _finish(self, boot: Boot, now: float) -> None:
        if not boot.finished:
            quiet = now - boot.updated >= self.quiet
            for step in boot.steps:
                if step.end is None:  # a transfer the stop cut short, or whose end was missed
                    step.end, step.ok = boot.updated, False
            if not (boot.steps and boot.steps[-1].detail.get("system")):
                boot.outcome, boot.reason, boot.last = diagnose(boot, quiet=quiet)
            boot.finished = True
        self.open.pop(boot.mac, None)
        if self.by_ip.get(boot.ip or "") == boot.mac:
            del self.by_ip[boot.ip or ""]
        self._changed[boot.mac] = boot
        self._append(boot)
        if not boot.reported:
            self._report(boot)

    def _report(self, boot: Boot) -> None:
        """The boot hook and ``boots.finished``, once a story."""
        boot.reported = True
        if self.on_finished is not None:
            try:
                self.on_finished(boot)
            except Exception:
                log.exception("boots.hook_error", mac=boot.mac)

    # -- reading --------------------------------------------------------------------------

    def recent(self, mac: str | None = None) -> list[Boot]:
        """The stories, oldest first; only that machine's when ``mac`` is given."""
        if mac is None:
            return list(self.boots.values())
        history = [b for b in self.history() if b.mac == mac and b is not self.boots.get(mac)]
        current = self.boots.get(mac)
        return history + ([current] if current is not None else [])

    def history(self) -> list[Boot]:
        """Finished stories from the file (earlier runs and this one), oldest first."""
        return list(read_boots(self.path)) if self.path is not None else []

    def snapshot(self) -> list[dict[str, Any]]:
        return [b.to_json() for b in self.boots.values()]

    # -- the file -------------------------------------------------------------------------

    def load(self) -> None:
        """The last ``keep`` stories of earlier runs, so that `pxed boots` and the page show
        them after a restart (finished: whatever a story was doing, the restart ended it)."""
        if self.path is None:
            return
        boots: OrderedDict[str, Boot] = OrderedDict()
        count = 0
        for boot in read_boots(self.path):
            count += 1
            boots.pop(boot.mac, None)
            boots[boot.mac] = boot
        while len(boots) > self.keep:
            boots.popitem(last=False)
        self.boots = boots
        self._written = count
        if count > 2 * self.keep:
            self._compact()

    def close(self) -> None:
        """Finish every open story (pxed stops) and write them."""
        now = time.time()
        self.fold(now)
        for boot in list(self.open.values()):
            self._finish(boot, now)

    def _append(self, boot: Boot) -> None:
        if self.path is None:
            return
        try:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(boot.to_json(), separators=(",", ":")) + "\n")
            self._written += 1
            if self._written > 2 * self.keep:
                self._compact()
        except OSError as exc:
            log.warning("boots.write_failed", path=str(self.path), error=str(exc))

    def _compact(self) -> None:
        """Keep the file to the last ``keep`` stories (written aside, then renamed)."""
        assert self.path is not None
        stories = list(read_boots(self.path))[-self.keep :]
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for boot in stories:
                f.write(json.dumps(boot.to_json(), separators=(",", ":")) + "\n")
        tmp.replace(self.path)
        self._written = len(stories)


def read_boots(path: Path) -> Iterator[Boot]:
    """The stories in a boots file, oldest first; a torn last line (a crash) is skipped."""
    try:
        f = path.open(encoding="utf-8")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            try:
                yield Boot.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue


def _running(boot: Boot, client: str, name: str) -> Step | None:
    for step in reversed(boot.steps):
        if (
            step.kind == "tftp"
            and step.end is None
            and step.detail.get("client") == client
            and step.detail.get("file") == name
        ):
            return step
    return None


def _dhcp_label(d: dict[str, Any]) -> str:
    who = "booted system" if d.get("system") else ("iPXE" if d.get("ipxe") else "firmware")
    messages = "+".join(d.get("messages", []))
    text = f"DHCP ({who}) {messages}"
    if d.get("ip"):
        text += f" {d['ip']}"
    if d.get("boot_file"):
        text += f" -> {d['boot_file']} (rule: {d.get('rule')})"
    return text
