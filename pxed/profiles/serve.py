"""The running server's rendered files: a requested name -> the bytes made for that machine.

Asked by the TFTP and HTTP servers before the boot root (TFTP asks from its own thread: what
is read here is replaced whole, never changed in place). A name that is not a rendered
file's, or a machine no profile is for, gets None and the root answers it, so a
hand-written ``pxelinux.cfg/01-<mac>`` still works for machines without a profile.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from pxed.config import Config, HostConfig, ProfileConfig
from pxed.files import FileRefused, Refusal
from pxed.profiles.paths import rendered
from pxed.profiles.render import Place, RenderError, render, variables
from pxed.profiles.select import Machine, select

SEEN_MAX = 4096
"""Machines whose DHCP facts are remembered (the oldest are forgotten first)."""


class ProfileFiles:
    """``config``: the configuration now; ``lease``: a MAC's (address, host name) from the
    leases; ``next_boot``: a MAC's boot-once state."""

    def __init__(
        self,
        config: Callable[[], Config],
        lease: Callable[[str], tuple[str | None, str | None]],
        next_boot: Callable[[str], str | None],
    ) -> None:
        self._config = config
        self._lease = lease
        self._next_boot = next_boot
        self._seen: OrderedDict[str, Machine] = OrderedDict()

    def seen(self, machine: Machine) -> None:
        """A machine asked DHCP (ConfigBootPolicy tells): its arch, UUID and name are kept
        for the files it fetches next."""
        self._seen[machine.mac] = machine
        self._seen.move_to_end(machine.mac)
        while len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)

    def machine(self, mac: str, client_ip: str | None = None) -> tuple[Machine, HostConfig | None]:
        config = self._config()
        host = next((h for h in config.hosts if h.mac == mac), None)
        known = self._seen.get(mac, Machine(mac))
        ip, name = self._lease(mac)
        machine = Machine(
            mac,
            known.arch,
            known.uuid,
            name or known.hostname,
            ip or (str(host.ip) if host is not None and host.ip else None) or client_ip,
        )
        return machine, host

    def profile(self, mac: str) -> ProfileConfig | None:
        """The profile ``mac`` boots now (pxed.profiles.select, as DHCP asks it)."""
        machine, host = self.machine(mac)
        return select(self._config().profiles, host, machine, self._next_boot(mac))

    def render(self, name: str, client_ip: str, local_ip: str | None) -> bytes | None:
        found = rendered(name)
        if found is None:
            return None
        mac, kind = found
        config = self._config()
        machine, host = self.machine(mac, client_ip)
        profile = select(config.profiles, host, machine, self._next_boot(mac))
        if profile is None:
            return None
        server = local_ip or (str(config.boot.next_server) if config.boot.next_server else None)
        if server is None:
            raise FileRefused(f"no address of pxed known to put in {name}", Refusal.FORBIDDEN)
        place = Place(server, config.http.listen)
        try:
            context = variables(profile, machine, place, host.hostname if host else None)
            return render(profile, kind, context)
        except RenderError as exc:
            # Not "not found": PXELINUX would go on to its next name and boot the default
            # menu, a machine installed with the wrong profile.
            raise FileRefused(str(exc), Refusal.FORBIDDEN) from exc
