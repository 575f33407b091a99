"""The API's HTTP server as clients meet it."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator

import pytest

from hearth.testing import HearthServer


def test_an_idle_connection_outlives_client_connection_pools(hearth: HearthServer) -> None:
    """httpx keeps idle connections 5 s: a server closing them at 5 s too races the client's next request."""
    conn = http.client.HTTPConnection("127.0.0.1", hearth.port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b'{"status":"ok"}'
        first_socket = conn.sock
        time.sleep(6.5)  # idle past uvicorn's default keep-alive (5 s)
        conn.request("GET", "/healthz")  # on the same connection: RemoteDisconnected had the server closed it
        assert conn.getresponse().read() == b'{"status":"ok"}' and conn.sock is first_socket
    finally:
        conn.close()


KEEP_ALIVE_S = 2.0


@pytest.fixture(scope="module")
def short_keep_alive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HearthServer]:
    server = HearthServer(tmp_path_factory.mktemp("keep-alive") / "data", env={"HEARTH_HTTP_KEEP_ALIVE_S": "2"})
    server.start()
    yield server
    server.stop()


def get_healthz(sock: socket.socket) -> None:
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith(b'{"status":"ok"}'):
        chunk = sock.recv(4096)
        assert chunk, f"closed after {data!r}"
        data += chunk


def seconds_until_closed(sock: socket.socket) -> float:
    started = time.monotonic()
    assert sock.recv(4096) == b""  # the server's FIN
    return time.monotonic() - started


def test_an_idle_connection_is_closed_after_the_keep_alive_time(short_keep_alive: HearthServer) -> None:
    """Closed once idle for HEARTH_HTTP_KEEP_ALIVE_S since its last response, however busy it was before:
    requests 1.2 s apart outlive the timer set at the first response."""
    with socket.create_connection(("127.0.0.1", short_keep_alive.port), timeout=30) as sock:
        for _ in range(3):
            get_healthz(sock)
            time.sleep(1.2)
        get_healthz(sock)
        assert KEEP_ALIVE_S - 0.1 <= seconds_until_closed(sock) <= KEEP_ALIVE_S + 1.5


def test_a_request_under_way_is_not_cut_by_the_keep_alive_time(short_keep_alive: HearthServer) -> None:
    """A request whose body takes longer than the keep-alive time to arrive is answered, not closed on."""
    with socket.create_connection(("127.0.0.1", short_keep_alive.port), timeout=30) as sock:
        get_healthz(sock)
        sock.sendall(  # a deploy: read whole before it is answered (422 for this body)
            b"POST /api/functions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer %s\r\nContent-Length: 2\r\n\r\n{" % short_keep_alive.api_key.encode()
        )
        time.sleep(KEEP_ALIVE_S + 1.0)  # the timer set at the first response fires meanwhile
        sock.sendall(b"}")
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 422"), answer
        assert KEEP_ALIVE_S - 0.1 <= seconds_until_closed(sock) <= KEEP_ALIVE_S + 1.5
