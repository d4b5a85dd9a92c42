"""One exception hierarchy for pxed.

Protocol errors carry what to answer, when there is an answer (h11/wsproto style):
the TFTP error code to send, or nothing for DHCP where a malformed packet is simply dropped.
"""

from __future__ import annotations


class PxedError(Exception):
    """Base of every error pxed raises on purpose."""


class ConfigError(PxedError):
    """A configuration was refused; ``problems`` has one human line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ProtocolError(PxedError):
    """A protocol rule was broken."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed or not allowed; the datagram is dropped.

    ``error_code`` is the TFTP error code to answer with, when one applies.
    """

    def __init__(self, message: str, error_code: int | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code


class MalformedPacket(RemoteProtocolError):
    """Bytes that do not decode as a packet of the protocol."""


class LocalProtocolError(ProtocolError):
    """We were asked to build something the protocol does not allow (a bug on our side)."""


class StoreUnavailable(PxedError):
    """The store cannot be reached now (the database server is down or unreachable): an
    outage to wait out, unlike a store that is not usable at all (not pxed's, a schema of
    another version), which stops pxed."""
