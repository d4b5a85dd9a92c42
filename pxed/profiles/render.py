"""Rendering a profile's files for one machine: the variables and the templates (Jinja2).

Templates are Jinja2 with StrictUndefined: a variable a template names and nobody defined
is an error (`pxed check` renders every template of every profile for a sample machine, so
it is refused there), never an empty string in a kernel command line. The built-in
templates are in pxed/data/templates/<kind>.j2; a profile's ``templates`` name its own files,
read again when they change (no reload needed to fix a preseed).

What every template gets:

    mac, mac_dashes     52:54:00:12:34:56, 52-54-00-12-34-56
    ip, hostname        the machine's address and name (host entry, then lease, else
                        host-<mac_dashes>)
    arch, uuid          bios / uefi_x64 / ... and the SMBIOS UUID, from DHCP (or None)
    profile             the profile's name
    server              pxed's address as the machine reaches it
    http, tftp          http://SERVER:PORT (None without [http]) and tftp://SERVER
    base_url            the machine's directory: over HTTP when pxed serves HTTP
    preseed_url         base_url + preseed.cfg
    seed_url            base_url, for cloud-init: ds=nocloud-net;s={{ seed_url }}
    kernel, initrd      names under the boot root (initrd: a list)
    kernel_url, initrd_urls   the same as URLs (HTTP when on, else TFTP)
    cmdline             the profile's kernel arguments, themselves rendered
    vars                the profile's own variables, each also by its own name
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from types import TracebackType

import jinja2

from pxed.boot import http_base
from pxed.config import TEMPLATE_KINDS, ProfileConfig
from pxed.errors import PxedError
from pxed.profiles.paths import machine_dir
from pxed.profiles.select import Machine

BUILTIN_NAMES = frozenset({
    "mac", "mac_dashes", "ip", "hostname", "arch", "uuid", "profile", "server", "http",
    "tftp", "base_url", "preseed_url", "seed_url", "kernel", "initrd", "kernel_url",
    "initrd_urls", "cmdline", "vars",
})  # fmt: skip
"""Variables pxed sets; a profile's ``vars`` may not reuse these names."""

SAMPLE = Machine("52:54:00:00:00:01", "bios", "00000000-0000-4000-8000-000000000001",
                 "sample", "198.18.0.10")  # fmt: skip
"""The machine `pxed check` renders every template for."""


class RenderError(PxedError):
    """A template that does not render: the message names the profile, kind, file and line."""


@dataclass(frozen=True, slots=True)
class Place:
    """Where the machine reaches pxed: its address, and ``[http] listen`` (None: no HTTP)."""

    server: str
    http: tuple[str, int] | None


def _environment() -> jinja2.Environment:
    # No autoescape: these are boot scripts and config files, not HTML. trim/lstrip blocks
    # let a template put {% if %} on lines of their own without leaving blank lines.
    return jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


_ENV = _environment()
_BUILTIN: dict[str, jinja2.Template] = {}
_FILES: dict[Path, tuple[tuple[int, int], jinja2.Template]] = {}


def _builtin(kind: str) -> jinja2.Template:
    template = _BUILTIN.get(kind)
    if template is None:
        text = resources.files("pxed").joinpath(f"data/templates/{kind}.j2").read_text()
        template = _ENV.from_string(text)
        template.name = f"built-in {kind}"
        _BUILTIN[kind] = template
    return template


def _from_file(path: Path) -> jinja2.Template:
    """The template in ``path``, compiled again only when the file changed."""
    st = os.stat(path)
    key = (st.st_mtime_ns, st.st_size)
    cached = _FILES.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    template = _ENV.from_string(path.read_text())
    _FILES[path] = (key, template)
    return template


def template_for(profile: ProfileConfig, kind: str) -> tuple[jinja2.Template, str]:
    """The compiled template of ``kind`` and where it comes from (a path or "built-in")."""
    for k, path in profile.templates:
        if k == kind:
            return _from_file(path), str(path)
    return _builtin(kind), "built-in"


