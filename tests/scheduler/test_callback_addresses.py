"""Where callbacks may go: the address policy range by range, and the client that connects only to the
addresses it checked (a name re-resolving between check and connect cannot reach loopback; TLS and
`Host` stay those of the name). No traffic leaves the machine: a public address is only ever handed to
a network backend that records it and refuses to connect."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest

from hearth.scheduler.callback_addresses import refusal
from hearth.scheduler.callback_transport import CallbackRefused, callback_client
from hearth.scheduler.callbacks import check_callback_url, deliver_callback
from hearth.scheduler.queue import SqlJobQueue
from hearth.store.db import make_engine, make_sessionmaker, migrate

# A globally routable IPv4 address outside every documentation range: only ever given to RecordingBackend.
PUBLIC_V4 = "198.51.101.7"

REFUSED = {
    "127.0.0.1": "loopback",
    "::1": "IPv6 loopback",
    "10.1.2.3": "RFC 1918",
    "172.16.5.4": "RFC 1918",
    "192.168.0.1": "RFC 1918",
    "100.64.0.1": "carrier-grade NAT",
    "100.127.255.254": "carrier-grade NAT",
    "100.100.100.200": "Alibaba Cloud metadata (CGNAT)",
    "169.254.169.254": "AWS/GCP/Azure metadata (link-local)",
    "fd00:ec2::254": "AWS IPv6 metadata (unique local)",
    "fe80::1": "IPv6 link-local",
    "fe80::1%lo": "IPv6 link-local with a zone",
    "0.0.0.0": "unspecified",
    "::": "IPv6 unspecified",
    "255.255.255.255": "broadcast",
    "240.0.0.1": "reserved",
    "192.0.2.1": "TEST-NET-1",
    "2001:db8::1": "IPv6 documentation",
    "224.0.0.1": "multicast",
    "239.1.2.3": "multicast",
    "ff0e::1": "IPv6 global-scope multicast",
    "::ffff:127.0.0.1": "IPv4-mapped loopback",
    "::ffff:169.254.169.254": "IPv4-mapped metadata",
    "::127.0.0.1": "IPv4-compatible loopback",
    "::a9fe:a9fe": "IPv4-compatible metadata",
    "::a00:1": "IPv4-compatible 10.0.0.1",
    "2002:7f00:1::": "6to4 of 127.0.0.1",
    "2002:a9fe:a9fe::1": "6to4 of 169.254.169.254",
    "2002:c0a8:101::": "6to4 of 192.168.1.1",
    "64:ff9b::7f00:1": "NAT64 of 127.0.0.1",
    "64:ff9b::a9fe:a9fe": "NAT64 of 169.254.169.254",
    "64:ff9b::6464:64c8": "NAT64 of 100.100.100.200",
    "64:ff9b:1::a00:1": "local-use NAT64",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": "Teredo",
    "2001:0:a9fe:a9fe::1": "Teredo (server 169.254.169.254)",
}

ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    PUBLIC_V4,
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "2002:808:808::1",  # 6to4 of a public address
    "64:ff9b::808:808",  # NAT64 of a public address (an IPv6-only host behind DNS64)
    "::ffff:8.8.8.8",  # IPv4-mapped public
]


@pytest.mark.parametrize("address", list(REFUSED), ids=[f"{a} ({why})" for a, why in REFUSED.items()])
def test_non_global_addresses_are_refused(address: str) -> None:
    assert refusal(address) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_global_addresses_are_allowed(address: str) -> None:
    assert refusal(address) is None


def test_submit_time_check_resolves_and_checks_every_address() -> None:
    async def mixed(host: str, port: int) -> list[str]:
        return [PUBLIC_V4, "::ffff:10.0.0.1"]  # one bad address is enough to refuse

    async def public(host: str, port: int) -> list[str]:
        return [PUBLIC_V4]

    problem = asyncio.run(check_callback_url("https://hooks.example/x", False, mixed))
    assert problem is not None and "10.0.0.1" in problem
    assert asyncio.run(check_callback_url("https://hooks.example/x", False, public)) is None
    assert asyncio.run(check_callback_url("https://hooks.example/x", True, mixed)) is None
    assert asyncio.run(check_callback_url("file:///etc/passwd", True, public)) is not None


class Receiver(BaseHTTPRequestHandler):
    """Records each callback POST (its Host header) and answers 204."""

    seen: list[str]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.seen.append(self.headers["Host"])
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[ThreadingHTTPServer, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (Receiver,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, seen
    server.shutdown()
    server.server_close()


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Records every address the client connects to; connects only to loopback, refuses anything else at
    once (so a public address is never actually contacted)."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.targets.append(host)
        if host != "127.0.0.1":
            raise httpcore.ConnectError(f"{host}: not contacted from a test")
        return await self.real.connect_tcp(host, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.real.sleep(seconds)


def test_a_name_rebinding_to_loopback_after_the_check_never_reaches_it(
    tmp_path: Path, receiver: tuple[ThreadingHTTPServer, list[str]]
) -> None:
    server, seen = receiver
    answers = iter([[PUBLIC_V4]])
    resolutions: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        """Public the first time, loopback ever after (DNS rebinding)."""
        resolutions.append(host)
        return next(answers, ["127.0.0.1"])

    url = f"http://rebind.example:{server.server_port}/done"
    db = f"sqlite:///{tmp_path / 'hearth.db'}"
    migrate(db)
    queue = SqlJobQueue(make_sessionmaker(make_engine(db)))
    backend = RecordingBackend()

    async def go() -> str:
        async with callback_client(False, rebinding, inner=backend, timeout_s=5) as client:
            return await deliver_callback(client, queue, "job-1", url, {"status": "succeeded"}, attempts=3)

    status = asyncio.run(go())
    assert backend.targets == [PUBLIC_V4]  # connected only to the address checked, the first time
    assert seen == []  # the loopback receiver under the same name and port got nothing
    assert status.startswith("refused: ") and "127.0.0.1" in status  # the second resolution was refused
    assert resolutions == ["rebind.example", "rebind.example"]  # one resolution per connection


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for callback.example only (not for 127.0.0.1)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=callback.example",
         "-addext", "subjectAltName=DNS:callback.example", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_a_pinned_connection_keeps_the_names_host_header_sni_and_certificate(
    certificate: tuple[Path, Path], receiver: tuple[ThreadingHTTPServer, list[str]]
) -> None:
    server, seen = receiver
    cert, key = certificate
    server_names: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: server_names.append(name)  # type: ignore[assignment,func-returns-value]
    server.socket = context.wrap_socket(server.socket, server_side=True)
    trust = ssl.create_default_context(cafile=str(cert))
    resolved: list[str] = []

    async def to_loopback(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    url = f"https://callback.example:{server.server_port}/done"

    async def post(allow_private: bool) -> httpx.Response:
        async with callback_client(allow_private, to_loopback, verify=trust, timeout_s=5) as client:
            return await client.post(url, json={"ok": True})

    assert asyncio.run(post(True)).status_code == 204  # the certificate was verified for the name
    assert server_names == ["callback.example"] and seen == [f"callback.example:{server.server_port}"]
    assert resolved == ["callback.example"]
    with pytest.raises(CallbackRefused):  # the same name, loopback not allowed: not even connected
        asyncio.run(post(False))
    assert len(seen) == 1 and len(server_names) == 1


NETNS_SCRIPT = Path(__file__).with_name("rebinding_in_netns.py")


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"), reason="needs root, unshare and ip"
)
def test_rebinding_with_real_connections_in_a_network_namespace() -> None:
    """The same attack with nothing recorded or refused by the test: real connections, in a namespace of the
    test's own where the public address sits on `lo` (so no traffic can leave the machine)."""
    done = subprocess.run(
        ["unshare", "--net", sys.executable, str(NETNS_SCRIPT), PUBLIC_V4],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    host = f"rebind.example:{outcome['port']}"
    assert outcome["public"] == [host]  # the first delivery went to the address checked (and got a 500)
    assert outcome["loopback"] == []  # the retry re-resolved to loopback: refused, never connected
    assert outcome["status"].startswith("refused: ") and "127.0.0.1" in outcome["status"]
