"""systemd's notify protocol (sd_notify(3)) without libsystemd: one datagram to $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import time


def notify(*fields: str) -> bool:
    """Send e.g. "READY=1" (several fields go in one datagram, one per line); False (and
    nothing sent) when not run under systemd Type=notify."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract namespace socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall("\n".join(fields).encode())
        return True
    except OSError:
        return False


def reloading() -> bool:
    """RELOADING=1 with the MONOTONIC_USEC that systemd 253+ wants (Type=notify-reload),
    so that it can tell this reload from an earlier one; READY=1 ends it."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings when systemd asks for them (WatchdogSec=): half
    of $WATCHDOG_USEC, as sd_watchdog_enabled(3) advises; None when not asked (or when the
    variable is meant for another process, $WATCHDOG_PID)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
