"""gVisor sandboxes: the Docker backend with dockerd's `runsc` runtime (docs/isolation.md).

Everything the Docker backend does holds (image, bind mounts, read-only root, tmpfs, user 65534,
no capabilities, cgroup memory/CPU limits written directly for stem cells), plus the function's
system calls are served by gVisor's user-space kernel (the Sentry) instead of the host kernel.

runsc specifics, measured with Debian's runsc (release 20221219, ptrace platform) under dockerd 20.10:

- runsc must be registered with `"runtimeArgs": ["--network=none", "--host-uds=open"]`
  (scripts/register-runsc.sh). Without `--network=none` it refuses to start on this host ("cannot
  run with network enabled in root network namespace"), so gVisor sandboxes have no network at all
  and functions with `network: true` are refused. `--host-uds=open` lets the agent connect to the
  host's Unix socket bind-mounted at /hearth/agent.sock (the default `none` refuses; `open` is the
  least that works: no host sockets can be created from inside).
- The host cgroup's `pids.max` counts runsc's own host tasks (Sentry and Gofer threads, one ptrace
  stub per process inside): ~54 for an idle sandbox, ~860 with 128 processes inside. When it is
  reached, the Sentry's Go runtime cannot start a thread and the whole sandbox dies (exit code 2);
  below ~60 it cannot even start. So the process limit *inside* is RLIMIT_NPROC (`--ulimit nproc`),
  which gVisor's kernel enforces per sandbox (it counts processes and threads of uid 65534 in its
  own kernel; under runc the same rlimit would count the uid across the whole host), and the host
  `pids.max` is a ceiling sized for the Sentry's needs at that many tasks.
- Memory and CPU limits are the container's host cgroup, which holds the Sentry, the Gofer and the
  stubs: the function's memory and gVisor's own (~7 MiB for an idle Python sandbox) share
  `memory_mb`. Rewriting the cgroup files moves a running sandbox to new limits (stem cells) as under
  runc; the host OOM killer ends the sandbox and Docker reports it OOM-killed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from docker.types import Ulimit

from hearth.engine.backends.docker import DockerBackend
from hearth.engine.sandbox import Limits, SandboxStartError

REQUIRED_ARGS = ("--network=none",)
HOST_UDS_ARGS = ("--host-uds=open", "--host-uds=all")
REGISTER_HINT = "as root: bash scripts/install-system.sh (installs Debian's runsc and registers it with dockerd)"
AVAILABILITY_TTL_S = 5.0


def host_pids_ceiling(pids: int) -> int:
    """Host tasks a sandbox of `pids` processes may need: runsc's ~60 of its own + ~6.3 per process (measured)."""
    return 64 + 8 * pids


class GVisorBackend(DockerBackend):
    name = "gvisor"
    kind = "container under gVisor: a user-space kernel (runsc) between the function and the host kernel"

    def __init__(self, *, docker_runtime: str = "runsc", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.docker_runtime = docker_runtime
        self._checked: tuple[float, bool, str] | None = None
        self._runtime_info: dict[str, Any] = {}

    # ----- availability
    def availability(self) -> tuple[bool, str]:
        ok, reason = super().availability()
        if not ok:
            return ok, reason
        now = time.monotonic()
        if self._checked is None or now - self._checked[0] > AVAILABILITY_TTL_S:
            self._checked = (now, *self._check_runtime())
        return self._checked[1], self._checked[2]

    def _check_runtime(self) -> tuple[bool, str]:
        try:
            runtimes = self.client.info().get("Runtimes") or {}
        except Exception as exc:
            return False, f"Docker daemon not reachable: {exc}"
        runtime = runtimes.get(self.docker_runtime)
        if runtime is None:
            installed = shutil.which("runsc")
            what = f"runsc is installed ({installed}) but" if installed else "runsc is not installed and"
            return False, f"{what} dockerd has no {self.docker_runtime!r} runtime registered; {REGISTER_HINT}"
        self._runtime_info = dict(runtime)
        path = str(runtime.get("path") or "")
        args = [str(a) for a in runtime.get("runtimeArgs") or []]
        if os.path.isabs(path) and not os.access(path, os.X_OK):
            return False, f"dockerd's {self.docker_runtime!r} runtime points at {path}, which is not there"
        missing = [a for a in REQUIRED_ARGS if a not in args]
        if not any(a in args for a in HOST_UDS_ARGS):
            missing.append("--host-uds=open")
        if missing:
            return False, (
                f"dockerd's {self.docker_runtime!r} runtime lacks runtimeArgs {missing} (has {args}): "
                f"without them runsc cannot start here or the agent cannot reach Hearth's socket; {REGISTER_HINT}"
            )
        return True, "ok"

    def describe(self) -> dict[str, Any]:
        info = self._runtime_info
        args = [str(a) for a in info.get("runtimeArgs") or []]
        platform = next((a.split("=", 1)[1] for a in args if a.startswith("--platform=")), "ptrace")
        return {
            "runtime": self.docker_runtime,
            "runtime_path": info.get("path"),
            "runtime_args": args,
            "runsc_version": runsc_version(str(info.get("path") or "runsc")),
            "platform": platform,
            "network": "none (runsc --network=none)",
            "pids": {"in_sandbox": self.pids_limit, "host_tasks": host_pids_ceiling(self.pids_limit)},
        }

    def refuse(self, settings: Mapping[str, Any]) -> str | None:
        if settings.get("network"):
            return (
                "the gvisor backend has no network: runsc runs with --network=none here "
                "(it cannot join Docker's network namespaces on this host); use the docker backend"
            )
        return None

    # ----- container options
    def runtime_options(self, limits: Limits) -> dict[str, Any]:
        return {
            "runtime": self.docker_runtime,
            "pids_limit": host_pids_ceiling(limits.pids),
            "ulimits": [Ulimit(name="nproc", soft=limits.pids, hard=limits.pids)],
        }

    def _egress_network(self) -> str:
        raise SandboxStartError(self.refuse({"network": True}) or "no network")


_VERSIONS: dict[str, str | None] = {}


def runsc_version(path: str) -> str | None:
    """`runsc --version`'s first line (cached per path), or None where it does not run."""
    if path not in _VERSIONS:
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5, check=False).stdout
            _VERSIONS[path] = out.splitlines()[0].strip() if out.strip() else None
        except (OSError, subprocess.SubprocessError):
            _VERSIONS[path] = None
    return _VERSIONS[path]
