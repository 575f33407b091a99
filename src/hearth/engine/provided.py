"""Custom runtimes (language `provided`) and container-image functions over AWS Lambda's Runtime API.

Inside the sandbox, Hearth's relay (src/hearth/runtimes/provided/relay, Go standard library, built
static here with Debian's Go toolchain and bind-mounted read-only at /opt/hearth-relay) serves the
Runtime API on 127.0.0.1:9001 and speaks the agent protocol to the host; it starts the function's
`bootstrap` (zip functions) or the image's ENTRYPOINT + CMD (image functions) when the sandbox is
loaded. See docs/runtimes.md.

This module holds what the host needs for that: building the relay (cached by source hash), reading
an image's configuration, the checks run at deploy, and the init frame's extra fields. The `provided`
base images are built with the other images (hearth.images.provided).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import docker
import docker.errors

from hearth.images import locks

LANGUAGE = "provided"
RUNTIMES_DIR = Path(__file__).resolve().parents[1] / "runtimes"
RELAY_SOURCE = RUNTIMES_DIR / "provided" / "relay"
RELAY_MOUNT = "/opt/hearth-relay"
RELAY_COMMAND: list[str] = [f"{RELAY_MOUNT}/relay"]
CODE_DIR = "/hearth/code"
BOOTSTRAP = "bootstrap"
INIT_TIMEOUT_S = 10.0  # Lambda's init phase limit: the bootstrap must ask for work within it
ROOT_USERS = frozenset({"root", "0"})
# A Lambda-style container image from the provided-python base: AWS's Python runtime interface client
# (installed into ric/ with `pip install --target ric awslambdaric`) runs app.handler. Used by the tests
# and bench/provided.py; docs/runtimes.md shows the same Dockerfile.
AWSLAMBDARIC_DOCKERFILE = """FROM {base}
COPY ric/ /opt/ric/
COPY app.py /var/task/
WORKDIR /var/task
ENV PYTHONPATH=/opt/ric
ENTRYPOINT ["python3", "-m", "awslambdaric"]
CMD ["app.handler"]
"""

class ProvidedError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------ relay


def relay_cache_root() -> Path:
    base = os.environ.get("HEARTH_RELAY_CACHE_DIR")
    if base:
        return Path(base)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "hearth" / "relay"


def _go() -> str:
    go = shutil.which("go") or ("/usr/lib/go/bin/go" if Path("/usr/lib/go/bin/go").exists() else None)
    if go is None:
        raise ProvidedError("building Hearth's relay needs Go: install Debian's golang-go (scripts/install-system.sh)")
    return go


@lru_cache(maxsize=1)
def relay_hash() -> str:
    """Hash of the relay's recipe: its sources, the Go toolchain's version and the build flags."""
    digest = hashlib.sha256()
    for path in sorted(RELAY_SOURCE.iterdir()):
        if path.suffix in (".go", ".mod"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    version = subprocess.run([_go(), "version"], capture_output=True, text=True, check=False).stdout.strip()
    digest.update(version.encode() + b"\0" + " ".join(BUILD_FLAGS).encode())
    return digest.hexdigest()[:12]


BUILD_FLAGS: tuple[str, ...] = ("-trimpath", "-ldflags=-s -w")


def ensure_relay() -> Path:
    """The directory holding the built `relay` binary (built first if this recipe's is missing)."""
    target = relay_cache_root() / relay_hash()
    if (target / "relay").exists():
        return target
    with locks.exclusive(Path(tempfile.gettempdir()) / "hearth-relay.lock"):
        if (target / "relay").exists():
            return target
        staging = Path(tempfile.mkdtemp(prefix="relay-", dir=_mkdirs(relay_cache_root())))
        env = {
            **os.environ,
            "CGO_ENABLED": "0",
            "GOFLAGS": "-mod=mod",
            "GOPROXY": "off",
            "GOCACHE": str(relay_cache_root() / "gocache"),
            "HOME": os.environ.get("HOME", "/tmp"),
        }
        done = subprocess.run(
            [_go(), "build", *BUILD_FLAGS, "-o", str(staging / "relay"), "."],
            cwd=RELAY_SOURCE,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise ProvidedError(f"building the relay failed:\n{done.stdout}{done.stderr}")
        os.chmod(staging, 0o755)
        os.chmod(staging / "relay", 0o755)
        os.replace(staging, target)
    return target


def relay_problem() -> str | None:
    """Why no sandbox could get the relay (no Go toolchain to build it), or None; cheap, never builds."""
    try:
        if (relay_cache_root() / relay_hash() / "relay").exists():
            return None
    except ProvidedError as exc:
        return str(exc)
    return None  # Go is there: the first sandbox builds it


def _mkdirs(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)
    return path


# ------------------------------------------------------------------------------------ image functions



@dataclass(frozen=True)
class ImageConfig:
    ref: str
    image_id: str
    command: tuple[str, ...]  # ENTRYPOINT + CMD
    working_dir: str
    env: dict[str, str]
    user: str


def inspect_image(client: docker.DockerClient, ref: str) -> ImageConfig:
    """The image's configuration; ProvidedError (with what to do) when it is not in the local engine."""
    try:
        attrs = client.api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        raise ProvidedError(
            f"image {ref!r} is not in this host's Docker engine: build it (`hearth deploy` builds a Dockerfile "
            "in the function's directory) or, on a host with a registry, `docker pull` it first"
        ) from None
    except docker.errors.APIError as exc:
        raise ProvidedError(f"image {ref!r}: {exc.explanation or exc}") from None
    config = attrs.get("Config") or {}
    env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
    return ImageConfig(
        ref=ref,
        image_id=str(attrs.get("Id", "")),
        command=(*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])),
        working_dir=config.get("WorkingDir") or "/",
        env=env,
        user=str(config.get("User") or ""),
    )


