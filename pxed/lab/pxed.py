"""pxed itself as a lab process: a configuration mapping written as TOML, the command line,
its JSON events, ready at ``pxed.ready``.

The process runs the checkout this package was imported from (``python -P -m pxed`` with
that checkout first on PYTHONPATH): a test or a benchmark measures the code beside it even
when a virtualenv holds another copy.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pxed
from pxed.lab.logs import Event
from pxed.lab.netns import Netns
from pxed.lab.process import ServerProcess

CHECKOUT = Path(pxed.__file__).resolve().parents[1]
"""The directory holding the pxed package under test."""

Config = Mapping[str, Any] | str


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def toml_text(config: Mapping[str, Any]) -> str:
    """A configuration mapping as TOML: tables, sub-tables, arrays of tables ([[dhcp.host]]).

    A mapping value is a table; a list of mappings is an array of tables; a mapping inside
    a list or an array of tables' row is written inline. The reverse of tomllib for the
    shapes pxed's configuration has.
    """
    lines: list[str] = []

    def table(path: list[str], data: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in data.items() if not _is_table(v)]
        if path and (scalars or not data):
            lines.extend(["", "[" + ".".join(map(_toml_key, path)) + "]"])
        lines.extend(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in scalars)
        for key, value in data.items():
            if isinstance(value, Mapping):
                table([*path, str(key)], value)
            elif _is_table(value):
                for row in value:
                    lines.extend(["", "[[" + ".".join(map(_toml_key, [*path, str(key)])) + "]]"])
                    lines.extend(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in row.items())

    table([], config)
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)
    )


def pythonpath(first: str | Path = CHECKOUT) -> dict[str, str]:
    """This environment with ``first`` ahead of any PYTHONPATH it had."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(first) + (os.pathsep + env["PYTHONPATH"] if "PYTHONPATH" in env else "")
    return env


class PxedProcess(ServerProcess):
    """``pxed [--config WORKDIR/pxed.toml] --state-dir WORKDIR/state --log-format json ARGS``.

    ``config``: a mapping (written as TOML) or TOML text. ``quiet`` (benchmarks) logs at
    level warning, where ``pxed.ready`` is not logged: ready is then ``ready_port`` bound.
    """

    name = "pxed"
    python: ClassVar[str] = sys.executable
    """The interpreter (a benchmark may run pxed under another)."""
    start_timeout = 30.0

    def __init__(
        self,
        ns: Netns,
        workdir: Path,
        config: Config | None = None,
        args: Sequence[str] = (),
        *,
        quiet: bool = False,
        log_level: str | None = None,
        ready_port: int = 67,
    ) -> None:
        super().__init__(ns, workdir, quiet=quiet)
        self.config = config
        self.args = list(args)
        self.log_level = log_level
        self.ready_port = ready_port

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "leases.sqlite3"

    @property
    def config_path(self) -> Path:
        return self.workdir / "pxed.toml"

    def module(self) -> list[str]:
        """What follows the interpreter: ``-P -m pxed`` (a benchmark variant swaps it).

        -P: the working directory does not go first on sys.path, so PYTHONPATH decides
        which pxed runs (run from a checkout, ``-m`` would import that checkout's pxed).
        """
        return ["-P", "-m", "pxed"]

    def command(self) -> list[str]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmd = [self.python, *self.module()]
        if self.config is not None:
            text = self.config if isinstance(self.config, str) else toml_text(self.config)
            self.config_path.write_text(text)
            cmd += ["--config", str(self.config_path)]
        cmd += ["--state-dir", str(self.state_dir), "--log-format", "json"]
        level = "warning" if self.quiet else self.log_level
        if level is not None:
            cmd += ["--log-level", level]
        return [*cmd, *self.args]

    def env(self) -> dict[str, str]:
        return pythonpath()

    def is_ready(self) -> bool:
        if self.quiet or self.log_direct:
            return self.ns.udp_port_bound(self.ready_port)
        # This run's: events() holds every run's, and a restart is not ready by the last one.
        return self.output is not None and bool(self.output.named("pxed.ready"))

    def ready_event(self) -> Event:
        """This run's ``pxed.ready`` (addresses, mode, subnets); {} when quiet."""
        found = self.output.named("pxed.ready") if self.output is not None else []
        return found[0] if found else {}
