"""`hearth deploy` of a `provided` function written in Go: build its `bootstrap` in a throwaway container.

A `provided` directory with a `go.mod` and no `bootstrap` is Go source (`hearth init NAME -l provided
--template go`). Compiling it is running the user's input, so it is not done on the host: the host's
Go toolchain (Debian's golang-go) is bind-mounted read-only into a container of Hearth's `provided`
base image, with no network, a read-only root, no capabilities, an unprivileged user and the source
read-only; `go build` writes the static `bootstrap` (CGO_ENABLED=0) into an output directory, and
the CLI adds it to the bundle it uploads. The compile cache is kept between builds under
~/.cache/hearth/go-build (a cold one recompiles the standard library: tens of seconds).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from rich.markup import escape

from hearth.commands.common import UsageError, err

GO_MOD = "go.mod"
LANGUAGE, BOOTSTRAP = "provided", "bootstrap"  # as hearth.engine.provided names them (imported only to build)
SANDBOX_UID = 65534  # the build's user when the CLI runs as root (otherwise the caller's own uid)
BUILD_FLAGS = ("-trimpath", "-ldflags=-s -w")
MEMORY = "1g"
PIDS = "256"


def needs_go_build(settings: dict[str, object], files: dict[str, bytes]) -> bool:
    return settings.get("language") == LANGUAGE and GO_MOD in files and BOOTSTRAP not in files


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hearth" / "go-build"


def toolchain_mounts(go: str) -> list[str]:
    """`-v` options that put the host's GOROOT, and what its symlinks point to (Debian links src/ and
    pkg/include/ into /usr/share/go-X), at the same paths in the container, read-only."""
    done = subprocess.run([go, "env", "GOROOT"], capture_output=True, text=True, check=False)
    goroot = Path(done.stdout.strip()).resolve()
    if done.returncode != 0 or not (goroot / "bin" / "go").exists():
        raise UsageError(f"cannot find the Go toolchain's GOROOT ({go} env GOROOT: {done.stderr.strip()})")
    roots = {goroot}
    for current, dirs, names in os.walk(goroot):  # ~600 entries
        for entry in (Path(current) / name for name in (*dirs, *names)):
            target = entry.resolve()
            if entry.is_symlink() and not target.is_relative_to(goroot):
                roots.add(target)
    return [option for root in sorted(roots) for option in ("-v", f"{root}:{root}:ro")]


def _owned_by(path: Path, uid: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:
        os.chown(path, uid, uid)
    return path


def build_go_bootstrap(directory: Path, quiet: bool) -> bytes:
    """`go build` of `directory` in a throwaway sandbox container; the static `bootstrap` it made."""
    docker, go = shutil.which("docker"), shutil.which("go")
    if docker is None:
        raise UsageError(f"{directory / GO_MOD}: building a Go bootstrap needs the `docker` command")
    if go is None:
        raise UsageError(f"{directory / GO_MOD}: building a Go bootstrap needs Go (Debian's golang-go)")
    from hearth.images.provided import base_ref  # the docker SDK and the image recipes: only for this build

    image = base_ref()
    if subprocess.run([docker, "image", "inspect", image], capture_output=True, check=False).returncode != 0:
        raise UsageError(
            f"the Go build runs in Hearth's {image} image, which is not in the local Docker engine: "
            "build it with `python -m hearth.engine.provided --image provided` (or `make images`)"
        )
    uid = SANDBOX_UID if os.getuid() == 0 else os.getuid()
    gid = SANDBOX_UID if os.getuid() == 0 else os.getgid()
    cache = _owned_by(cache_dir(), uid)
    with tempfile.TemporaryDirectory(prefix="hearth-go-") as scratch:
        out = _owned_by(Path(scratch) / "out", uid)
        command = [
            docker, "run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges:true", "--user", f"{uid}:{gid}",
            "--memory", MEMORY, "--pids-limit", PIDS, "--tmpfs", "/tmp:rw,exec,size=512m",
            *toolchain_mounts(go),
            "-v", f"{directory.resolve()}:/src:ro", "-v", f"{out}:/out", "-v", f"{cache}:/cache",
            "-w", "/src", "-e", "CGO_ENABLED=0", "-e", "GOFLAGS=-mod=mod", "-e", "GOPROXY=off",
            "-e", "GOCACHE=/cache", "-e", "GOPATH=/tmp/go", "-e", "HOME=/tmp", "-e", "GOTOOLCHAIN=local",
            image, go_path(go), "build", *BUILD_FLAGS, "-o", "/out/bootstrap", ".",
        ]  # fmt: skip
        err.print(f"Building [bold]bootstrap[/bold] from {escape(str(directory / GO_MOD))} (sandboxed, no network)")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        output = (done.stdout + done.stderr).strip().splitlines()
        if not quiet or done.returncode != 0:
            for line in output[-40:]:
                err.print(f"  [dim]{escape(line)}[/dim]")
        if done.returncode != 0:
            raise UsageError(f"go build of {directory} failed (exit {done.returncode})")
        return (out / "bootstrap").read_bytes()


def go_path(go: str) -> str:
    """The go command inside GOROOT (/usr/bin/go is a symlink the container does not have)."""
    return str(Path(go).resolve())