def image_refusal(config: ImageConfig) -> str | None:
    """Why Hearth will not run this image (checked at deploy), or None."""
    user = config.user.split(":", 1)[0]
    if user in ROOT_USERS:
        return (
            f"image {config.ref!r} sets USER {config.user}: Hearth runs every function as the unprivileged user "
            "65534 (nobody) and does not run images as root; remove the USER line or use USER 65534"
        )
    if not config.command:
        return f"image {config.ref!r} has no ENTRYPOINT or CMD: nothing would serve the Runtime API"
    return None


# ----------------------------------------------------------------------------------- the init frame


# Defaults a custom runtime gets beside Lambda's variables (hearth.engine.lambda_env); its `env` may replace them.
ENV_DEFAULTS: dict[str, str] = {"LANG": "C.UTF-8", "HOME": "/tmp"}


def gomaxprocs(cpus: float) -> str:
    """GOMAXPROCS for a Go runtime in a sandbox of `cpus` CPUs: the quota, rounded up. Go (before 1.25) sizes
    itself by the host's cores, and its extra threads only trade the HTTP client's goroutine hand-offs for
    futex wake-ups inside the same quota (measured: 5.8 -> 3.2 context switches per call for a Go bootstrap)."""
    return str(max(1, math.ceil(cpus)))


def init_fields(spec: Any, frame: Mapping[str, Any], image: ImageConfig | None) -> dict[str, Any]:
    """What the relay needs in the init frame beyond the common fields (`frame`, hearth.engine.lambda_env's
    init_frame, whose `env` already holds Lambda's variables): what to start, and how."""
    env = {**ENV_DEFAULTS, "GOMAXPROCS": gomaxprocs(spec.cpus), **frame["env"]}
    if image is None:
        command: list[str] = [f"{CODE_DIR}/{BOOTSTRAP}"]
        working_dir = CODE_DIR
    else:  # the image's entrypoint, in its working directory; its own handler and task root, as Lambda reads them
        command = list(image.command)
        working_dir = image.working_dir
        env["LAMBDA_TASK_ROOT"] = image.env.get("LAMBDA_TASK_ROOT") or working_dir
        env["_HANDLER"] = image.env.get("_HANDLER") or (command[-1] if command else "")
    return {
        "command": command,
        "working_dir": working_dir,
        "env": env,
        "function_arn": frame["invoked_function_arn"],
        "init_timeout_ms": int(max(INIT_TIMEOUT_S, min(spec.timeout_s, 60.0)) * 1000),
    }


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description="Build Hearth's relay for custom runtimes.").parse_args(argv)
    try:
        print(f"relay: {ensure_relay() / 'relay'}", flush=True)
    except ProvidedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
