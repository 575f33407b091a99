"""GET /api/backends, and what creating a function on a backend that cannot run it gives."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hearth.images import catalog
from hearth.testing import HearthServer


def backends_of(server: HearthServer) -> dict[str, dict]:  # type: ignore[type-arg]
    response = server.client.get("/api/backends")
    assert response.status_code == 200, response.text
    return {b["name"]: b for b in response.json()["backends"]}


def test_backends_need_the_api_key(hearth: HearthServer) -> None:
    response = httpx.get(f"{hearth.base_url}/api/backends")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "Unauthorized"
    missing = hearth.client.get("/api/backends/no-such-backend")
    assert missing.status_code == 404 and "docker" in missing.json()["error"]["message"]


def test_every_backend_says_whether_it_runs_here_and_what_a_start_costs(
    hearth: HearthServer, backend_availability: dict[str, tuple[bool, str]]
) -> None:
    listed = backends_of(hearth)
    assert set(backend_availability) <= set(listed)
    for name, (available, reason) in backend_availability.items():
        entry = listed[name]
        assert entry["available"] is available, entry
        assert entry["reason"] == (None if available else reason)
        assert entry["kind"]
        assert hearth.client.get(f"/api/backends/{name}").json()["name"] == name
    docker = listed["docker"]
    assert docker["default"] is True and docker["details"]["runtime"] == "runc"
    # The default backend's stem cells start at boot: its start cost is measured before any function runs.
    deadline = time.monotonic() + 30
    default_python = catalog.default_runtime("python")
    while default_python not in docker["start_cost"]["by_runtime"] and time.monotonic() < deadline:
        time.sleep(0.2)
        docker = backends_of(hearth)["docker"]
    python = docker["start_cost"]["by_runtime"][default_python]
    assert 0 < python["p50_ms"] < 30_000 and python["samples"] >= 1 and docker["start_cost"]["starts"] >= 1


def test_a_start_on_a_backend_is_measured(hearth: HearthServer, fname: str, backend: str) -> None:
    before = backends_of(hearth)[backend]["start_cost"]["starts"]
    # A function of its own that starts a sandbox of each runtime (a cold start or a stem cell's refill).
    hearth.deploy(fname, "exports.handler = async () => 1;", language="javascript", backend=backend)
    assert hearth.invoke(fname).json() == 1
    deadline = time.monotonic() + 30
    entry = backends_of(hearth)[backend]
    while entry["start_cost"]["starts"] <= before and time.monotonic() < deadline:
        time.sleep(0.2)
        entry = backends_of(hearth)[backend]
    assert entry["start_cost"]["starts"] > before
    assert entry["start_cost"]["by_runtime"][catalog.default_runtime("javascript")]["last_ms"] > 0
    if backend == "gvisor":
        details = entry["details"]
        assert details["runtime"] == "runsc" and "--network=none" in details["runtime_args"]
        assert details["pids"]["in_sandbox"] == 128 and details["pids"]["host_tasks"] > 128


def test_gvisor_refuses_network_access(
    hearth: HearthServer, fname: str, backend_availability: dict[str, tuple[bool, str]]
) -> None:
    available, reason = backend_availability["gvisor"]
    if not available:
        pytest.skip(f"gvisor backend not available here: {reason}")
    response = hearth.client.post(
        "/api/functions",
        json={
            "name": fname,
            "language": "python",
            "code": "def handler(e, c):\n    return 1\n",
            "backend": "gvisor",
            "network": True,
        },
    )
    assert response.status_code == 422, response.text
    assert "--network=none" in response.json()["error"]["message"]
    assert hearth.client.get(f"/api/functions/{fname}").status_code == 404


@pytest.fixture
def no_runsc_runtime(tmp_path: Path, runtime_images: dict[str, str]) -> Iterator[HearthServer]:
    """A server whose gvisor backend looks for a dockerd runtime that is not registered."""
    server = HearthServer(tmp_path / "data", env={"HEARTH_GVISOR_RUNTIME": "runsc-not-registered"})
    server.start()
    yield server
    server.stop()


def test_an_unavailable_backend_says_why_and_functions_on_it_are_422(no_runsc_runtime: HearthServer) -> None:
    gvisor = backends_of(no_runsc_runtime)["gvisor"]
    assert gvisor["available"] is False
    assert "'runsc-not-registered'" in gvisor["reason"] and "register" in gvisor["reason"]
    response = no_runsc_runtime.client.post(
        "/api/functions",
        json={
            "name": "on-gvisor",
            "language": "python",
            "code": "def handler(e, c):\n    return 1\n",
            "backend": "gvisor",
        },
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["fields"][0]["field"] == "backend"
    assert gvisor["reason"] in error["message"]
    assert backends_of(no_runsc_runtime)["docker"]["available"] is True