def variables(profile: ProfileConfig, machine: Machine, place: Place,
              hostname: str | None = None) -> dict[str, object]:  # fmt: skip
    """What every template of ``profile`` gets for ``machine``; ``hostname``: the host
    entry's name, which wins over what the machine said."""
    server = place.server
    http = http_base(place.http, server)
    tftp = f"tftp://{server}"
    base = http or tftp

    def url(name: str) -> str:
        return name if "://" in name else f"{base}/{name.lstrip('/')}"

    dashes = machine.mac.lower().replace(":", "-")
    base_url = f"{base}/{machine_dir(machine.mac)}/"
    own = dict(profile.variables)
    context: dict[str, object] = {
        **own,
        "mac": machine.mac.lower(),
        "mac_dashes": dashes,
        "ip": machine.ip,
        "hostname": hostname or machine.hostname or f"host-{dashes}",
        "arch": machine.arch,
        "uuid": machine.uuid,
        "profile": profile.name,
        "server": server,
        "http": http,
        "tftp": tftp,
        "base_url": base_url,
        "preseed_url": base_url + "preseed.cfg",
        "seed_url": base_url,
        "kernel": profile.kernel,
        "initrd": list(profile.initrd),
        "kernel_url": url(profile.kernel) if profile.kernel else None,
        "initrd_urls": [url(name) for name in profile.initrd],
        "vars": own,
    }
    try:
        cmdline = _ENV.from_string(profile.cmdline)
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"[[profile]] {profile.name} cmdline: {exc.message}") from exc
    context["cmdline"] = " ".join(_render(cmdline, context, profile, "cmdline", None).split())
    return context


def render(profile: ProfileConfig, kind: str, context: dict[str, object]) -> bytes:
    """The file of ``kind`` for the machine ``context`` describes. Raises RenderError."""
    if kind not in TEMPLATE_KINDS:
        raise ValueError(f"no template kind {kind!r}")
    try:
        template, source = template_for(profile, kind)
    except OSError as exc:
        raise RenderError(f"[[profile]] {profile.name} templates {kind}: "
                          f"cannot read {exc.filename}: {exc.strerror}") from exc  # fmt: skip
    except jinja2.TemplateSyntaxError as exc:
        path = dict(profile.templates).get(kind)
        raise RenderError(
            f"[[profile]] {profile.name} templates {kind} ({path}): "
            f"line {exc.lineno}: {exc.message}"
        ) from exc
    return _render(template, context, profile, kind, source).encode()


def _render(template: jinja2.Template, context: dict[str, object], profile: ProfileConfig,
            kind: str, source: str | None) -> str:  # fmt: skip
    try:
        return template.render(context)
    except jinja2.TemplateError as exc:
        line = _line(exc.__traceback__)
        at = f"line {line}: " if line is not None else ""
        where = f" ({source})" if source else ""
        raise RenderError(
            f"[[profile]] {profile.name} {kind}{where}: {at}{exc.message or exc}"
        ) from exc


def _line(tb: TracebackType | None) -> int | None:
    """The template line an error was raised at (Jinja2 puts the template's frames in the
    traceback with the template's own line numbers)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def check_profile(profile: ProfileConfig, http: tuple[str, int] | None) -> list[str]:
    """Every problem rendering ``profile``'s files for the sample machine, one line each."""
    problems: list[str] = []
    for name in dict(profile.variables):
        if name in BUILTIN_NAMES:
            problems.append(f"[[profile]] {profile.name} vars: {name!r} is a name pxed sets")
    place = Place("198.18.0.1", http)
    try:
        context = variables(profile, SAMPLE, place)
    except RenderError as exc:  # said; the templates are checked without the cmdline
        problems.append(str(exc))
        context = variables(replace(profile, cmdline=""), SAMPLE, place)
    for kind in TEMPLATE_KINDS:
        try:
            render(profile, kind, context)
        except RenderError as exc:
            problems.append(str(exc))
    return problems
