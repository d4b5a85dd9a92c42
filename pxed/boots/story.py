"""One machine's boot as a story: its DHCP exchanges and file transfers, and what they mean.

A ``Boot`` is the record (steps in order, as JSON for `pxed boots`, the status page and the
boot hook); ``diagnose`` reads it and says where it stands and, when it failed, why, in the
words an operator searches for: the file that was not found, the OACK nobody acknowledged,
the chainload loop. Only data and rules here; pxed.boots.timeline builds stories from the
event stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LOOP_FETCHES = 3
"""The same boot program fetched this often in one story is a chainload loop (iPXE handed
itself, or a menu that boots its own loader again)."""

MAX_STEPS = 200
"""Steps kept per story: a machine stuck in a loop must not grow one without bound."""

ARCH_NAMES = {
    0: "BIOS",
    6: "UEFI ia32",
    7: "UEFI x64",
    9: "UEFI x64",
    10: "UEFI arm32",
    11: "UEFI arm64",
    15: "UEFI HTTP ia32",
    16: "UEFI HTTP x64",
    19: "UEFI HTTP arm64",
}


@dataclass(slots=True)
class Step:
    """One DHCP exchange (all messages of one xid) or one file transfer."""

    kind: str
    """"dhcp", "tftp" or "http"."""
    start: float
    end: float | None
    """None while it runs (a transfer the server has started and not finished)."""
    ok: bool | None
    """None while it runs."""
    label: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start": self.start,
            "end": self.end,
            "ok": self.ok,
            "label": self.label,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Step:
        return cls(
            str(data["kind"]),
            float(data["start"]),
            None if data.get("end") is None else float(data["end"]),
            data.get("ok"),
            str(data.get("label", "")),
            dict(data.get("detail") or {}),
        )


@dataclass(slots=True)
class Boot:
    """Everything one machine did from its firmware's first DHCP on."""

    mac: str
    started: float
    updated: float
    ip: str | None = None
    hostname: str | None = None
    arch: int | None = None
    steps: list[Step] = field(default_factory=list)
    outcome: str = "booting"
    """"booting" (still going), "loaded" (its boot files were served and it went quiet,
    or the booted system asked for an address) or "failed"."""
    reason: str | None = None
    """Why it failed, in plain words (None otherwise)."""
    last: str = ""
    """The last thing seen, in words."""
    finished: bool = False
    """Nothing more is expected (quiet for a while, or the booted system got its address);
    the boot hook has run for it."""
    fetched: dict[str, int] = field(default_factory=dict)
    """File name -> complete transfers of it in this story (the chainload-loop rule)."""
    dropped_steps: int = 0
    reported: bool = False
    """The boot hook has run and ``boots.finished`` been published for it: at its end, or
    earlier for a verdict that more steps cannot change (a chainload loop goes on until
    someone stops the machine, and is worth telling at once)."""

    def add(self, step: Step) -> None:
        if len(self.steps) >= MAX_STEPS:
            del self.steps[1]  # keep the first DHCP: where the story began
            self.dropped_steps += 1
        self.steps.append(step)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mac": self.mac,
            "ip": self.ip,
            "hostname": self.hostname,
            "arch": self.arch,
            "started": self.started,
            "updated": self.updated,
            "outcome": self.outcome,
            "reason": self.reason,
            "last": self.last,
            "finished": self.finished,
            "steps": [s.to_json() for s in self.steps],
        }
        if self.dropped_steps:
            out["dropped_steps"] = self.dropped_steps
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Boot:
        boot = cls(
            str(data["mac"]),
            float(data["started"]),
            float(data["updated"]),
            data.get("ip"),
            data.get("hostname"),
            data.get("arch"),
            [Step.from_json(s) for s in data.get("steps", [])],
            str(data.get("outcome", "booting")),
            data.get("reason"),
            str(data.get("last", "")),
            bool(data.get("finished", False)),
            dropped_steps=int(data.get("dropped_steps", 0)),
        )
        for step in boot.steps:
            if step.kind != "dhcp" and step.ok and not step.detail.get("probe"):
                name = str(step.detail.get("file", ""))
                boot.fetched[name] = boot.fetched.get(name, 0) + 1
        return boot


def is_chainload_loop(boot: Boot) -> bool:
    """The same boot loader fetched in full again and again: the verdict is final."""
    return any(n >= LOOP_FETCHES and _is_loader(name) for name, n in boot.fetched.items())


