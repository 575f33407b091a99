"""The API's HTTP server as clients meet it."""

from __future__ import annotations

import http.client
import time

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
