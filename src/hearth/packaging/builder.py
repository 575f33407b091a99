"""Dependency layers: `pip install` / `npm install` into a directory per dependency list, in a sandbox.

A layer is `<layers root>/<key>/python/...` (pip's `--target`) or `<key>/node_modules/...`, built
in a staging directory and renamed into place only when complete, so a layer that exists is whole.
Builds of the same key wait for each other and the later ones find the layer built.

Every install runs in a throwaway container of the function's runtime's builder image
(hearth.packaging.sandbox): same Debian, same Python / Node as the runtime, no network but a proxy
to the package index, nothing of the host's. By default pip takes wheels only
(`--only-binary=:all:`) and npm skips install scripts; `allow_scripts` lifts both, for packages
that only ship sources: their code then runs in that sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from hearth.packaging.deps import LAYER_SUBDIR, NODE_LOCKFILES, Dependencies
from hearth.packaging.index_config import IndexConfig
from hearth.packaging.sandbox import MOUNT, PROXY_PORT, SCRATCH, BuildJob, BuildSandbox, SandboxFailed

LogSink = Callable[[str], None]
RuntimeVersion = Callable[[str], Awaitable[str]]
# runtime (`python3.13`, or a language for its default runtime) -> the image its dependencies are
# installed in, built first if missing (blocking: called in a thread); see images.builder_ref
BuilderImage = Callable[[str], str]


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
        sandbox: BuildSandbox,
        builder_image: BuilderImage,
        index: Callable[[], IndexConfig],
        *,
        allow_scripts: bool = False,
    ) -> None:
        self.root = root
        self.runtime_version = runtime_version
        self.sandbox = sandbox
        self.builder_image = builder_image
        self._index = index
        self._index_config: IndexConfig | None = None
        self.allow_scripts = allow_scripts
        self._locks: dict[str, asyncio.Lock] = {}
        root.mkdir(parents=True, exist_ok=True)

    def sweep(self) -> None:
        """At start: what builds cut off by a previous process left (staging directories, build directories)."""
        for leftover in self.root.glob(".build-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        self.sandbox.sweep()

    @property
    def policy(self) -> str:
        return "scripts" if self.allow_scripts else "no-scripts"

    def path(self, key: str) -> Path:
        return self.root / key

    async def index(self) -> IndexConfig:
        """The host's package index settings, read once (it asks the host's pip and npm)."""
        if self._index_config is None:
            self._index_config = await asyncio.to_thread(self._index)
        return self._index_config

    async def key_for(self, deps: Dependencies, runtime: str | None = None) -> tuple[str, str]:
        """(layer key, runtime version) of a dependency list for `runtime` (default: the language's)."""
        runtime = runtime or deps.language
        try:
            version = await self.runtime_version(runtime)
        except Exception as exc:
            raise BuildFailed(f"cannot tell the {runtime} runtime's version: {exc}") from None
        return deps.layer_key(version, self.policy), version

    async def ensure(
        self, deps: Dependencies, key: str, runtime_version: str, log: LogSink, runtime: str | None = None
    ) -> Layer:
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
                job = await self._job(deps, await self.index(), log, runtime or deps.language)
                log("$ " + shlex.join(job.command) + "\n")
                try:
                    tool = "pip" if deps.language == "python" else "npm"
                    await self.sandbox.run(job, log, dest=layer / LAYER_SUBDIR[deps.language], name=tool)
                except SandboxFailed as exc:
                    raise BuildFailed(str(exc)) from None
                await asyncio.to_thread(make_world_readable, layer)
                size, count = await asyncio.to_thread(tree_size, layer)
                layer.rename(target)
            finally:
                await asyncio.to_thread(shutil.rmtree, work, True)
            log(f"layer {key[:12]} built: {count} files, {size} bytes\n")
            return Layer(key, target, size, count, cached=False)

    async def _job(self, deps: Dependencies, index: IndexConfig, log: LogSink, runtime: str) -> BuildJob:
        try:
            image = await asyncio.to_thread(self.builder_image, runtime)
        except Exception as exc:
            raise BuildFailed(f"no builder image for {runtime}: {exc}") from None
        if deps.language in index.problems:
            raise BuildFailed(index.problems[deps.language])
        if index.dropped:
            log(f"not reachable from builds, left out of the host's index settings: {', '.join(index.dropped)}\n")
        hosts = index.hosts(deps.language)
        log(f"package index hosts reachable from the build: {', '.join(sorted(f'{h}:{p}' for h, p in hosts))}\n")
        if deps.language == "python":
            return self._pip_job(deps, index, image, hosts)
        return self._npm_job(deps, index, image, hosts)

    def _pip_job(self, deps: Dependencies, index: IndexConfig, image: str, hosts: set[tuple[str, int]]) -> BuildJob:
        output = f"{SCRATCH}/out/{LAYER_SUBDIR['python']}"
        command = [
            "pip",
            "install",
            "--target",
            output,
            "--requirement",
            f"{MOUNT}/files/requirements.txt",
            "--no-input",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--progress-bar",
            "off",
        ]
        if not self.allow_scripts:
            command.append("--only-binary=:all:")
        env = {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": index.pip_index_url, "PYTHONNOUSERSITE": "1"}
        if index.pip_extra_index_urls:
            env["PIP_EXTRA_INDEX_URL"] = " ".join(index.pip_extra_index_urls)
        if index.pip_find_links:
            env["PIP_FIND_LINKS"] = " ".join(index.pip_find_links)
        if index.pip_cert is not None:
            env["PIP_CERT"] = f"{MOUNT}/ca.pem"
        env.update({"PIP_" + key.upper().replace("-", "_"): value for key, value in index.pip_settings.items()})
        return BuildJob(
            image=image,
            command=["python3", "-m", *command],
            env=env,
            files=deps.files,
            hosts=hosts,
            ca_bundle=index.pip_cert,
            output=output,
        )

    def _npm_job(self, deps: Dependencies, index: IndexConfig, image: str, hosts: set[tuple[str, int]]) -> BuildJob:
        locked = any(name in deps.files for name in NODE_LOCKFILES)
        command = ["npm", "ci" if locked else "install", "--omit=dev", "--no-audit", "--no-fund", "--no-progress"]
        if not locked:
            command.append("--no-package-lock")
        if not self.allow_scripts:
            command.append("--ignore-scripts")
        home = f"{SCRATCH}/home"
        env = {
            "npm_config_registry": index.npm_registry,
            "npm_config_userconfig": f"{home}/.npmrc",
            "npm_config_globalconfig": f"{home}/.npmrc-global",
            "npm_config_cache": f"{home}/.npm",
            "npm_config_update_notifier": "false",
            "npm_config_https_proxy": f"http://127.0.0.1:{PROXY_PORT}",
            "npm_config_proxy": f"http://127.0.0.1:{PROXY_PORT}",
        }
        if index.npm_cafile is not None:
            env["npm_config_cafile"] = f"{MOUNT}/ca.pem"
        env.update({"npm_config_" + key.replace("-", "_"): value for key, value in index.npm_settings.items()})
        work = f"{SCRATCH}/work"
        return BuildJob(
            image=image,
            command=command,
            env=env,
            files=deps.files,
            hosts=hosts,
            ca_bundle=index.npm_cafile,
            copy=tuple(deps.files),
            workdir=work,
            output=f"{work}/node_modules",
        )
