"""Runtime images built from Debian's packages: `mmdebstrap ... | docker import`, cached by recipe hash.

No registry is needed: an image is a minimal Debian (mmdebstrap's essential variant: no apt, but
`/bin/sh`, base-passwd's `nobody` (65534) and a 1777 `/tmp`) with the runtime's package installed,
built from the host's own apt sources and suite (read at build time, so no mirror host name lives
in this repository). Agents are not baked in: they are bind-mounted at run time.

The tag is a hash of the recipe (a plain dict, see `recipe()`), so changing the recipe builds a new
image and never reuses a stale one. `python -m hearth.images.containers [--runtime R] [--force]` builds.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors

# The languages of Hearth's agents (hearth/runtimes/<language>), whose default runtimes keep stem cells
# from the start. `provided` (custom runtimes over the Lambda Runtime API, hearth.engine.provided) is a
# language of its own in the catalog too: its sandboxes run Hearth's relay instead of an agent.
LANGUAGES: tuple[str, ...] = ("python", "javascript")
PROVIDED = "provided"


@dataclass(frozen=True)
class RuntimeImage:
    """One runtime Hearth offers: Lambda's identifier, its language and the Debian suite it is built from.

    This is the one place that maps a runtime to what it is built from (image recipe, and the
    version a dependency layer is built for); `default_runtime` picks each language's default.
    """

    name: str  # Lambda's identifier: python3.11, nodejs20.x
    language: str  # python | javascript (the agent that runs it) | provided (the relay, hearth.engine.provided)
    suite: str  # the Debian release whose packages make the image
    packages: tuple[str, ...]
    aws_sdk: bool = False  # Node: the AWS SDK for JavaScript v3 layer is mounted (hearth.images.aws_sdk)
    customize: tuple[str, ...] = ()  # mmdebstrap customize hooks beyond the common ones (CUSTOMIZE)

    @property
    def builds(self) -> bool:
        """Whether dependencies are installed for this runtime (requirements.txt / package.json): not for provided."""
        return self.language in INSTALLERS

    @property
    def builder_packages(self) -> tuple[str, ...]:
        """The builder image's packages: the runtime's plus its installer (and python3 for the build's entry script)."""
        return (*self.packages, *INSTALLERS[self.language])


# Lambda's Python runtimes ship boto3; its Node runtimes from 18 ship the AWS SDK for JavaScript v3
# (not in Debian: a separate recipe-hashed layer, hearth.images.aws_sdk).
CATALOG: dict[str, RuntimeImage] = {
    image.name: image
    for image in (
        RuntimeImage("python3.11", "python", "bookworm", ("python3", "python3-boto3")),
        RuntimeImage("python3.13", "python", "trixie", ("python3", "python3-boto3")),
        RuntimeImage("nodejs18.x", "javascript", "bookworm", ("nodejs",), aws_sdk=True),
        RuntimeImage("nodejs20.x", "javascript", "trixie", ("nodejs",), aws_sdk=True),
        # Lambda's OS-only runtime: a `bootstrap` (or an image's entrypoint) serving the Runtime API.
        # curl for shell bootstraps such as AWS's tutorial; /bin/sh is bash as on Amazon Linux, whose
        # bootstraps use `source` and `set -o pipefail`.
        RuntimeImage(PROVIDED, PROVIDED, "bookworm", ("curl",), customize=('ln -sf bash "$1"/usr/bin/sh',)),
    )
}
RUNTIMES: tuple[str, ...] = tuple(CATALOG)
# Lambda's other names for a catalog runtime: accepted wherever a runtime is named, reported as what runs.
ALIASES: dict[str, str] = {"provided.al2023": PROVIDED, "provided.al2": PROVIDED}
# Dependency builds run in a builder image: the runtime's packages plus its installer, from the same
# suite, so wheels and native modules match the runtime. The node builder's python3 runs the build's
# entry script (hearth/packaging/build_entry.py).
INSTALLERS: dict[str, tuple[str, ...]] = {"python": ("python3-pip",), "javascript": ("npm", "python3")}
# The runtimes with a builder image (provided functions bring what they run: no dependency build).
BUILDER_RUNTIMES: tuple[str, ...] = tuple(name for name, image in CATALOG.items() if image.builds)
ROLES: tuple[str, ...] = ("runtime", "builder")
IMAGE_PREFIX = "hearth-runtime-"
BUILDER_PREFIX = "hearth-builder-"
RECIPE_VERSION = 3
# Dropped at unpack time by dpkg; nothing a runtime executes lives there.
TRIMMED: tuple[str, ...] = (
    "/usr/share/man/*",
    "/usr/share/locale/*",
    "/usr/share/doc/*",
    "/usr/share/info/*",
    "/usr/share/lintian/*",
)
HOOKS: tuple[str, ...] = ("eatmydata", "merged-usr")  # under /usr/share/mmdebstrap/hooks
CUSTOMIZE: tuple[str, ...] = (
    # The image carries no apt sources (and no mirror name): it is never updated in place.
    'rm -rf "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/* "$1"/var/lib/apt/lists/*',
    'rm -rf "$1"/var/cache/* "$1"/var/log/*',
)
CHANGES: tuple[str, ...] = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
)
HOOKS_DIR = Path("/usr/share/mmdebstrap/hooks")
OS_RELEASE = Path("/etc/os-release")
SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
# Host tools the build needs -> Debian package (dpkg-architecture is called by mmdebstrap's hooks).
HOST_TOOLS = {"mmdebstrap": "mmdebstrap", "eatmydata": "eatmydata", "dpkg-architecture": "dpkg-dev"}
LOCK_DIR = Path(tempfile.gettempdir())
# mmdebstrap's helpers (mmtarfilter, once per package) start with `#!/usr/bin/env python3`: the
# system's directories go first so that no pyenv shim or virtualenv python sits in their way.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TAIL_LINES = 40

