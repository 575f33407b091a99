"""The container images of runtimes and of their dependency builders: `mmdebstrap ... | docker import`,
cached by recipe hash.

No registry is needed: an image is a minimal Debian (mmdebstrap's essential variant: no apt, but
`/bin/sh`, base-passwd's `nobody` (65534) and a 1777 `/tmp`) with the runtime's package installed,
built from the host's own apt sources and suite (hearth.images.debian). Agents are not baked in:
they are bind-mounted at run time. A builder image (role `builder`) adds the runtime's installer
(hearth.images.catalog.INSTALLERS); dependency builds run in it (hearth.packaging.sandbox).

The tag is a hash of the recipe (a plain dict, see `recipe()`), so changing the recipe builds a new
image and never reuses a stale one. `python -m hearth.images.containers [--runtime R] [--force]` builds.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors

from hearth.images import debian, locks
from hearth.images.catalog import BUILDER_RUNTIMES, RUNTIMES, runtime_image
from hearth.images.debian import ImageBuildError as ImageBuildError  # re-exported: what every image build raises
from hearth.images.debian import Progress as Progress

ROLES: tuple[str, ...] = ("runtime", "builder")
IMAGE_PREFIX = "hearth-runtime-"
BUILDER_PREFIX = "hearth-builder-"
RECIPE_VERSION = 3
CUSTOMIZE: tuple[str, ...] = debian.CLEAN
CHANGES: tuple[str, ...] = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
)
LOCK_DIR = Path(tempfile.gettempdir())


# ---------------------------------------------------------------------------------------------- recipe


def recipe(runtime: str, role: str = "runtime") -> dict[str, Any]:
    """Everything that determines the image's content; its hash is the tag."""
    image = runtime_image(runtime)
    if role not in ROLES:
        raise ValueError(f"unknown image role {role!r} (known: {', '.join(ROLES)})")
    if role == "builder" and not image.builds:
        raise ValueError(f"runtime {image.name!r} has no builder image (no dependency builds for it)")
    extra = {"role": role} if role != "runtime" else {}  # runtime images keep the tags they had
    return {
        **extra,
        "version": RECIPE_VERSION,
        "runtime": image.name,
        "suite": image.suite,
        "variant": "essential",
        "packages": list(image.packages if role == "runtime" else image.builder_packages),
        "path_exclude": list(debian.TRIMMED),
        "hooks": list(debian.HOOKS),
        "customize": [*CUSTOMIZE, *image.customize],
        "changes": list(CHANGES),
    }


