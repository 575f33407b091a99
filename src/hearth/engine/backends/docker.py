"""Docker containers as sandboxes (runc by default; gVisor's runsc is the same backend with another runtime).

Each sandbox gets a host directory, bind-mounted read-only at /hearth, holding the listening Unix
socket the agent connects to and the function's code. Docker API calls happen only on start, stop
and failure paths, never per invocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import LogConfig

from hearth.engine import provided
from hearth.engine.agent_sandbox import AgentSandbox, SandboxHost
from hearth.engine.backends.scheduling import batch_peer
from hearth.engine.channel import AgentChannel
from hearth.engine.sandbox import (
    Backend,
    FunctionSpec,
    Limits,
    Purpose,
    Runtime,
    Sandbox,
    SandboxCrashed,
    SandboxOutOfMemory,
    SandboxStartError,
    SandboxStats,
)
from hearth.images import aws_sdk, catalog, containers

log = logging.getLogger(__name__)
SANDBOX_UID = SANDBOX_GID = 65534  # nobody:nogroup, what every sandbox runs as


def sandbox_only_directory(path: Path) -> None:
    """Make `path` (a sandbox's code and agent socket) reachable by root and the sandbox's group only.

    The agent socket must be connectable by uid 65534 in the container, so it is 0666; mode 0750 and
    group nogroup on its directory keep other local users from connecting to it before the agent does
    (and from reading the function's code). Without root (no chown to another group) it stays 0755.
    """
    path.mkdir(mode=0o750)
    try:
        os.chown(path, -1, SANDBOX_GID)
        os.chmod(path, 0o750)
    except PermissionError:
        os.chmod(path, 0o755)
RUNTIMES_DIR = Path(__file__).resolve().parents[2] / "runtimes"
AGENT_COMMANDS: dict[str, list[str]] = {
    "python": ["python3", "-I", "/opt/hearth/python/agent.py"],
    "javascript": ["node", "/opt/hearth/javascript/agent.js"],
}
CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
RUNTIMES_RECHECK_S = 5.0


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def oom_kills(container_id: str) -> int | None:
    """How many processes the kernel's OOM killer ended in the container's memory cgroup (None: cgroup gone)."""
    try:
        text = (CGROUP_ROOT / "memory" / "docker" / container_id / "memory.oom_control").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None


def _write_cgroup_limits(container_id: str, limits: Limits) -> None:
    memory_dir = CGROUP_ROOT / "memory" / "docker" / container_id
    target = limits.memory_mb * 1024 * 1024
    current = _read_int(memory_dir / "memory.limit_in_bytes")
    if current is None:
        raise FileNotFoundError(memory_dir)
    # memory.memsw.limit (memory + swap) may never be below memory.limit: raise it first, lower it last.
    files = ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    for name in files if target > current else reversed(files):
        (memory_dir / name).write_text(str(target))
    quota = CGROUP_ROOT / "cpu" / "docker" / container_id / "cpu.cfs_quota_us"
    quota.write_text(str(int(limits.cpus * CPU_PERIOD_US)))


def container_labels(purpose: Purpose) -> dict[str, str]:
    """What `docker ps` shows about a sandbox's purpose (Hearth itself reads only hearth.owner and hearth.backend)."""
    labels = {"hearth.function": purpose.function or ""}
    if purpose.version is not None:
        labels["hearth.version"] = str(purpose.version)
    if purpose.image:
        labels["hearth.image"] = purpose.image
    if purpose.stem:
        labels["hearth.stem"] = "true"
    elif purpose.function is None:
        labels["hearth.probe"] = "true"
    return labels


def container_name(function: str | None, version: object, sandbox_id: str) -> str:
    return f"hearth-{function}-v{version}-{sandbox_id}" if function else f"hearth-stem-{sandbox_id}"


def materialize_code(source: Path, target: Path, executable: bool = False) -> None:
    """Place a version's code in the sandbox dir: hard links where possible (same filesystem), else copies.

    `executable`: files get mode 0755 instead of 0644 (a custom runtime's `bootstrap` and what it runs).
    """
    if target.exists():
        shutil.rmtree(target)

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    # Symlinks stay symlinks (resolved inside the sandbox, never on the host), and are never chmod-ed:
    # os.chmod would change what they point at.
    shutil.copytree(source, target, symlinks=True, copy_function=link_or_copy)
    for root, dirs, files in os.walk(target):
        os.chmod(root, 0o755)
        for name in files:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                if not os.path.islink(path):
                    os.chmod(path, 0o755 if executable else 0o644)
        del dirs  # walked by os.walk itself


class DockerHost(SandboxHost):
    """One container: its host directory (code, agent socket) and cgroup."""

    def __init__(self, backend: DockerBackend, sandbox_id: str, container_id: str, directory: Path) -> None:
        self.sandbox_id = sandbox_id
        self.container_id = container_id
        self.directory = directory
        self._backend = backend
        self.generic = False  # a stem cell: renamed after its function once loaded
        self.image: provided.ImageConfig | None = None  # an image function's image (language provided)

    async def apply_limits(self, current: Limits, wanted: Limits) -> None:
        if wanted != current:
            await self._backend.update_limits(self.container_id, wanted)

    async def place(self, spec: FunctionSpec, frame: dict[str, Any]) -> None:
        language = catalog.language_of(spec.sandbox_runtime)
        # A custom runtime's `bootstrap` and what it runs are executables.
        materialize_code(spec.code_dir, self.directory / "code", executable=language == provided.LANGUAGE)
        # The function's installed dependencies, beside its code. Node's: /hearth/node_modules, where ES
        # modules' imports (which ignore NODE_PATH) find them from /hearth/code, as require() does.
        deps = "node_modules" if language == "javascript" else "deps"
        if spec.layer_dir is not None:
            await asyncio.to_thread(materialize_code, spec.layer_dir, self.directory / deps)
            frame["paths"] = [f"/hearth/{deps}"]
        if language == provided.LANGUAGE:  # the relay starts the bootstrap / the image's entrypoint
            frame.update(provided.init_fields(spec, frame, self.image))

    async def loaded(self, spec: FunctionSpec) -> None:
        if self.generic:  # a stem cell: name it after its function for `docker ps`, off the request path
            self.generic = False
            self._backend.rename_later(self.container_id, container_name(spec.name, spec.version, self.sandbox_id))

    async def explain_crash(self, reason: str, limits: Limits) -> SandboxCrashed:
        # The cgroup's own count first: while the container is still dying (slowly under load, more so under
        # runsc) Docker does not yet say OOMKilled, and waiting for it has a limit.
        if oom_kills(self.container_id):
            return SandboxOutOfMemory(f"the function exceeded its memory limit of {limits.memory_mb} MB")
        state = await asyncio.to_thread(self._backend.exit_state, self.container_id)
        if state.get("OOMKilled"):
            return SandboxOutOfMemory(f"the function exceeded its memory limit of {limits.memory_mb} MB")
        exit_code = state.get("ExitCode")
        detail = f" (exit code {exit_code})" if exit_code not in (None, 0) or not state.get("Running") else ""
        return SandboxCrashed(f"{reason}{detail}")

    async def destroy(self) -> None:
        await asyncio.to_thread(self._backend.remove_container, self.container_id)
        shutil.rmtree(self.directory, ignore_errors=True)

    def stats(self) -> SandboxStats | None:
        memory = CGROUP_ROOT / "memory" / "docker" / self.container_id
        usage = _read_int(memory / "memory.usage_in_bytes")
        cpu_ns = _read_int(CGROUP_ROOT / "cpuacct" / "docker" / self.container_id / "cpuacct.usage")
        if usage is None or cpu_ns is None:
            return None
        return SandboxStats(
            cpu_seconds=cpu_ns / 1e9,
            memory_bytes=usage,
            memory_peak_bytes=_read_int(memory / "memory.max_usage_in_bytes"),
        )


class DockerBackend(Backend):
    name = "docker"
    kind = "container: Linux namespaces + cgroups + capabilities, the host kernel shared (runc)"
    docker_runtime: str | None = None  # dockerd's default runtime (runc) when None
    runs_provided = True  # custom runtimes and image functions (hearth.engine.provided)

    def __init__(
        self,
        *,
        run_dir: Path,
        owner: str,
        pids_limit: int = 128,
        tmpfs_mb: int = 64,
        max_log_bytes: int = 64 * 1024,
        max_result_bytes: int = 6 * 1024 * 1024,
        start_timeout_s: float = 30.0,
        image_overrides: dict[str, str] | None = None,
        client: docker.DockerClient | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.owner = owner
        self.pids_limit = pids_limit
        self.tmpfs_mb = tmpfs_mb
        self.max_log_bytes = max_log_bytes
        self.max_result_bytes = max_result_bytes
        self.start_timeout_s = start_timeout_s
        self.image_overrides = image_overrides or {}
        self._client = client
        self._background: set[asyncio.Future[None]] = set()
        self._runtimes_checked: tuple[float, list[str]] | None = None
        self.image_configs: dict[str, provided.ImageConfig] = {}  # image functions' images, as last inspected
        run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(run_dir, 0o755)

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(base_url="unix:///var/run/docker.sock", max_pool_size=32, timeout=60)
        return self._client

    def image_for(self, runtime: str) -> str:
        """The image of a runtime (`python3.13`, `provided`; a language means its default), or its override."""
        image = catalog.runtime_image(runtime)
        override = self.image_overrides.get(image.name)
        if override is None and image.name == catalog.default_runtime(image.language):
            override = self.image_overrides.get(image.language)  # HEARTH_DOCKER_RUNTIME_<LANGUAGE>_IMAGE
        return override or containers.image_ref(image.name)

    def availability(self) -> tuple[bool, str]:
        try:
            self.client.ping()
        except Exception as exc:
            return False, f"Docker daemon not reachable: {exc}"
        missing = [rt for rt in AGENT_COMMANDS if not self._image_present(rt)]
        if missing:
            return False, f"runtime images missing for {', '.join(missing)}: run `make images`"
        return True, "ok"

    def _image_present(self, runtime: str) -> bool:
        try:
            self.client.images.get(self.image_for(runtime))
            return True
        except docker.errors.ImageNotFound:
            return False

    def runtimes(self) -> list[str]:
        """The runtimes whose image is on this host (checked at most every few seconds)."""
        now = time.monotonic()
        if self._runtimes_checked is None or now - self._runtimes_checked[0] > RUNTIMES_RECHECK_S:
            self._runtimes_checked = (now, [rt for rt in catalog.RUNTIMES if self._image_present(rt)])
        return list(self._runtimes_checked[1])

    def describe(self) -> dict[str, Any]:
        return {"runtime": self.docker_runtime or "runc"}

    async def create(self, runtime: Runtime, limits: Limits, purpose: Purpose) -> Sandbox:
        started = time.perf_counter()
        try:
            sandbox = await self._create(runtime, limits, purpose)
        except Exception as exc:
            self.start_costs.record_failure(f"{type(exc).__name__}: {exc}")
            raise
        self.start_costs.record(catalog.runtime_image(runtime).name, (time.perf_counter() - started) * 1000)
        return sandbox

    async def _create(self, runtime: Runtime, limits: Limits, purpose: Purpose) -> Sandbox:
        sandbox_id = secrets.token_hex(6)
        directory = self.run_dir / sandbox_id
        sandbox_only_directory(directory)
        (directory / "code").mkdir(mode=0o755)
        socket_path = directory / "agent.sock"

        connected: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.get_running_loop().create_future()
        )

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if connected.done():
                writer.close()
            else:
                connected.set_result((reader, writer))

        server = await asyncio.start_unix_server(on_connect, path=str(socket_path), limit=2**20)
        os.chmod(socket_path, 0o666)
        container_id: str | None = None
        try:
            container_id = await asyncio.to_thread(self._run_container, sandbox_id, runtime, limits, purpose, directory)
            try:
                reader, writer = await asyncio.wait_for(connected, self.start_timeout_s)
            except TimeoutError:
                logs = await asyncio.to_thread(self._container_logs, container_id)
                raise SandboxStartError(
                    f"agent did not connect within {self.start_timeout_s} s; container output: {logs}"
                ) from None
        except BaseException:
            server.close()
            if container_id:
                await asyncio.to_thread(self.remove_container, container_id)
            shutil.rmtree(directory, ignore_errors=True)
            raise
        server.close()
        socket_path.unlink(missing_ok=True)
        batch_peer(writer.get_extra_info("socket"))
        channel = AgentChannel(reader, writer)
        host = DockerHost(self, sandbox_id, container_id, directory)
        if purpose.image:
            host.image = self.image_configs.get(purpose.image)
        host.generic = purpose.function is None
        sandbox = AgentSandbox(self, sandbox_id, runtime, channel, host, limits)
        try:
            await channel.handshake(self.start_timeout_s)
        except BaseException:
            await sandbox.stop()
            raise
        return sandbox

    def _run_container(
        self, sandbox_id: str, runtime: str, limits: Limits, purpose: Purpose, directory: Path
    ) -> str:
        """Create and start the container: two Docker API calls (the SDK's high-level create adds an inspect)."""
        memory = limits.memory_mb * 1024 * 1024
        api = self.client.api
        binds = {
            str(directory): {"bind": "/hearth", "mode": "ro"},
            str(RUNTIMES_DIR): {"bind": "/opt/hearth", "mode": "ro"},
        }
        entry = catalog.runtime_image(runtime)
        if entry.aws_sdk and (sdk := aws_sdk.find_layer()) is not None:
            binds[str(sdk)] = {"bind": aws_sdk.MOUNT_POINT, "mode": "ro"}  # as Lambda's Node runtimes ship it
        image, entrypoint, command = self.image_for(runtime), None, AGENT_COMMANDS.get(entry.language)
        if entry.language == provided.LANGUAGE:  # the relay serves the Runtime API (hearth.engine.provided)
            try:
                binds[str(provided.ensure_relay())] = {"bind": provided.RELAY_MOUNT, "mode": "ro"}
                if purpose.image:  # an image function: its own image, its entrypoint run by the relay
                    # A version pins its image by id, so an id's configuration never changes: inspected once.
                    ref = purpose.image
                    config = self.image_configs.get(ref) or provided.inspect_image(self.client, ref)
                    self.image_configs[config.ref] = config
                    image, entrypoint, command = config.image_id, provided.RELAY_COMMAND, []
                else:
                    command = provided.RELAY_COMMAND
            except provided.ProvidedError as exc:
                raise SandboxStartError(str(exc)) from None
        host_config = api.create_host_config(
            binds=binds,
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={limits.tmpfs_mb}m,mode=1777"},
            network_mode="none" if not limits.network else self._egress_network(),
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            mem_limit=memory,
            memswap_limit=memory,
            cpu_period=CPU_PERIOD_US,
            cpu_quota=int(limits.cpus * CPU_PERIOD_US),
            init=True,
            log_config=LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
            **self.runtime_options(limits),
        )
        try:
            created = api.create_container(
                image,
                command=command,
                entrypoint=entrypoint,
                name=container_name(purpose.function, purpose.version, sandbox_id),
                user=f"{SANDBOX_UID}:{SANDBOX_GID}",
                working_dir="/tmp",
                environment={
                    "HEARTH_AGENT_SOCKET": "/hearth/agent.sock",
                    "HOME": "/tmp",
                    "PYTHONDONTWRITEBYTECODE": "1",
                    "PYTHONUNBUFFERED": "1",
                    "NODE_ENV": "production",
                },
                labels={
                    **container_labels(purpose),
                    "hearth.owner": self.owner,
                    "hearth.runtime": runtime,
                    "hearth.backend": self.name,
                },
                host_config=host_config,
            )
            api.start(created["Id"])
        except docker.errors.DockerException as exc:
            raise SandboxStartError(f"could not start a {runtime} sandbox: {exc}") from None
        return str(created["Id"])

    def runtime_options(self, limits: Limits) -> dict[str, Any]:
        """Host-config options that depend on the OCI runtime (the gVisor backend overrides this)."""
        options: dict[str, Any] = {"pids_limit": limits.pids}
        if self.docker_runtime:
            options["runtime"] = self.docker_runtime
        return options

    def _egress_network(self) -> str:
        name = "hearth-egress"
        try:
            self.client.networks.get(name)
        except docker.errors.NotFound:
            self.client.networks.create(name, driver="bridge", labels={"hearth.owner": self.owner})
        return name

    async def update_limits(self, container_id: str, limits: Limits) -> None:
        """Move a running container to new memory/CPU limits.

        Writing the cgroup v1 files takes ~0.15 ms; Docker's update API ~22 ms (measured), which would
        sit on a stem cell's first call. The API is the fallback where the files are not there.
        """
        try:
            _write_cgroup_limits(container_id, limits)
        except OSError:
            memory = limits.memory_mb * 1024 * 1024
            await asyncio.to_thread(
                self.client.api.update_container,
                container_id,
                mem_limit=memory,
                memswap_limit=memory,
                cpu_quota=int(limits.cpus * CPU_PERIOD_US),
            )

    def rename_later(self, container_id: str, name: str) -> None:
        def rename() -> None:
            with contextlib.suppress(docker.errors.DockerException):
                self.client.api.rename(container_id, name)

        task = asyncio.get_running_loop().run_in_executor(None, rename)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def exit_state(self, container_id: str) -> dict[str, Any]:
        try:
            with contextlib.suppress(Exception):
                self.client.api.wait(container_id, timeout=2)
            return dict(self.client.api.inspect_container(container_id)["State"])
        except Exception:  # gone, or dockerd unreachable: nothing more to explain
            return {}

    def _container_logs(self, container_id: str) -> str:
        try:
            raw = self.client.api.logs(container_id, tail=20)
            return raw.decode(errors="replace").strip()[-2000:] or "(none)"
        except docker.errors.DockerException as exc:
            return f"(unavailable: {exc})"

    def remove_container(self, container_id: str) -> None:
        """Best effort: a container Docker cannot remove now (dockerd down) is swept at the next start."""
        try:
            self.client.api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass
        except Exception as exc:  # dockerd unreachable or restarting: requests' errors are not DockerException
            log.warning("could not remove container %s: %s", container_id[:12], exc)

    async def cleanup_orphans(self) -> int:
        def sweep() -> int:
            containers = [
                container
                for container in self.client.containers.list(
                    all=True, filters={"label": f"hearth.owner={self.owner}"}, ignore_removed=True
                )
                # Containers of each Docker-based backend (docker, gvisor) are swept by that backend only;
                # those from before the label existed were all the docker backend's.
                if container.labels.get("hearth.backend", "docker") == self.name
            ]
            for container in containers:
                self.remove_container(str(container.id))
            return len(containers)

        removed = await asyncio.to_thread(sweep)
        for leftover in self.run_dir.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
        return removed

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
