"""Shared fixtures: a real dockerd, real runtime images, and real Hearth servers on loopback."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from hearth.testing import REPO, HearthServer

OUTPUT_DIR = REPO / "test-output"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker daemon answers ({exc}); run scripts/ensure-docker.sh")
    yield client
    client.close()


@pytest.fixture(scope="session")
def runtime_images(docker_client: docker.DockerClient) -> dict[str, str]:
    from hearth.engine import images

    return images.ensure_images(docker_client, progress=lambda line: print(line, flush=True))


@pytest.fixture(scope="session")
def hearth(tmp_path_factory: pytest.TempPathFactory, runtime_images: dict[str, str]) -> Iterator[HearthServer]:
    """One Hearth server shared by the tests that do not restart it."""
    server = HearthServer(tmp_path_factory.mktemp("hearth") / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_hearth(tmp_path: Path, runtime_images: dict[str, str]) -> Iterator[HearthServer]:
    """A Hearth server of the test's own, for tests that stop or restart it."""
    server = HearthServer(tmp_path / "data")
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.stop()


# Every sandbox backend the functional suite runs on (the `backend` fixture); a backend this host cannot
# run is skipped with the reason the backend itself gives (GET /api/backends says the same).
SANDBOX_BACKENDS = [pytest.param("docker"), pytest.param("gvisor")]


@pytest.fixture(scope="session")
def backend_availability(runtime_images: dict[str, str]) -> dict[str, tuple[bool, str]]:
    from hearth.api.app import build_backends
    from hearth.config import Settings

    backends = build_backends(Settings(), "pytest-availability")
    return {name: backend.availability() for name, backend in backends.items()}


@pytest.fixture(params=SANDBOX_BACKENDS)
def backend(request: pytest.FixtureRequest, backend_availability: dict[str, tuple[bool, str]]) -> str:
    """The name of a sandbox backend to deploy the test's functions on (`backend=backend`)."""
    name: str = request.param
    available, reason = backend_availability.get(name, (False, "not built by hearth.api.app.build_backends"))
    if not available:
        pytest.skip(f"{name} backend not available here: {reason}")
    return name


@pytest.fixture
def fname() -> str:
    """A unique function name for this test."""
    return "t-" + secrets.token_hex(4)
