"""The problem lines the configuration stages collect (parse, derive, check).

The stages add to one collector when run together (load_config), so that a configuration
is refused with every problem at once rather than with the first stage's only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pxed.errors import ConfigError


@dataclass
class Problems:
    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)

    def check(self, where: str, fn: Callable[[], Any]) -> Any:
        """Run a parse step; on ValueError record '<where>: <reason>' and return None."""
        try:
            return fn()
        except (ValueError, TypeError) as exc:
            self.add(f"{where}: {_reason(exc)}")
            return None

    def raise_any(self) -> None:
        """ConfigError with every line, if there is any."""
        if self.lines:
            raise ConfigError(self.lines)


def _reason(exc: Exception) -> str:
    text = str(exc)
    # ipaddress says "Expected 4 octets in '1.2.3'"; keep its message but make it say what failed.
    return text if text else exc.__class__.__name__
