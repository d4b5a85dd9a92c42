"""load_config: the configuration stages in order, one line per problem.

    parse   (pxed/config/parse.py)   the TOML's mapping -> what it states; pure
    derive  (pxed/config/derive.py)  + the interfaces present now -> Config
    check   (pxed/config/check.py)   rules between the parts; boot files under the root

The stages share one list of problems, so that a configuration is refused with all of its
problems at once. `pxed check` and the daemon load through here; pxed.Server runs the
check stage (and the derive stage's own-address rule) again on the Config it is handed,
so that one built in code is refused with the same lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pxed.config.check import check
from pxed.config.derive import InterfaceLookup, derive
from pxed.config.model import Config
from pxed.config.parse import load_file, merge, parse
from pxed.config.problems import Problems
from pxed.netinfo import interface_info


def build_config(
    data: Mapping[str, Any],
    *,
    lookup: InterfaceLookup = interface_info,
    check_files: bool = True,
    notes: list[str] | None = None,
    warnings: list[str] | None = None,
    base: Path | None = None,
) -> Config:
    """Validate a configuration mapping (the TOML's shape) into a Config.

    Raises ConfigError with every problem. ``notes`` collects what was derived or defaulted
    (the daemon logs them), such as a pool chosen from the interface's subnet; ``warnings``
    what may need attention but is no refusal (an interface that is not there yet);
    ``base`` the directory relative template paths are under.
    """
    problems = Problems()
    notes = notes if notes is not None else []
    where: list[str] = []
    parsed = parse(data, problems, base=base)
    config = derive(parsed, lookup, problems=problems, notes=notes, warnings=warnings, where=where)
    config = check(config, problems=problems, notes=notes, where=where, files=check_files)
    problems.raise_any()
    return config


def load_config(
    path: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    lookup: InterfaceLookup = interface_info,
    notes: list[str] | None = None,
    warnings: list[str] | None = None,
) -> Config:
    """Load a TOML file (if given), apply overrides (command-line flags) and validate."""
    data: dict[str, Any] = load_file(Path(path)) if path is not None else {}
    if overrides:
        data = merge(data, overrides)
    base = Path(path).resolve().parent if path is not None else None
    return build_config(data, lookup=lookup, notes=notes, warnings=warnings, base=base)
