"""One throwaway container per dependency install: nothing a package brings runs on the host.

The container runs the builder image of the function's runtime (hearth.images.containers: the runtime's
Debian packages plus pip / npm) as nobody, with every capability dropped, no-new-privileges, a
read-only root, CPU / memory / pids limits, no network and an environment built from scratch (none
of Hearth's variables). What it can write is one size-limited tmpfs (/build: HOME, TMPDIR, caches,
the install's output). What it can read of the host is one read-only directory made for the build
(/hearth: the entry script, the job, the manifest files, the index's CA bundle and two Unix
sockets): the CONNECT proxy to the package index hosts (hearth.packaging.proxy) and the socket the
result comes back on, as a tar stream of at most the tmpfs's size, unpacked with tarfile's `data`
filter (no absolute paths, no links out of the tree, no devices, no set-id bits).

A build that fails, overruns its time limit or is cancelled is killed and removed, with its
directory on the host; nothing of it remains.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors

from hearth.packaging.proxy import ConnectProxy

LogSink = Callable[[str], None]
ENTRY = Path(__file__).with_name("build_entry.py")
MOUNT = "/hearth"  # the build's read-only view of its host directory
SCRATCH = "/build"  # the build's only writable place (tmpfs)
PROXY_PORT = 3128  # inside the container's own network namespace
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": f"{SCRATCH}/home",
    "TMPDIR": f"{SCRATCH}/tmp",
    "HTTPS_PROXY": f"http://127.0.0.1:{PROXY_PORT}",
    "https_proxy": f"http://127.0.0.1:{PROXY_PORT}",
    "HTTP_PROXY": f"http://127.0.0.1:{PROXY_PORT}",
    "http_proxy": f"http://127.0.0.1:{PROXY_PORT}",
}
ERROR_PREFIXES = ("ERROR:", "npm ERR!", "npm error")
SPOOL_BYTES = 32 << 20  # a result larger than this waits on disk, not in memory


class SandboxFailed(Exception):
    """The build did not produce its output; the message is the short reason, the log has the rest."""


@dataclass(frozen=True)
class BuildLimits:
    timeout_s: float = 600.0
    memory_mb: int = 2048
    cpus: float = 1.0
    pids: int = 512
    disk_mb: int = 1024


@dataclass(frozen=True)
class BuildJob:
    image: str
    command: list[str]
    env: dict[str, str]  # on top of BASE_ENV
    files: dict[str, bytes]  # placed read-only under /hearth/files
    hosts: set[tuple[str, int]]  # what the proxy lets the build reach
    ca_bundle: Path | None = None  # a host file, copied to /hearth/ca.pem
    copy: tuple[str, ...] = ()  # of `files`, copied into the work dir before the command runs
    workdir: str = f"{SCRATCH}/work"
    output: str | None = None  # the directory sent back on success


class BuildSandbox:
    def __init__(self, client: Callable[[], docker.DockerClient], limits: BuildLimits, owner: str) -> None:
        self._client = client
        self.limits = limits
        self.owner = owner  # label of the containers: the Docker backend's orphan sweep removes leftovers
        self._prefix = f"hearth-build-{owner}-"

    def sweep(self) -> None:
        """Removes the host directories of builds a previous process of this owner left (killed mid-build)."""
        for leftover in Path(tempfile.gettempdir()).glob(self._prefix + "*"):
            shutil.rmtree(leftover, ignore_errors=True)

    async def run(self, job: BuildJob, log: LogSink, dest: Path | None = None, name: str = "build") -> None:
        """Run `job`; its output (if any) is unpacked into `dest`, which must not exist. SandboxFailed if not."""
        run_dir = Path(tempfile.mkdtemp(prefix=self._prefix))
        proxy = ConnectProxy(run_dir / "proxy.sock", job.hosts, log)
        result = ResultReceiver(run_dir / "result.sock", self.limits.disk_mb * 1024 * 1024 + (16 << 20))
        container_id: str | None = None
        try:
            await asyncio.to_thread(self._prepare, run_dir, job)
            await proxy.start()
            await result.start()
            creating = asyncio.ensure_future(asyncio.to_thread(self._create, job, run_dir, name))
            try:
                container_id = await asyncio.shield(creating)
            except asyncio.CancelledError:  # the thread goes on: wait for its container, to remove it below
                container_id = await creating
                raise
            code, last_error = await self._follow(container_id, log)
            if code != 0:
                detail = f": {last_error}" if last_error else ""
                raise SandboxFailed(f"{name} failed with exit code {code}{detail}")
            if job.output is not None and dest is not None:
                await asyncio.to_thread(unpack, await result.received(), dest)
        except TimeoutError:
            raise SandboxFailed(f"{name} did not finish within {self.limits.timeout_s:g} s") from None
        finally:
            if container_id is not None:
                await asyncio.to_thread(self._remove, container_id)
            await proxy.close()
            await result.close()
            await asyncio.to_thread(shutil.rmtree, run_dir, True)

    # ----- steps
    def _prepare(self, run_dir: Path, job: BuildJob) -> None:
        files = run_dir / "files"
        files.mkdir()
        for file_name, content in job.files.items():
            (files / file_name).write_bytes(content)
        shutil.copyfile(ENTRY, run_dir / "build_entry.py")
        if job.ca_bundle is not None:
            shutil.copyfile(job.ca_bundle, run_dir / "ca.pem")
        spec = {
            "command": job.command,
            "workdir": job.workdir,
            "files": f"{MOUNT}/files",
            "copy": list(job.copy),
            "output": job.output,
            "proxy_port": PROXY_PORT,
            "proxy_socket": f"{MOUNT}/proxy.sock",
            "result_socket": f"{MOUNT}/result.sock",
        }
        (run_dir / "job.json").write_text(json.dumps(spec))
        for current, _dirs, names in os.walk(run_dir):
            os.chmod(current, 0o755)
            for file_name in names:
                os.chmod(os.path.join(current, file_name), 0o644)

    def _create(self, job: BuildJob, run_dir: Path, name: str) -> str:
        client = self._client()
        try:
            container = self._new_container(client, job, run_dir, name)
        except docker.errors.ImageNotFound:
            raise SandboxFailed(
                f"the builder image {job.image} is missing: build it with `make images` "
                "(python -m hearth.images.containers --role builder)"
            ) from None
        container.start()
        return str(container.id)

    def _new_container(self, client: docker.DockerClient, job: BuildJob, run_dir: Path, name: str) -> Any:
        limits = self.limits
        return client.containers.create(
            job.image,
            ["python3", "-I", f"{MOUNT}/build_entry.py", f"{MOUNT}/job.json"],
            user="65534:65534",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            read_only=True,
            network_mode="none",
            ipc_mode="none",
            environment={**BASE_ENV, **job.env},
            working_dir="/",
            volumes={str(run_dir): {"bind": MOUNT, "mode": "ro"}},
            tmpfs={SCRATCH: f"rw,exec,nosuid,nodev,size={limits.disk_mb}m,mode=1777"},
            mem_limit=f"{limits.memory_mb}m",
            memswap_limit=f"{limits.memory_mb}m",
            nano_cpus=int(limits.cpus * 1e9),
            pids_limit=limits.pids,
            log_config={"type": "json-file", "config": {"max-size": "20m", "max-file": "1"}},
            labels={"hearth.owner": self.owner, "hearth.build": name},
        )

    async def _follow(self, container_id: str, log: LogSink) -> tuple[int, str | None]:
        """Streams the container's output into `log` until it exits (or the time limit): (exit code, first error)."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        client = self._client()

        def post(line: str | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed (a build over its time): nobody reads on
                loop.call_soon_threadsafe(lines.put_nowait, line)

        def read() -> None:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            pending = ""
            try:
                for chunk in client.api.logs(container_id, stream=True, follow=True):
                    pending += decoder.decode(chunk)
                    *complete, pending = pending.split("\n")
                    for line in complete:
                        post(line + "\n")
            except docker.errors.DockerException:
                pass
            finally:
                if pending:
                    post(pending + "\n")
                post(None)

        reader = threading.Thread(target=read, name="build-log", daemon=True)
        reader.start()
        last_error: str | None = None
        async with asyncio.timeout(self.limits.timeout_s):
            while (line := await lines.get()) is not None:
                log(line)
                if line.startswith(ERROR_PREFIXES):
                    last_error = last_error or line.strip()
            state = await asyncio.to_thread(client.api.wait, container_id)
        return int(state.get("StatusCode", -1)), last_error

    def _remove(self, container_id: str) -> None:
        with contextlib.suppress(docker.errors.DockerException):
            self._client().api.remove_container(container_id, force=True)


class ResultReceiver:
    """Accepts one connection on a Unix socket and keeps up to `limit` bytes of what it sends (spooled to disk)."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self._server: asyncio.AbstractServer | None = None
        self._done: asyncio.Future[IO[bytes]] | None = None
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed in close()

    async def start(self) -> None:
        self._done = asyncio.get_running_loop().create_future()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o666)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._done is not None
        try:
            if self._done.done():  # one result per build
                return
            size = 0
            while data := await reader.read(1 << 20):
                size += len(data)
                if size > self.limit:
                    self._done.set_exception(SandboxFailed(f"the build's output is over {self.limit >> 20} MiB"))
                    return
                await asyncio.to_thread(self._file.write, data)
            self._file.seek(0)
            self._done.set_result(self._file)
        except OSError as exc:
            if not self._done.done():
                self._done.set_exception(SandboxFailed(f"receiving the build's output failed: {exc}"))
        finally:
            writer.close()

    async def received(self, timeout_s: float = 30.0) -> IO[bytes]:
        """What was sent (the sender may still be finishing when the container has exited)."""
        assert self._done is not None
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(self._done)
        except TimeoutError:
            raise SandboxFailed("the build exited without sending its output") from None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        if self._done is not None and self._done.done() and not self._done.cancelled():
            self._done.exception()  # retrieved: an over-limit result is reported by the build's exit instead
        self._file.close()


def unpack(data: IO[bytes], dest: Path) -> None:
    """The build's tar stream into `dest` (created): only regular files, directories and links inside it."""
    dest.mkdir()
    try:
        with tarfile.open(fileobj=data, mode="r:") as archive:
            archive.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise SandboxFailed(f"the build's output cannot be unpacked: {exc}") from None


def docker_client_factory(get: Callable[[], Any]) -> Callable[[], docker.DockerClient]:
    """A client getter that reuses the Docker backend's client, else one from the environment."""
    cache: list[docker.DockerClient] = []

    def client() -> docker.DockerClient:
        backend = get()
        if backend is not None:
            return backend.client  # type: ignore[no-any-return]
        if not cache:
            cache.append(docker.from_env())
        return cache[0]

    return client
