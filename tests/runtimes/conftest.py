"""Artifacts the custom-runtime tests share, built once per session (and once per machine where cached).

- the relay (hearth.engine.provided) and the `provided` base images (hearth.images.provided);
- a Go runtime (tests/runtimes/go_runtime, standard library only) built with Debian's Go toolchain;
- a container image running AWS's `awslambdaric` (from PyPI, installed with `pip install --target` on
  the host: `docker build` runs with `--network none`), tagged by the hash of its inputs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from hearth.engine import provided
from hearth.images import provided as base_images

HERE = Path(__file__).parent
GO_RUNTIME = HERE / "go_runtime"
RIC_APP = """import os
import time


def handler(event, context):
    print("hello from awslambdaric")
    if isinstance(event, dict) and event.get("fail"):
        raise ValueError("asked to fail")
    if isinstance(event, dict) and event.get("sleep"):
        time.sleep(event["sleep"])
    return {
        "event": event,
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 30000,
        "name": context.function_name,
        "uid": os.getuid(),
    }
"""


@pytest.fixture(scope="session")
def provided_images(docker_client: docker.DockerClient, runtime_images: dict[str, str]) -> dict[str, str]:
    provided.ensure_relay()
    return {name: base_images.ensure_base_image(docker_client, name) for name in base_images.BASE_IMAGES}


@pytest.fixture(scope="session")
def go_runtime(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The test runtime's static binary (CGO_ENABLED=0): a `bootstrap` for zips, or an image's entrypoint."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("Debian's golang-go is not installed (scripts/install-system.sh installs it)")
    out = tmp_path_factory.mktemp("go") / "bootstrap"
    env = {**os.environ, "CGO_ENABLED": "0", "GOPROXY": "off", "GOFLAGS": "-mod=mod"}
    env.setdefault("GOCACHE", str(provided.relay_cache_root() / "gocache"))
    subprocess.run([go, "build", "-o", str(out), "."], cwd=GO_RUNTIME, env=env, check=True)
    return out.read_bytes()


def build_image(context: Path, tag: str) -> str:
    """`docker build --network none` of `context` (as `hearth deploy` builds a function's Dockerfile)."""
    done = subprocess.run(
        ["docker", "build", "-q", "--network", "none", "-t", tag, str(context)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return tag


@pytest.fixture(scope="session")
def docker_build() -> Callable[[Path, str], str]:
    """`docker_build(context, tag)`: builds with `--network none`, returns the tag."""

    def build(context: Path, tag: str) -> str:
        return build_image(context, tag)

    return build


def install_awslambdaric(target: Path) -> None:
    """awslambdaric for the image's Python (3.11, x86_64), from PyPI through pip, on the host."""
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "-q", "--target", str(target), "--only-binary=:all:",
            "--python-version", "3.11", "--platform", "manylinux2014_x86_64", "awslambdaric",
        ],
        check=True,
    )  # fmt: skip


@pytest.fixture(scope="session")
def ric_context(tmp_path_factory: pytest.TempPathFactory, provided_images: dict[str, str]) -> Path:
    """A function directory for `hearth deploy`: a Dockerfile running awslambdaric, app.py, and the package."""
    context = tmp_path_factory.mktemp("ric")
    install_awslambdaric(context / "ric")
    (context / "app.py").write_text(RIC_APP)
    dockerfile = provided.AWSLAMBDARIC_DOCKERFILE.format(base=provided_images["provided-python"])
    (context / "Dockerfile").write_text(dockerfile)
    return context


@pytest.fixture(scope="session")
def ric_image(docker_client: docker.DockerClient, ric_context: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(ric_context.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(ric_context)).encode() + path.read_bytes())
    return build_image(ric_context, f"hearth-test-ric:{digest.hexdigest()[:12]}")
