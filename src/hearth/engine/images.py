"""Runtime images built from Debian's packages: `mmdebstrap ... | docker import`, cached by recipe hash.

No registry is needed: the image is a minimal Debian (essential variant) with the runtime's package
installed, built from the host's own apt sources (read at build time, so no mirror host name lives
in this repository). Agents are not baked in: they are bind-mounted at run time.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors

RUNTIMES: tuple[str, ...] = ("python", "javascript")
PACKAGES = {"python": ["python3"], "javascript": ["nodejs"]}
RECIPE_VERSION = 1
TRIMMED = ["/usr/share/man/*", "/usr/share/locale/*", "/usr/share/doc/*", "/usr/share/info/*", "/usr/share/lintian/*"]
HOOKS = Path("/usr/share/mmdebstrap/hooks")
LOCK_PATH = Path(tempfile.gettempdir()) / "hearth-image-build.lock"
Progress = Callable[[str], None]


class ImageBuildError(RuntimeError):
    pass


def host_suite() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return "bookworm"


def host_sources() -> Path:
    """The host's apt sources, passed to mmdebstrap as its mirror argument."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.exists():
        return deb822
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists() and legacy.read_text().strip():
        return legacy
    raise ImageBuildError("no apt sources found (/etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list)")


def recipe(runtime: str) -> dict[str, Any]:
    if runtime not in PACKAGES:
        raise ValueError(f"unknown runtime {runtime!r} (known: {', '.join(RUNTIMES)})")
    return {
        "version": RECIPE_VERSION,
        "suite": host_suite(),
        "variant": "essential",
        "packages": PACKAGES[runtime],
        "trimmed": TRIMMED,
        "hooks": ["eatmydata", "merged-usr"],
    }


def tag_for(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def image_ref(runtime: str) -> str:
    return f"hearth-runtime-{runtime}:{tag_for(recipe(runtime))}"


def image_present(client: docker.DockerClient, runtime: str) -> bool:
    try:
        client.images.get(image_ref(runtime))
        return True
    except docker.errors.ImageNotFound:
        return False


def _mmdebstrap_command(spec: dict[str, Any]) -> list[str]:
    if shutil.which("mmdebstrap") is None:
        raise ImageBuildError("mmdebstrap is not installed: run `bash scripts/install-system.sh` as root")
    command = [
        "mmdebstrap",
        "--mode=root",
        f"--variant={spec['variant']}",
        f"--include={','.join(spec['packages'])}",
        "--customize-hook=rm -rf $1/etc/apt/sources.list $1/etc/apt/sources.list.d/* $1/var/lib/apt/lists/*",
        "--customize-hook=rm -rf $1/var/cache/* $1/var/log/*",
    ]
    for hook in spec["hooks"]:
        if (HOOKS / hook).is_dir():
            command.append(f"--hook-directory={HOOKS / hook}")
    for pattern in spec["trimmed"]:
        command.append(f"--dpkgopt=path-exclude={pattern}")
    command += ["--format=tar", spec["suite"], "-", str(host_sources())]
    return command


def build_image(client: docker.DockerClient, runtime: str, progress: Progress | None = None) -> str:
    """Build the image for `runtime` now (no cache check); returns its ref."""
    say = progress or (lambda _line: None)
    spec = recipe(runtime)
    ref = image_ref(runtime)
    name, tag = ref.split(":")
    started = time.monotonic()
    say(f"[{runtime}] building {ref} from Debian packages: {', '.join(spec['packages'])}")
    tail: deque[str] = deque(maxlen=30)
    with tempfile.TemporaryDirectory(prefix="hearth-image-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        with open(tarball, "wb") as out:
            proc = subprocess.Popen(_mmdebstrap_command(spec), stdout=out, stderr=subprocess.PIPE, text=True)
            assert proc.stderr is not None
            for line in proc.stderr:
                line = line.rstrip()
                tail.append(line)
                if line.startswith("I:"):
                    say(f"[{runtime}] {time.monotonic() - started:5.1f}s {line[2:].strip()}")
            if proc.wait() != 0:
                raise ImageBuildError(f"mmdebstrap failed for {runtime}:\n" + "\n".join(tail))
        say(
            f"[{runtime}] {time.monotonic() - started:5.1f}s importing into Docker ({tarball.stat().st_size >> 20} MiB)"
        )
        with open(tarball, "rb") as data:
            client.api.import_image_from_data(
                data.read(),
                repository=name,
                tag=tag,
                changes=[
                    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "ENV LANG=C.UTF-8",
                    f"LABEL hearth.runtime={runtime} hearth.recipe={tag}",
                ],
            )
    if not image_present(client, runtime):
        raise ImageBuildError(f"docker import did not produce {ref}")
    say(f"[{runtime}] built {ref} in {time.monotonic() - started:.1f}s")
    return ref


def ensure_image(client: docker.DockerClient, runtime: str, progress: Progress | None = None) -> str:
    """The image for `runtime`, built first if missing; safe when several processes ask at once."""
    if image_present(client, runtime):
        return image_ref(runtime)
    with open(LOCK_PATH, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image_present(client, runtime):  # built by whoever held the lock before us
            return image_ref(runtime)
        return build_image(client, runtime, progress)


def ensure_images(
    client: docker.DockerClient, runtimes: tuple[str, ...] = RUNTIMES, progress: Progress | None = None
) -> dict[str, str]:
    return {runtime: ensure_image(client, runtime, progress) for runtime in runtimes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build Hearth's runtime images from Debian packages.")
    parser.add_argument("--runtime", choices=RUNTIMES, action="append", help="only this runtime (repeatable)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    args = parser.parse_args(argv)
    runtimes = tuple(args.runtime or RUNTIMES)
    client = docker.from_env()

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        for runtime in runtimes:
            if args.force:
                build_image(client, runtime, say)
            else:
                ref = ensure_image(client, runtime, say)
                say(f"[{runtime}] {ref} ready")
    except ImageBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