Progress = Callable[[str], None]


class ImageBuildError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------- recipe


def host_suite() -> str:
    """The host's release code name (VERSION_CODENAME in /etc/os-release); bookworm if unknown."""
    try:
        text = OS_RELEASE.read_text()
    except OSError:
        return "bookworm"
    for line in text.splitlines():
        if line.startswith("VERSION_CODENAME="):
            value = line.split("=", 1)[1].strip().strip("\"'")
            if value:
                return value
    return "bookworm"


def _has_debian_sources(path: Path) -> bool:
    try:
        text = path.read_text()
    except OSError:
        return False
    if path.suffix == ".sources":
        return any(line.strip().startswith("URIs:") for line in text.splitlines())
    return any(line.split()[:1] == ["deb"] for line in text.splitlines())


def host_sources() -> Path:
    """The host's Debian apt sources file, given to mmdebstrap as its mirror argument.

    debian.sources (Debian 12's deb822 file), else sources.list, else another deb822 file with
    "debian" in its name (mmdebstrap-made systems call it 0000debian.sources).
    """
    candidates = [*SOURCES, *sorted(SOURCES[0].parent.glob("*debian*.sources"))]
    for path in candidates:
        if _has_debian_sources(path):
            return path
    raise ImageBuildError(f"no Debian apt sources found (looked at {', '.join(map(str, candidates))})")


def sources_for(suite: str) -> Path:
    """An apt sources file for `suite`: the host's own when it lists the suite, else one derived from it.

    The derived file keeps the host's main archive stanzas (same URIs, keyring and components) with
    `Suites: <suite>` (no -updates/-security: a snapshot mirror need not carry them for another release).
    """
    source = host_sources()
    text = source.read_text()
    if source.suffix != ".sources":
        lines = [line.split() for line in text.splitlines() if line.split()[:1] == ["deb"]]
        if any(suite in parts[2:3] for parts in lines):
            return source
        derived = [" ".join([*parts[:2], suite, *parts[3:]]) for parts in lines if "-" not in parts[2]]
        out = "\n".join(derived) + "\n"
    else:
        stanzas = [block for block in text.split("\n\n") if block.strip()]
        lines = [line for block in stanzas for line in block.splitlines()]
        listed = [line.split(":", 1)[1].split() for line in lines if line.startswith("Suites:")]
        if any(suite in names for names in listed):
            return source
        kept = []
        for block in stanzas:
            lines = [line for line in block.splitlines() if not line.startswith("#")]
            names = next((line.split(":", 1)[1].split() for line in lines if line.startswith("Suites:")), [])
            if any("-" not in name for name in names):
                kept.append("\n".join(f"Suites: {suite}" if line.startswith("Suites:") else line for line in lines))
        out = "\n\n".join(kept) + "\n"
    if not out.strip():
        raise ImageBuildError(f"cannot derive apt sources for {suite} from {source}")
    target = LOCK_DIR / f"hearth-{suite}-{hashlib.sha256(out.encode()).hexdigest()[:8]}{source.suffix or '.list'}"
    if not target.exists():
        target.write_text(out)
    return target


