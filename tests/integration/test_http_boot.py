"""The boot root over HTTP ([http] listen), with curl in network namespaces this test makes.

GET and HEAD of a small, an empty and a 100 MB file (bytes compared), byte ranges, HEAD then
GET on one persistent connection (as EDK2 asks), 50 clients at once on a 32 MB initrd, and
the hostile names of the root's unit tests in their URL forms, over HTTP and over TFTP: the
same store refuses them the same way on both transports, and nothing outside the root is
ever sent. Behaviour only: speeds are in bench/http.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from pxed.lab import require, wait_for
from pxed.lab.tftp import SERVER_IP, PxedTftp, TftpLab, fetch_many, make_file, same_file

PORT = 8080
BASE = f"http://{SERVER_IP}:{PORT}"
MB = 1024 * 1024
SECRET = b"SECRET-outside-the-root\n"


@pytest.fixture
def http(tftp_lab: TftpLab) -> Iterator[tuple[TftpLab, PxedTftp]]:
    require("curl")
    root = tftp_lab.root
    make_file(root / "small.bin", 3000, seed=1)
    make_file(root / "empty.bin", 0)
    make_file(root / "dir" / "big.bin", 100 * MB, seed=3)
    make_file(root / "initrd.img", 32 * MB, seed=4)
    outside = tftp_lab.lab.tmp / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    (outside / "secret").chmod(0o644)
    (root / "link_out").symlink_to(outside)
    (root / "link_secret").symlink_to(outside / "secret")
    server = PxedTftp(tftp_lab.server_ns, root, tftp_lab.lab.tmp / "srv-pxed")
    server.args += ["--http-port", str(PORT)]
    server.start()
    tftp_lab.servers.append(server)
    yield tftp_lab, server


def curl(tl: TftpLab, *args: str, timeout: float = 300) -> Any:
    return tl.client_ns.run("curl", "-sS", "--max-time", str(int(timeout)), *args,
                            check=False, timeout=timeout + 10)  # fmt: skip


def test_get_head_and_ranges(http: tuple[TftpLab, PxedTftp]) -> None:
    tl, server = http
    for name in ("small.bin", "empty.bin", "dir/big.bin"):
        out = tl.out / name.replace("/", "_")
        res = curl(tl, "-f", "-o", str(out), f"{BASE}/{name}")
        assert res.returncode == 0, (res, server.tail())
        assert same_file(tl.root / name, out), name
    head = curl(tl, "-f", "-I", f"{BASE}/dir/big.bin")
    assert re.search(r"(?im)^content-length: 104857600\r?$", head.stdout), head.stdout
    assert re.search(r"(?im)^accept-ranges: bytes\r?$", head.stdout), head.stdout
    data = (tl.root / "small.bin").read_bytes()
    for spec, want in (("100-199", data[100:200]), ("-50", data[-50:]), ("2990-", data[2990:]),
                       ("0-99999", data)):  # fmt: skip
        got = tl.out / "range"
        res = curl(tl, "-f", "-r", spec, "-D", str(tl.out / "headers"), "-o", str(got),
                   f"{BASE}/small.bin")  # fmt: skip
        assert res.returncode == 0 and got.read_bytes() == want, (spec, res)
        assert " 206 " in (tl.out / "headers").read_text().splitlines()[0], spec
    past = curl(tl, "-r", "5000-", "-o", "/dev/null", "-w", "%{http_code}", f"{BASE}/small.bin")
    assert past.stdout == "416", past
    post = curl(tl, "-X", "POST", "-o", "/dev/null", "-w", "%{http_code}", f"{BASE}/small.bin")
    assert post.stdout == "405", post
    done = [e for e in server.events("http.done") if e.get("file") == "dir/big.bin"]
    assert done and done[0]["bytes"] == 100 * MB and done[0]["outcome"] == "ok", done
    assert server.events("http.declined"), "a HEAD is a size probe, as TFTP's tsize"


def test_head_then_get_on_one_connection(http: tuple[TftpLab, PxedTftp]) -> None:
    tl, server = http
    out = tl.out / "initrd"
    res = curl(tl, "-v", "-f", "-I", f"{BASE}/initrd.img", "--next", "-f", "-o", str(out),
               f"{BASE}/initrd.img")  # fmt: skip
    assert res.returncode == 0, res
    assert re.search(r"Re-?using existing connection", res.stderr), res.stderr
    assert same_file(tl.root / "initrd.img", out)
    clients = {e["client"] for e in server.events() if e.get("event", "").startswith("http.")}
    assert len(clients) == 1, f"HEAD and GET came from one connection: {clients}"


def test_fifty_clients_at_once(http: tuple[TftpLab, PxedTftp]) -> None:
    tl, server = http
    cmds = [["curl", "-sS", "-f", "--max-time", "300", "-o", str(tl.out / f"i{i}"),
             f"{BASE}/initrd.img"] for i in range(50)]  # fmt: skip
    codes, _ = fetch_many(tl.client_ns, cmds, timeout=400)
    assert codes == [0] * 50, codes
    for i in range(50):
        assert same_file(tl.root / "initrd.img", tl.out / f"i{i}"), i
    assert wait_for(lambda: len([e for e in server.events("http.done")
                                 if e.get("file") == "initrd.img"]) == 50, 10)  # fmt: skip


# Name -> URL path (as sent, with --path-as-is) for HTTP, and the name a TFTP client sends
# (None: not expressible there). Every one must be refused, the secret never sent.
HOSTILE: list[tuple[str, str | None]] = [
    ("/../outside/secret", "../outside/secret"),
    ("/%2e%2e/outside/secret", None),
    ("/%2E%2E%2Foutside%2Fsecret", None),
    ("/..%5Coutside%5Csecret", "..\\outside\\secret"),
    ("/dir/../../outside/secret", "dir/../../outside/secret"),
    ("//link_out/secret", "//link_out/secret"),
    ("/link_out/secret", "link_out/secret"),
    ("/link_secret", "link_secret"),
    ("/small.bin%00.txt", None),
    ("/%00", None),
    ("/etc/passwd", "/etc/passwd"),
    ("/dir", "dir"),
    ("/", None),
]


@pytest.mark.parametrize(("path", "tftp_name"), HOSTILE, ids=[p for p, _ in HOSTILE])
def test_hostile_names_on_both_transports(
    http: tuple[TftpLab, PxedTftp], path: str, tftp_name: str | None
) -> None:
    tl, _ = http
    out = tl.out / "hostile"
    res = curl(tl, "--path-as-is", "-o", str(out), "-w", "%{http_code}", f"{BASE}{path}")
    assert res.stdout in ("403", "404"), (path, res)
    assert SECRET not in (out.read_bytes() if out.exists() else b"")
    if tftp_name is not None:
        out.unlink(missing_ok=True)
        got = curl(tl, "--path-as-is", "-o", str(out), f"tftp://{SERVER_IP}/{tftp_name}",
                   timeout=20)  # fmt: skip
        assert got.returncode != 0, (tftp_name, got)
        assert SECRET not in (out.read_bytes() if out.exists() else b"")


def test_an_absolute_uri_request_target_is_its_path(http: tuple[TftpLab, PxedTftp]) -> None:
    """``GET http://host/path HTTP/1.1`` (a proxy's form, which RFC 9112 says servers accept)
    resolves the path, traps included."""
    tl, _ = http
    ok = curl(tl, "--request-target", f"{BASE}/small.bin", "-o", str(tl.out / "abs"),
              "-w", "%{http_code}", f"{BASE}/")  # fmt: skip
    assert ok.stdout == "200" and same_file(tl.root / "small.bin", tl.out / "abs"), ok
    bad = curl(tl, "--request-target", f"{BASE}/../outside/secret", "-o", str(tl.out / "abs2"),
               "-w", "%{http_code}", f"{BASE}/")  # fmt: skip
    assert bad.stdout in ("403", "404"), bad
    assert SECRET not in (tl.out / "abs2").read_bytes()

