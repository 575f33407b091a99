"""What every image build shares: the host's Debian apt sources and suite, mmdebstrap's command line and the
host tools it needs.

Nothing names a mirror: mmdebstrap is given the host's own apt sources file (or one derived from it
for another suite), read at build time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

Progress = Callable[[str], None]

# Dropped at unpack time by dpkg; nothing a runtime executes lives there.
TRIMMED: tuple[str, ...] = (
    "/usr/share/man/*",
    "/usr/share/locale/*",
    "/usr/share/doc/*",
    "/usr/share/info/*",
    "/usr/share/lintian/*",
)
HOOKS: tuple[str, ...] = ("eatmydata", "merged-usr")  # under /usr/share/mmdebstrap/hooks
HOOKS_DIR = Path("/usr/share/mmdebstrap/hooks")
# Customize hooks of every image: it carries no apt sources (and no mirror name), so it is never
# updated in place, and no caches or logs.
CLEAN: tuple[str, ...] = (
    'rm -rf "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/* "$1"/var/lib/apt/lists/*',
    'rm -rf "$1"/var/cache/* "$1"/var/log/*',
)
OS_RELEASE = Path("/etc/os-release")
SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
# Host tools every build needs -> Debian package (dpkg-architecture is called by mmdebstrap's hooks).
HOST_TOOLS: dict[str, str] = {"mmdebstrap": "mmdebstrap", "eatmydata": "eatmydata", "dpkg-architecture": "dpkg-dev"}
DERIVED_SOURCES_DIR = Path(tempfile.gettempdir())
# mmdebstrap's helpers (mmtarfilter, once per package) start with `#!/usr/bin/env python3`: the
# system's directories go first so that no pyenv shim or virtualenv python sits in their way.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TAIL_LINES = 40


class ImageBuildError(RuntimeError):
    pass


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
    digest = hashlib.sha256(out.encode()).hexdigest()[:8]
    target = DERIVED_SOURCES_DIR / f"hearth-{suite}-{digest}{source.suffix or '.list'}"
    if not target.exists():
        target.write_text(out)
    return target


def mmdebstrap_command(
    *,
    suite: str,
    variant: str,
    packages: Iterable[str],
    output_format: str,
    target: str,
    sources: Path,
    hooks: Iterable[str] = (),
    path_exclude: Iterable[str] = (),
    customize: Iterable[str] = (),
) -> list[str]:
    """mmdebstrap as root, writing `target` (`-`: standard output) in `output_format` (tar, directory)."""
    command = ["mmdebstrap", "--mode=root", f"--variant={variant}", f"--include={','.join(packages)}"]
    command += [f"--hook-directory={HOOKS_DIR / hook}" for hook in hooks]
    command += [f"--dpkgopt=path-exclude={pattern}" for pattern in path_exclude]
    command += [f"--customize-hook={hook}" for hook in customize]
    command += [f"--format={output_format}", suite, target, str(sources)]
    return command


def system_env() -> dict[str, str]:
    path = os.environ.get("PATH", "")
    return {**os.environ, "PATH": f"{SYSTEM_PATH}:{path}" if path else SYSTEM_PATH, "DEBIAN_FRONTEND": "noninteractive"}


def which(tool: str) -> str | None:
    return shutil.which(tool, path=system_env()["PATH"])


def ensure_host_tools(tools: Mapping[str, str], say: Progress, how_to_run: str) -> None:
    """mmdebstrap and friends (`tools`: tool -> Debian package); installed with apt-get when missing.

    Builds run mmdebstrap --mode=root: `how_to_run` tells a user who is not root what to run as root.
    """
    if os.geteuid() != 0:
        raise ImageBuildError(f"building images needs root (mmdebstrap --mode=root): run {how_to_run} as root")
    missing = sorted({pkg for tool, pkg in tools.items() if which(tool) is None})
    if not missing:
        return
    if which("apt-get") is None:
        raise ImageBuildError(f"missing build tools ({', '.join(missing)}) and no apt-get to install them")
    say(f"installing Debian packages for image builds: {' '.join(missing)}")
    env = system_env()
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-TAIL_LINES:]
            raise ImageBuildError(f"`{' '.join(command)}` failed:\n" + "\n".join(tail))
    if still := [tool for tool in tools if which(tool) is None]:
        raise ImageBuildError(f"still missing after install: {', '.join(still)}")
