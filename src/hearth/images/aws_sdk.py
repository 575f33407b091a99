"""The AWS SDK for JavaScript v3 that Node sandboxes see, as Lambda's nodejs18.x and later runtimes ship it.

Not in Debian: the pinned packages below are installed from npm once, inside a container of a
builder image (Debian's nodejs and npm, built like the runtime images, hearth.images.containers), into
a directory named after the recipe's hash. The Docker backend bind-mounts its `node_modules`
read-only at `/node_modules` of Node sandboxes: both `require()` and ES modules' `import` (which
ignores NODE_PATH) find it from the function's directory, after the function's own node_modules and
its dependency layer, as on Lambda. `python -m hearth.images.aws_sdk` builds it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors

from hearth.images import catalog, containers, locks

# One version for every client: each @aws-sdk release ships them together. 3.893.0 still supports
# Node 18 (engines: node >= 18); later releases need Node 20.
SDK_VERSION = "3.893.0"
CLIENTS: tuple[str, ...] = (
    "client-s3",
    "client-dynamodb",
    "lib-dynamodb",
    "client-sqs",
    "client-sns",
    "client-lambda",
)
PACKAGES: tuple[str, ...] = tuple(f"@aws-sdk/{name}@{SDK_VERSION}" for name in CLIENTS)
MOUNT_POINT = "/node_modules"
# npm in the builder trusts what the host trusts (a TLS-inspecting proxy's CA, say): the host's CA bundle.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILDER_CA_BUNDLE = "/etc/hearth-host-ca.crt"
COMPLETE = ".complete"

Progress = containers.Progress


class SdkBuildError(RuntimeError):
    pass


def builder_spec() -> dict[str, Any]:
    """The image npm runs in: the default Node runtime's builder image (its packages plus Debian's npm)."""
    return containers.recipe(catalog.default_runtime("javascript"), "builder")


def recipe() -> dict[str, Any]:
    return {
        "version": 1,
        "packages": list(PACKAGES),
        "builder": containers.ref_for(builder_spec()),
        "npm": ["install", "--ignore-scripts", "--omit=dev", "--no-audit", "--no-fund"],
    }


def key() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:12]


def cache_dir() -> Path:
    configured = os.environ.get("HEARTH_AWS_SDK_DIR")
    if configured:
        return Path(configured).expanduser()
    if os.geteuid() == 0:
        return Path("/var/cache/hearth/aws-sdk")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hearth" / "aws-sdk"


def layer_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / key()


def find_layer(cache: Path | None = None) -> Path | None:
    """The `node_modules` directory of the current recipe's SDK, if it is built."""
    target = layer_dir(cache)
    if (target / COMPLETE).exists() and (target / "node_modules").is_dir():
        return target / "node_modules"
    return None


def _ensure_builder(client: docker.DockerClient, say: Progress) -> str:
    return containers.ensure_image(client, catalog.default_runtime("javascript"), say, role="builder")


def ensure_layer(client: docker.DockerClient, progress: Progress | None = None, cache: Path | None = None) -> Path:
    """The SDK's `node_modules`, installed now if missing (npm runs in a container with the host's network)."""
    say = progress or (lambda _line: None)
    cache = cache or cache_dir()
    if (found := find_layer(cache)) is not None:
        return found
    with locks.exclusive(cache / ".lock"):
        if (found := find_layer(cache)) is not None:
            return found
        started = time.monotonic()
        builder = _ensure_builder(client, say)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        os.chmod(work, 0o755)
        say(f"[aws-sdk] npm install {' '.join(PACKAGES)} in {builder}")
        try:
            command = ["npm", *recipe()["npm"], "--prefix", "/out", *PACKAGES]
            environment = {"HOME": "/tmp", "npm_config_cache": "/tmp/.npm", "npm_config_update_notifier": "false"}
            volumes = {str(work): {"bind": "/out", "mode": "rw"}}
            if HOST_CA_BUNDLE.is_file():
                volumes[str(HOST_CA_BUNDLE)] = {"bind": BUILDER_CA_BUNDLE, "mode": "ro"}
                environment["npm_config_cafile"] = BUILDER_CA_BUNDLE
            try:
                output = client.containers.run(
                    builder,
                    command,
                    remove=True,
                    network_mode="host",
                    environment=environment,
                    volumes=volumes,
                    tmpfs={"/tmp": "rw,size=512m"},
                    labels={"hearth.probe": "aws-sdk-build"},
                    stderr=True,
                )
            except docker.errors.ContainerError as exc:
                tail = (exc.stderr or b"").decode(errors="replace")[-2000:]
                raise SdkBuildError(f"npm install of the AWS SDK failed (exit {exc.exit_status}):\n{tail}") from None
            say(f"[aws-sdk] {output.decode(errors='replace').strip()[-500:]}")
            for root, dirs, files in os.walk(work):
                for name in dirs:
                    os.chmod(os.path.join(root, name), 0o755)
                for name in files:
                    path = os.path.join(root, name)
                    if not os.path.islink(path):
                        os.chmod(path, 0o755 if os.stat(path).st_mode & 0o100 else 0o644)
            (work / COMPLETE).write_text(json.dumps(recipe(), indent=1))
            target = layer_dir(cache)
            if target.exists():
                shutil.rmtree(target)
            work.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        say(f"[aws-sdk] ready in {time.monotonic() - started:.1f}s: {target}")
        return target / "node_modules"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install the AWS SDK for JavaScript v3 that Node sandboxes see.")
    parser.parse_args(argv)
    try:
        client = docker.from_env()
        client.ping()
        print(ensure_layer(client, lambda line: print(line, flush=True)))
    except (docker.errors.DockerException, SdkBuildError, containers.ImageBuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
