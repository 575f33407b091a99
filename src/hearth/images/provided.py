"""The `provided` base images for custom runtimes, from Debian packages like the other runtime images.

`provided` is the runtime catalog's entry (hearth.images.catalog.CATALOG: the minimal image for
bootstraps and static binaries); `provided-python` is python3 with libstdc++ for Python runtime
clients such as awslambdaric in users' own Dockerfiles (FROM it), not a runtime of its own. The
relay these sandboxes run is built by hearth.engine.provided. `python -m hearth.images.provided`
builds both base images.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import docker
import docker.errors

from hearth.images import containers, locks
from hearth.images.catalog import PROVIDED
from hearth.images.debian import ImageBuildError, Progress

EXTRA_BASES: dict[str, tuple[str, ...]] = {"provided-python": ("python3", "libstdc++6", "curl")}
BASE_IMAGES: tuple[str, ...] = (PROVIDED, *EXTRA_BASES)


def base_recipe(name: str) -> dict[str, Any]:
    """The recipe of a `provided` base image: the catalog's `provided` recipe, with other packages for the others."""
    if name not in BASE_IMAGES:
        raise ValueError(f"unknown base image {name!r} (known: {', '.join(BASE_IMAGES)})")
    recipe = containers.recipe(PROVIDED)
    if name != PROVIDED:
        recipe |= {"runtime": name, "packages": list(EXTRA_BASES[name])}
    return recipe


def base_ref(name: str = PROVIDED) -> str:
    return containers.ref_for(base_recipe(name))


def ensure_base_image(client: docker.DockerClient, name: str = PROVIDED, progress: Progress | None = None) -> str:
    if name == PROVIDED:  # the catalog's runtime image, under the catalog's lock
        return containers.ensure_image(client, PROVIDED, progress)
    ref = base_ref(name)
    if containers.ref_present(client, ref):
        return ref
    with locks.exclusive(containers.LOCK_DIR / f"hearth-image-{name}.lock"):
        if containers.ref_present(client, ref):
            return ref
        return containers.build_image(client, name, progress, spec=base_recipe(name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the provided base images.")
    parser.add_argument("--image", choices=list(BASE_IMAGES), action="append", help="only this base image")
    args = parser.parse_args(argv)
    try:
        client = docker.from_env()
        for name in args.image or list(BASE_IMAGES):
            print(f"{name}: {ensure_base_image(client, name, lambda line: print(line, flush=True))}", flush=True)
    except (ImageBuildError, docker.errors.DockerException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
