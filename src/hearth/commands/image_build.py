"""`hearth deploy` of a directory holding a Dockerfile: build the function's image with the local Docker engine.

The build is the user's code running, so it runs with no network (`docker build --network none`), in
Docker's builder containers rather than on the host: a Dockerfile can COPY what the directory holds and
RUN what its base image has, but cannot download. The image is tagged `hearth-fn-NAME:HASH`, HASH the
hash of the directory's files, and the function is deployed with `image` set to that tag; the server
checks it (present, not USER root) and records its id. The Docker engine must be the one Hearth uses
(the same host).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from rich.markup import escape

from hearth.commands.common import UsageError, err

DOCKERFILE = "Dockerfile"


def has_dockerfile(directory: Path) -> bool:
    return (directory / DOCKERFILE).is_file()


def image_tag(name: str, files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return f"hearth-fn-{name}:{digest.hexdigest()[:12]}"


def build_function_image(directory: Path, name: str, files: dict[str, bytes], quiet: bool) -> str:
    """`docker build --network none -t hearth-fn-NAME:HASH DIR`; returns the tag."""
    docker = shutil.which("docker")
    if docker is None:
        raise UsageError(f"{directory / DOCKERFILE} needs the `docker` command to build the function's image")
    tag = image_tag(name, files)
    err.print(f"Building image [bold]{escape(tag)}[/bold] from {DOCKERFILE} (no network)")
    command = [docker, "build", "--network", "none", "-t", tag, str(directory)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    output = (done.stdout + done.stderr).strip().splitlines()
    if not quiet or done.returncode != 0:
        for line in output[-40:] if done.returncode != 0 else output:
            err.print(f"  [dim]{escape(line)}[/dim]")
    if done.returncode != 0:
        raise UsageError(f"docker build of {directory} failed (exit {done.returncode})")
    return tag
