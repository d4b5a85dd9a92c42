"""The lease hook: which lease changes run it, with what, and that it never holds pxed up."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from pxed.config import HooksConfig
from pxed.config.load import build_config
from pxed.errors import ConfigError
from pxed.events import Notice
from pxed.hooks import LeaseHook, lease_job

MAC = "52:54:00:aa:00:01"


def ack(state: str, **extra: object) -> Notice:
    fields = {"mac": MAC, "ip": "198.19.1.10", "state": state, "lease_time": 3600, **extra}
    return Notice("dhcp.ack", logging.INFO, fields)


def test_which_events_run_the_hook_and_with_what() -> None:
    job = lease_job(ack("selecting", hostname="node1", boot_file="pxelinux.0", arch=0))
    assert job is not None and job.args == ("add", MAC, "198.19.1.10", "node1")
    assert job.env["PXED_HOSTNAME"] == "node1" and job.env["PXED_BOOT_FILE"] == "pxelinux.0"
    assert job.env["PXED_LEASE_TIME"] == "3600" and job.env["DNSMASQ_LEASE_LENGTH"] == "3600"
    for state in ("renewing", "rebinding", "init-reboot"):
        renewed = lease_job(ack(state))
        assert renewed is not None and renewed.args == ("old", MAC, "198.19.1.10")
    release = Notice("dhcp.release", logging.INFO, {"mac": MAC, "ip": "198.19.1.10",
                                                    "released": True})  # fmt: skip
    assert lease_job(release) is not None and lease_job(release).args[0] == "del"  # type: ignore[union-attr]
    stray = Notice("dhcp.release", logging.INFO, {"mac": MAC, "ip": "1.2.3.4", "released": False})
    assert lease_job(stray) is None
    assert lease_job(Notice("dhcp.offer", logging.INFO, {})) is None
    expired = lease_job(Notice("dhcp.expired", logging.INFO, {"mac": MAC, "ip": "198.19.1.10",
                                                              "hostname": None}))  # fmt: skip
    assert expired is not None and expired.args == ("del", MAC, "198.19.1.10")
    assert expired.env["PXED_REASON"] == "expired"


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "hook"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.mark.asyncio
async def test_the_program_runs_in_order_and_a_hanging_one_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    body = f'echo "$* $PXED_ACTION" >> {out}\n[ "$1" = old ] && sleep 30\nexit 0\n'
    hook = LeaseHook(script(tmp_path, body), timeout=0.5)
    hook.start()
    hook(ack("selecting"))
    hook(ack("renewing"))  # hangs: killed after the timeout
    hook(Notice("dhcp.release", logging.INFO, {"mac": MAC, "ip": "198.19.1.10", "released": True}))
    await asyncio.wait_for(hook.queue.join(), 10)
    await hook.close()
    assert out.read_text().splitlines() == [
        f"add {MAC} 198.19.1.10 add", f"old {MAC} 198.19.1.10 old", f"del {MAC} 198.19.1.10 del"
    ]
    assert hook.runs == 3 and hook.failures == 1  # the timeout


@pytest.mark.asyncio
async def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    hook = LeaseHook(script(tmp_path, "exit 3\n"), timeout=5, maxsize=2)
    for _ in range(5):  # not started: nothing takes from the queue
        hook(ack("selecting"))
    assert hook.queue.qsize() == 2 and hook.dropped == 3
    hook.start()
    await asyncio.wait_for(hook.queue.join(), 10)
    await hook.close()
    assert hook.failures == 2  # exit status 3, logged


def test_hooks_configuration_is_checked(tmp_path: Path) -> None:
    prog = script(tmp_path, "exit 0\n")
    config = build_config({"dhcp": {"enabled": False}, "tftp": {"enabled": False},
                           "hooks": {"lease": str(prog), "timeout": "30s"}})  # fmt: skip
    assert config.hooks == HooksConfig(lease=prog, timeout=30.0)
    with pytest.raises(ConfigError) as err:
        build_config({"dhcp": {"enabled": False}, "tftp": {"enabled": False},
                      "hooks": {"lease": "hook.sh"}})  # fmt: skip
    assert err.value.problems == ["[hooks] lease: 'hook.sh' is not an absolute path to a program"]
    prog.chmod(0o644)
    with pytest.raises(ConfigError) as err:
        build_config({"dhcp": {"enabled": False}, "tftp": {"enabled": False},
                      "hooks": {"lease": str(prog)}})  # fmt: skip
    assert err.value.problems == [f"[hooks] lease: {prog} is not an executable file"]
