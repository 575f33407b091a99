"""Dependency layers: `pip install` / `npm install` on the host into a directory per dependency list.

A layer is `<layers root>/<key>/python/...` (pip's `--target`) or `<key>/node_modules/...`, built
in a staging directory and renamed into place only when complete, so a layer that exists is whole.
Builds of the same key wait for each other and the later ones find the layer built.

By default nothing from a package runs on the host: pip takes wheels only (`--only-binary=:all:`,
for the runtime's Python version, which need not be the host's) and npm skips install scripts.
`allow_scripts` lifts both, for packages that only ship sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from hearth.packaging.deps import LAYER_SUBDIR, Dependencies

LogSink = Callable[[str], None]
RuntimeVersion = Callable[[str], Awaitable[str]]


class BuildFailed(Exception):
    """The install failed; the message is the short reason, the build's log has the rest."""


@dataclass(frozen=True)
class Layer:
    key: str
    path: Path
    bytes: int
    files: int
    cached: bool


def tree_size(root: Path) -> tuple[int, int]:
    total = count = 0
    for current, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(current, name)).st_size
                count += 1
    return total, count


def make_world_readable(root: Path) -> None:
    """Sandboxes run as nobody: directories 755, files 644 (755 if executable). Done once, at build."""
    for current, dirs, names in os.walk(root):
        os.chmod(current, 0o755)
        for name in names:
            path = os.path.join(current, name)
            with contextlib.suppress(OSError):
                if not os.path.islink(path):
                    os.chmod(path, 0o755 if os.stat(path).st_mode & 0o100 else 0o644)
        del dirs


class LayerBuilder:
    def __init__(
        self,
        root: Path,
        runtime_version: RuntimeVersion,
        *,
        timeout_s: float = 600.0,
        allow_scripts: bool = False,
    ) -> None:
        self.root = root
        self.runtime_version = runtime_version
        self.timeout_s = timeout_s
        self.allow_scripts = allow_scripts
        self._locks: dict[str, asyncio.Lock] = {}
        root.mkdir(parents=True, exist_ok=True)

    @property
    def policy(self) -> str:
        return "scripts" if self.allow_scripts else "no-scripts"

    def path(self, key: str) -> Path:
        return self.root / key

    async def key_for(self, deps: Dependencies) -> tuple[str, str]:
        """(layer key, runtime version) of a dependency list."""
        try:
            version = await self.runtime_version(deps.language)
        except Exception as exc:
            raise BuildFailed(f"cannot tell the {deps.language} runtime's version: {exc}") from None
        return deps.layer_key(version, self.policy), version

    async def ensure(self, deps: Dependencies, key: str, runtime_version: str, log: LogSink) -> Layer:
        """The layer for `key`: found on disk, or built now (raises BuildFailed)."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            target = self.path(key)
            if target.is_dir():
                log(f"layer {key[:12]} is already built: reusing it\n")
                size, count = await asyncio.to_thread(tree_size, target)
                return Layer(key, target, size, count, cached=True)
            work = Path(tempfile.mkdtemp(prefix=".build-", dir=self.root))
            try:
                layer = work / "layer"
                layer.mkdir()
                for name, content in deps.files.items():
                    (work / name).write_bytes(content)
                if deps.language == "python":
                    await self._pip(work, layer, runtime_version, log)
                else:
                    await self._npm(work, layer, log)
                await asyncio.to_thread(make_world_readable, layer)
                size, count = await asyncio.to_thread(tree_size, layer)
                layer.rename(target)
            finally:
                await asyncio.to_thread(shutil.rmtree, work, True)
            log(f"layer {key[:12]} built: {count} files, {size} bytes\n")
            return Layer(key, target, size, count, cached=False)

    async def _pip(self, work: Path, layer: Path, runtime_version: str, log: LogSink) -> None:
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--target",
            str((layer / LAYER_SUBDIR["python"]).relative_to(work)),
            "--requirement",
            "requirements.txt",
            "--no-input",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--progress-bar",
            "off",
        ]
        if not self.allow_scripts:
            command += ["--only-binary=:all:", "--python-version", runtime_version]
        elif runtime_version != f"{sys.version_info[0]}.{sys.version_info[1]}":
            raise BuildFailed(
                f"source builds need the host's Python to match the runtime's ({runtime_version}); "
                f"the host runs {sys.version_info[0]}.{sys.version_info[1]}"
            )
        await self._run(command, work, log, "pip")

    async def _npm(self, work: Path, layer: Path, log: LogSink) -> None:
        npm = shutil.which("npm")
        if npm is None:
            raise BuildFailed("npm is not installed on the Hearth host (Debian: apt-get install npm)")
        locked = any((work / name).exists() for name in ("package-lock.json", "npm-shrinkwrap.json"))
        command = [npm, "ci" if locked else "install", "--omit=dev", "--no-audit", "--no-fund", "--no-progress"]
        if not locked:
            command.append("--no-package-lock")
        if not self.allow_scripts:
            command.append("--ignore-scripts")
        await self._run(command, work, log, "npm")
        modules = work / "node_modules"
        if not modules.is_dir():  # dependencies that resolve to nothing still give a usable (empty) layer
            modules.mkdir()
        modules.rename(layer / LAYER_SUBDIR["javascript"])

    async def _run(self, command: list[str], cwd: Path, log: LogSink, tool: str) -> None:
        shown = [Path(command[0]).name, *command[1:]]  # runs in the build's work dir: paths are relative
        log("$ " + shlex.join(shown) + "\n")
        env = {**os.environ, "PYTHONNOUSERSITE": "1", "npm_config_update_notifier": "false"}
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: a timeout kills the whole install
            )
        except OSError as exc:
            raise BuildFailed(f"cannot start {tool}: {exc}") from None
        assert proc.stdout is not None
        last_error: str | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                while line := await proc.stdout.readline():
                    text = line.decode("utf-8", errors="replace")
                    log(text)
                    if text.startswith(("ERROR:", "npm ERR!", "npm error")):
                        last_error = last_error or text.strip()
                code = await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise BuildFailed(f"{tool} did not finish within {self.timeout_s:g} s") from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        if code != 0:
            reason = f": {last_error}" if last_error else ""
            raise BuildFailed(f"{tool} failed with exit code {code}{reason}")
