"""The dashboard started by `hearth serve --dashboard` holds no secret in its environment, uses a key of
its own (0600 file) that cannot administer Hearth, and refuses a foreign Host (DNS rebinding)."""

from __future__ import annotations

import base64
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hearth.testing import HearthServer, free_port

HELLO = "def handler(event, context):\n    return 'hi'\n"


def start_with_dashboard(data_dir: Path, env: dict[str, str]) -> tuple[HearthServer, int]:
    port = free_port()
    server = HearthServer(data_dir, args=["--dashboard", "--dashboard-port", str(port)], env=env)
    server.start()
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status_code == 200:
                return server, port
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.3)


def stop(server: HearthServer) -> None:
    if server.proc is not None and server.proc.poll() is None:
        server.stop()


@pytest.fixture
def served(tmp_path: Path, runtime_images: dict[str, str]) -> Iterator[tuple[HearthServer, int]]:
    data_dir = tmp_path / "data"
    # HEARTH_DATABASE_URL stands for any other Hearth setting that may hold a secret (a PostgreSQL password)
    env = {"HEARTH_DATABASE_URL": f"sqlite:///{data_dir / 'hearth.db'}", "HEARTH_DASHBOARD_REFRESH_S": "7"}
    server, port = start_with_dashboard(data_dir, env)
    yield server, port
    stop(server)


def dashboard_pid(server: HearthServer) -> int:
    assert server.proc is not None
    children = []
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
        children += [int(p) for p in (task / "children").read_text().split()]
    found = [p for p in children if b"streamlit" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(found) == 1, children
    return found[0]


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = [item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item]
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


def handshake(port: int, host: str) -> int:
    """The status of a WebSocket handshake to the dashboard's stream with this Host header."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        key = base64.b64encode(os.urandom(16)).decode()
        conn.sendall(
            (
                f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: streamlit\r\n"
                f"Origin: http://{host}\r\n\r\n"
            ).encode()
        )
        status_line = conn.recv(4096).split(b"\r\n", 1)[0]
    return int(status_line.split()[1])


def test_the_dashboard_gets_a_key_file_and_no_secret_in_its_environment(served: tuple[HearthServer, int]) -> None:
    server, _ = served
    key_file = server.data_dir / "dashboard_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    dashboard_key = key_file.read_text().strip()
    env = environ_of(dashboard_pid(server))
    assert env["HEARTH_DASHBOARD_KEY_FILE"] == str(key_file)
    assert env["HEARTH_DASHBOARD_REFRESH_S"] == "7"  # its own harmless settings still reach it
    assert "HEARTH_API_KEY" not in env and "HEARTH_DATABASE_URL" not in env
    assert not [k for k in env if k.startswith("HEARTH_") and k not in ("HEARTH_API_URL",) and "DASHBOARD" not in k]
    values = "\0".join(env.values())
    assert server.api_key not in values and dashboard_key not in values


def test_the_dashboards_key_manages_the_admins_functions_but_cannot_administer(
    served: tuple[HearthServer, int], fname: str
) -> None:
    server, _ = served
    dashboard = httpx.Client(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {(server.data_dir / 'dashboard_key').read_text().strip()}"},
        timeout=60,
    )
    # what the dashboard does: create, edit, invoke, read records, metrics and logs
    body = {"name": fname, "language": "python", "code": HELLO}
    created = dashboard.post("/api/functions", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["owner"] == "admin" and created.json()["name"] == fname  # the admin's namespace
    assert dashboard.patch(f"/api/functions/{fname}", json={"memory_mb": 96}).status_code == 200
    assert dashboard.post(f"/api/functions/{fname}/invoke", json={}).json() == "hi"
    assert dashboard.get("/api/invocations", params={"function": fname}).status_code == 200
    assert dashboard.get(f"/api/functions/{fname}/logs").status_code == 200
    assert dashboard.get("/api/metrics/summary").status_code == 200
    assert dashboard.get("/api/metrics/series", params={"window": "5m", "step": "10s"}).status_code == 200

    # what it cannot: users, keys, capabilities
    refused = [
        dashboard.post("/api/users", json={"name": f"u-{fname}"}),
        dashboard.get("/api/users"),
        dashboard.patch("/api/users/admin", json={"max_functions": 1}),
        dashboard.post("/api/users/admin/keys", json={"scopes": ["admin"]}),
    ]
    for response in refused:
        assert response.status_code == 403, response.text
        assert "'admin' scope" in response.json()["error"]["message"]
    assert server.client.get(f"/api/users/u-{fname}").status_code == 404  # the admin key sees none was made

    # a user's functions are not the dashboard's to see
    assert server.client.post("/api/users", json={"name": f"u-{fname}"}).status_code == 201
    user_key = server.client.post(f"/api/users/u-{fname}/keys", json={"scopes": ["deploy"]}).json()["key"]
    user = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {user_key}"}, timeout=60)
    assert user.post("/api/functions", json=body).status_code == 201
    assert dashboard.get(f"/api/functions/u-{fname}.{fname}").status_code == 404
    assert [f["name"] for f in dashboard.get("/api/functions").json()["functions"]] == [fname]


def test_a_foreign_host_is_refused_and_the_served_one_works(served: tuple[HearthServer, int]) -> None:
    _, port = served
    assert handshake(port, f"127.0.0.1:{port}") == 101
    assert handshake(port, f"localhost:{port}") == 101
    for foreign in (f"rebind.attacker.example:{port}", "rebind.attacker.example", f"127.0.0.1.nip.io:{port}"):
        assert handshake(port, foreign) == 403, foreign


def test_the_allowed_host_names_can_be_set(tmp_path: Path, runtime_images: dict[str, str]) -> None:
    """Behind a reverse proxy the browser uses the proxy's name: HEARTH_DASHBOARD_ALLOWED_HOSTS replaces the list."""
    server, port = start_with_dashboard(tmp_path / "data", {"HEARTH_DASHBOARD_ALLOWED_HOSTS": '["hearth.test"]'})
    try:
        assert handshake(port, f"hearth.test:{port}") == 101
        assert handshake(port, f"127.0.0.1:{port}") == 403
    finally:
        stop(server)