def default_runtime(language: str) -> str:
    """The runtime `language` means when no version is named: the one built from the host's suite, else the oldest."""
    if language in CATALOG or language in ALIASES:
        return ALIASES.get(language, language)
    offered = [image for image in CATALOG.values() if image.language == language]
    if not offered:
        raise ValueError(f"unknown language {language!r} (known: {', '.join((*LANGUAGES, PROVIDED))})")
    suite = host_suite()
    return next((image.name for image in offered if image.suite == suite), offered[0].name)


def runtime_image(runtime: str) -> RuntimeImage:
    """The catalog entry of a runtime identifier (`python3.13`) or of a language's default (`python`)."""
    try:
        return CATALOG[default_runtime(runtime) if runtime in LANGUAGES else ALIASES.get(runtime, runtime)]
    except KeyError:
        raise ValueError(f"unknown runtime {runtime!r} (known: {', '.join(RUNTIMES)})") from None


def language_of(runtime: str) -> str:
    return runtime_image(runtime).language


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
        "path_exclude": list(TRIMMED),
        "hooks": list(HOOKS),
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


def _present(client: docker.DockerClient, ref: str) -> bool:
    return _image_id(client, ref) is not None


def _image_id(client: docker.DockerClient, ref: str) -> str | None:
    try:
        return client.images.get(ref).id
    except docker.errors.ImageNotFound:
        return None


def image_present(client: docker.DockerClient, runtime: str) -> bool:
    return _present(client, image_ref(runtime))


# ----------------------------------------------------------------------------------------------- build


def mmdebstrap_command(spec: dict[str, Any], sources: Path | None = None) -> list[str]:
    command = [
        "mmdebstrap",
        "--mode=root",
        f"--variant={spec['variant']}",
        f"--include={','.join(spec['packages'])}",
    ]
    command += [f"--hook-directory={HOOKS_DIR / hook}" for hook in spec["hooks"]]
    command += [f"--dpkgopt=path-exclude={pattern}" for pattern in spec["path_exclude"]]
    command += [f"--customize-hook={hook}" for hook in spec["customize"]]
    command += ["--format=tar", spec["suite"], "-", str(sources or sources_for(spec["suite"]))]
    return command


def _system_env() -> dict[str, str]:
    path = os.environ.get("PATH", "")
    return {**os.environ, "PATH": f"{SYSTEM_PATH}:{path}" if path else SYSTEM_PATH, "DEBIAN_FRONTEND": "noninteractive"}


def _ensure_host_tools(say: Progress) -> None:
    """mmdebstrap and friends; installed with apt-get when missing and we are root."""
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building runtime images needs root (mmdebstrap --mode=root): run `make images` or "
            "`python -m hearth.images.containers` as root"
        )
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise ImageBuildError(f"missing build tools ({', '.join(missing)}) and no apt-get to install them")
    say(f"installing Debian packages for image builds: {' '.join(missing)}")
    env = _system_env()
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-TAIL_LINES:]
            raise ImageBuildError(f"`{' '.join(command)}` failed:\n" + "\n".join(tail))
    if still := [tool for tool in HOST_TOOLS if shutil.which(tool) is None]:
        raise ImageBuildError(f"still missing after install: {', '.join(still)}")


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
    _ensure_host_tools(say)
    command = mmdebstrap_command(spec)
    say(f"[{runtime}] {elapsed()} mmdebstrap (sources: {command[-1]})")
    tail: deque[str] = deque(maxlen=TAIL_LINES)

    # A session (process group) of its own: when writing the tarball fails (say, Docker closed the
    # import), mmdebstrap sends SIGHUP to its whole process group, which would otherwise be ours.
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_system_env(),
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


@contextlib.contextmanager
def _build_lock(runtime: str, role: str = "runtime") -> Iterator[None]:
    """An exclusive lock per image, shared by every process on this host (flock: freed on exit)."""
    path = LOCK_DIR / (f"hearth-image-{runtime}.lock" if role == "runtime" else f"hearth-image-{runtime}-{role}.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # created by another user: a read-only descriptor can still be flocked
        fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure_image(
    client: docker.DockerClient, runtime: str, progress: Progress | None = None, role: str = "runtime"
) -> str:
    """`runtime`'s image ref, built first if missing; safe when several processes ask at once."""
    runtime = runtime_image(runtime).name
    ref = image_ref(runtime, role)
    if _present(client, ref):
        return ref
    say = progress or (lambda _line: None)
    with _build_lock(runtime, role):
        if _present(client, ref):  # built by whoever held the lock before us
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