def diagnose(boot: Boot, quiet: bool) -> tuple[str, str | None, str]:
    """(outcome, reason, last) of a story; ``quiet``: nothing was seen from the machine for
    long enough that nothing more is coming from what it was doing."""
    if not boot.steps:
        return "booting", None, "nothing yet"
    step = boot.steps[-1]
    last = step.label
    if is_chainload_loop(boot):
        loop = [n for n, k in boot.fetched.items() if k >= LOOP_FETCHES and _is_loader(n)]
        name = loop[0]
        return (
            "failed",
            f"chainload loop: {name} was fetched {boot.fetched[name]} times by this machine "
            "(the program it loads asks for it again: give iPXE clients a script, "
            "[boot] ipxe, or the menu a different entry)",
            last,
        )
    if step.kind == "dhcp":
        return _after_dhcp(step, quiet, last)
    if step.ok is None:
        return "booting", None, last
    if step.ok:
        files = sum(1 for s in boot.steps if s.kind != "dhcp" and s.ok and not s.detail.get(
            "probe"))  # fmt: skip
        if quiet:
            return "loaded", None, f"{last}; then quiet: {files} file(s) served, handed over"
        return "booting", None, last
    return "failed", _why_file_failed(step), last


def _after_dhcp(step: Step, quiet: bool, last: str) -> tuple[str, str | None, str]:
    d = step.detail
    if d.get("system"):
        return "loaded", None, "the booted system asked for an address: the boot worked"
    if d.get("nak"):
        return "failed", (
            "the server NAKed the client's request "
            f"({d.get('nak')}): it starts over with a DISCOVER"
        ), last
    messages = d.get("messages", [])
    if messages and messages[-1] == "RELEASE":
        return "loaded", None, "the machine released its address: it was up (now going down)"
    if not quiet:
        return "booting", None, last
    if messages and messages[-1] == "OFFER":
        return "failed", (
            "no REQUEST after the offer: the client took another server's offer, or never "
            "heard ours (a second DHCP server on the LAN, or a VLAN or relay in the way)"
        ), last
    boot_file = d.get("boot_file")
    if boot_file:
        return "failed", (
            f"no file request after the {messages[-1] if messages else 'answer'} that named "
            f"{boot_file}: the client could not reach the boot server (a firewall on "
            "port 69, a wrong next-server) or did not like the answer"
        ), last
    return "failed", "the answer named no boot file: nothing to boot ([boot] has no file "\
        "for this client's architecture)", last  # fmt: skip


def not_found(detail: dict[str, Any]) -> bool:
    """A refusal because nothing has that name (TFTP error 1, HTTP 404; ``code`` in stories
    kept before refusals had a cause)."""
    return detail.get("cause") == "not_found" or detail.get("code") == 1


def _why_file_failed(step: Step) -> str:
    d = step.detail
    name = d.get("file", "?")
    if d.get("refused"):
        if not_found(d):
            return f"{name} was not found under the TFTP root"
        return f"{name} was refused: {d.get('reason', 'no reason given')}"
    outcome = d.get("outcome")
    sent = d.get("bytes") or 0
    if outcome == "timeout" and not sent and d.get("options"):
        return (
            f"the client never acknowledged the OACK for {name} (a firewall dropping the "
            "transfer's port, or a firmware that dislikes a negotiated option: try "
            "[tftp] max_blksize = 1468 or windowsize 1)"
        )
    if outcome == "timeout":
        return (
            f"the client stopped acknowledging {name} after {_size(sent)}: "
            "it gave up or went away"
        )
    if outcome == "client-error":
        return f"the client aborted {name}: {d.get('error') or 'no message'}"
    return f"{name} failed ({outcome}): {d.get('error') or 'see the log'}"


def _is_loader(name: str) -> bool:
    """A boot program (a chainload candidate), not a kernel, initrd or config read often."""
    base = name.rsplit("/", 1)[-1].lower()
    return base.endswith((".efi", ".kpxe", ".pxe", ".0", ".lkrn", ".ipxe")) or base in (
        "ipxe",
        "undionly",
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def human_size(n: int) -> str:
    return _size(n)


def arch_name(arch: int | None) -> str:
    if arch is None:
        return "arch ?"
    return f"{ARCH_NAMES.get(arch, 'arch')} ({arch})"
