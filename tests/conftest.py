"""Shared fixtures: a real dockerd, real runtime images, and real Hearth servers on loopback."""

from __future__ import annotations

import os
import secrets
import shutil
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
    """The catalog's runtime images (provided's too), the builder images, the AWS SDK layer and the relay.

    The provided-python base image (for users' own Dockerfiles) is built only by the tests that need it
    (tests/runtimes/conftest.py's `provided_images`).
    """
    from hearth.engine import provided
    from hearth.images import aws_sdk, containers

    def say(line: str) -> None:
        print(line, flush=True)

    containers.ensure_builder_images(docker_client, progress=say)  # dependency builds run in these
    refs = containers.ensure_images(docker_client, progress=say)
    aws_sdk.ensure_layer(docker_client, say)  # mounted in Node runtimes' sandboxes, as Lambda ships it
    try:
        provided.ensure_relay()  # bind-mounted in provided sandboxes
    except provided.ProvidedError as exc:  # no Go here: provided functions are refused at deploy, and said why
        say(f"no relay: {exc}")
    return refs


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
# run is skipped with the reason the backend itself gives (GET /api/backends says the same). The microvm
# backend runs under TCG here (slow), with the guest image of `make microvm-image`; firecracker has its
# own tests (tests/engine/test_microvm.py) as this host has no firecracker binary.
SANDBOX_BACKENDS = [pytest.param("docker"), pytest.param("gvisor"), pytest.param("microvm", marks=pytest.mark.slow)]


def current_availability() -> dict[str, tuple[bool, str]]:
    from hearth.api.app import build_backends
    from hearth.config import Settings

    backends = build_backends(Settings(), "pytest-availability")
    return {name: backend.availability() for name, backend in backends.items()}


@pytest.fixture(scope="session")
def backend_availability(runtime_images: dict[str, str]) -> dict[str, tuple[bool, str]]:
    return current_availability()


# The backends whose sandboxes are Docker containers, for tests that inspect the container itself.
CONTAINER_BACKENDS = [pytest.param("docker"), pytest.param("gvisor")]


def available_backend(name: str, availability: dict[str, tuple[bool, str]]) -> str:
    available, reason = availability.get(name, (False, "not built by hearth.api.app.build_backends"))
    if not available:
        pytest.skip(f"{name} backend not available here: {reason}")
    return name


@pytest.fixture(scope="session")
def microvm_guest_image() -> None:
    """The guest image the VM backends boot: built now if it is missing and we may build it."""
    from hearth.images import microvm as microvm_image

    if microvm_image.find_image() is None:
        if os.geteuid() != 0 or shutil.which("mmdebstrap") is None:
            pytest.skip("no microVM guest image, and building one needs root and mmdebstrap: make microvm-image")
        microvm_image.ensure_image(progress=lambda line: print(line, flush=True))


@pytest.fixture(params=SANDBOX_BACKENDS)
def backend(request: pytest.FixtureRequest, backend_availability: dict[str, tuple[bool, str]]) -> str:
    """The name of a sandbox backend to deploy the test's functions on (`backend=backend`)."""
    name: str = request.param
    if name == "microvm" and not backend_availability[name][0]:
        request.getfixturevalue("microvm_guest_image")  # the one thing a test run may add: build, then ask again
        backend_availability.update(current_availability())
    return available_backend(name, backend_availability)


@pytest.fixture(params=CONTAINER_BACKENDS)
def container_backend(request: pytest.FixtureRequest, backend_availability: dict[str, tuple[bool, str]]) -> str:
    """A backend whose sandboxes are containers (their cgroups and Docker settings can be read)."""
    return available_backend(request.param, backend_availability)


@pytest.fixture
def fname() -> str:
    """A unique function name for this test."""
    return "t-" + secrets.token_hex(4)