def tag_for(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def ref_for(spec: dict[str, Any]) -> str:
    prefix = BUILDER_PREFIX if spec.get("role") == "builder" else IMAGE_PREFIX
    return f"{prefix}{spec['runtime']}:{tag_for(spec)}"


def image_ref(runtime: str, role: str = "runtime") -> str:
    """name:tag of `runtime`'s image (or its builder image) for the current recipe."""
    return ref_for(recipe(runtime, role))


def builder_ref(runtime: str) -> str:
    """name:tag of the image that installs `runtime`'s dependencies (see hearth.packaging.sandbox)."""
    return image_ref(runtime, "builder")


def ref_present(client: docker.DockerClient, ref: str) -> bool:
    return _image_id(client, ref) is not None


def _image_id(client: docker.DockerClient, ref: str) -> str | None:
    try:
        return client.images.get(ref).id
    except docker.errors.ImageNotFound:
        return None


def image_present(client: docker.DockerClient, runtime: str) -> bool:
    return ref_present(client, image_ref(runtime))


# ----------------------------------------------------------------------------------------------- build


def mmdebstrap_command(spec: dict[str, Any], sources: Path | None = None) -> list[str]:
    """The image's root as a tar on standard output."""
    return debian.mmdebstrap_command(
        suite=spec["suite"],
        variant=spec["variant"],
        packages=spec["packages"],
        hooks=spec["hooks"],
        path_exclude=spec["path_exclude"],
        customize=spec["customize"],
        output_format="tar",
        target="-",
        sources=sources or debian.sources_for(spec["suite"]),
    )


def _chunks(stream: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk


def _imported_id(result: str) -> str:
    """The image id from `POST /images/create?fromSrc=-`'s JSON-lines answer."""
    image_id = ""
    for line in result.splitlines():
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("error"):
            raise ImageBuildError(f"docker import failed: {message['error']}")
        status = str(message.get("status", ""))
        if status.startswith("sha256:"):
            image_id = status
    if not image_id:
        raise ImageBuildError(f"docker import gave no image id: {result[-500:]!r}")
    return image_id


def build_image(
    client: docker.DockerClient,
    runtime: str,
    progress: Progress | None = None,
    spec: dict[str, Any] | None = None,
    role: str = "runtime",
) -> str:
    """Build `runtime`'s image now (no cache check, no lock) and return its ref.

    mmdebstrap's tar is streamed straight into Docker as an untagged image, which is tagged only
    once mmdebstrap and the import both succeeded; otherwise it is removed: no half image remains.
    """
    say = progress or (lambda _line: None)
    spec = spec or recipe(runtime, role)
    runtime = str(spec["runtime"])
    ref = ref_for(spec)
    name, tag = ref.rsplit(":", 1)
    started = time.monotonic()

    def elapsed() -> str:
        return f"{time.monotonic() - started:5.1f}s"

    say(f"[{runtime}] building {ref} from Debian {spec['suite']} packages: {', '.join(spec['packages'])}")
    debian.ensure_host_tools(debian.HOST_TOOLS, say, "`make images` or `python -m hearth.images.containers`")
    command = mmdebstrap_command(spec)
    say(f"[{runtime}] {elapsed()} mmdebstrap (sources: {command[-1]})")
    tail: deque[str] = deque(maxlen=debian.TAIL_LINES)

    # A session (process group) of its own: when writing the tarball fails (say, Docker closed the
    # import), mmdebstrap sends SIGHUP to its whole process group, which would otherwise be ours.
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=debian.system_env(),
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr = proc.stderr

    def forward() -> None:
        for raw in stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                tail.append(line)
                say(f"[{runtime}] {elapsed()} {line}")

    reader = threading.Thread(target=forward, name=f"mmdebstrap-{runtime}", daemon=True)
    reader.start()
    image_id = ""
    import_error: BaseException | None = None
    try:
        # import_image_from_data, not import_image: the latter treats any non-path `src` as a URL.
        # A generator body is sent with chunked transfer encoding, as mmdebstrap writes it.
        result = client.api.import_image_from_data(
            _chunks(proc.stdout), changes=[*spec["changes"], f"LABEL hearth.runtime={runtime} hearth.recipe={tag}"]
        )
        image_id = _imported_id(result if isinstance(result, str) else json.dumps(result))
    except (docker.errors.DockerException, ImageBuildError, OSError) as exc:
        import_error = exc
        proc.terminate()  # no point finishing the bootstrap (it cleans up its tempdir on SIGTERM)
    except BaseException:  # KeyboardInterrupt and the like
        proc.terminate()
        raise
    finally:
        proc.stdout.close()  # an early import failure: mmdebstrap then stops on a broken pipe
        returncode = proc.wait()
        reader.join(timeout=10)

    if returncode != 0 or import_error is not None:
        if image_id:
            with contextlib.suppress(docker.errors.DockerException):
                client.api.remove_image(image_id, force=True, noprune=False)
        why = f"docker import failed: {import_error}" if import_error else f"mmdebstrap exited with {returncode}"
        raise ImageBuildError(f"building {ref} failed ({why}); last mmdebstrap output:\n" + "\n".join(tail))

    previous = _image_id(client, ref)
    client.api.tag(image_id, name, tag)
    if previous and previous != image_id:  # a forced rebuild: drop the old image unless a container uses it
        with contextlib.suppress(docker.errors.DockerException):
            client.api.remove_image(previous)
    size = client.images.get(ref).attrs.get("Size", 0)
    say(f"[{runtime}] {elapsed()} built {ref} ({size / 1e6:.0f} MB)")
    return ref


def _build_lock(runtime: str, role: str = "runtime") -> contextlib.AbstractContextManager[None]:
    """An exclusive lock per image, shared by every process on this host."""
    name = f"hearth-image-{runtime}.lock" if role == "runtime" else f"hearth-image-{runtime}-{role}.lock"
    return locks.exclusive(LOCK_DIR / name)


def ensure_image(
    client: docker.DockerClient, runtime: str, progress: Progress | None = None, role: str = "runtime"
) -> str:
    """`runtime`'s image ref, built first if missing; safe when several processes ask at once."""
    runtime = runtime_image(runtime).name
    ref = image_ref(runtime, role)
    if ref_present(client, ref):
        return ref
    say = progress or (lambda _line: None)
    with _build_lock(runtime, role):
        if ref_present(client, ref):  # built by whoever held the lock before us
            say(f"[{runtime}] {ref} was built by another process")
            return ref
        return build_image(client, runtime, progress, role=role)


def ensure_images(
    client: docker.DockerClient, runtimes: tuple[str, ...] = RUNTIMES, progress: Progress | None = None
) -> dict[str, str]:
    return {runtime: ensure_image(client, runtime, progress) for runtime in runtimes}


def ensure_builder_images(
    client: docker.DockerClient, runtimes: tuple[str, ...] = BUILDER_RUNTIMES, progress: Progress | None = None
) -> dict[str, str]:
    return {runtime: ensure_image(client, runtime, progress, role="builder") for runtime in runtimes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build Hearth's runtime and builder images from Debian packages.")
    parser.add_argument("--runtime", choices=RUNTIMES, action="append", help="only this runtime (repeatable)")
    parser.add_argument("--role", choices=ROLES, action="append", help="only runtime or builder images (repeatable)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    args = parser.parse_args(argv)
    runtimes = tuple(args.runtime or RUNTIMES)
    roles = tuple(args.role or ROLES)

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        print(f"error: no Docker daemon answers ({exc}); run scripts/ensure-docker.sh", file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        for role in roles:
            for runtime in runtimes:
                if role == "builder" and not runtime_image(runtime).builds:
                    continue
                if args.force:
                    with _build_lock(runtime, role):
                        ref = build_image(client, runtime, say, role=role)
                else:
                    ref = ensure_image(client, runtime, say, role=role)
                say(f"[{runtime}] {ref} ready")
    except ImageBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if len(runtimes) * len(roles) > 1:
        say(f"images ready in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
