"""The one small interface every isolation backend implements, and the specs that cross it.

A backend *creates* a generic sandbox for a runtime (agent started, connected, not yet bound to any
function), and the sandbox is then *loaded* with one function version. Cold starts do both at once;
stem cells (pre-started generic sandboxes) do the first ahead of time.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Runtime = Literal["python", "javascript"]


@dataclass(frozen=True)
class FunctionSpec:
    """Everything the engine needs to run one immutable version of a function."""

    name: str
    version: int
    language: Runtime
    handler: str
    code_dir: Path
    timeout_s: float = 30.0
    memory_mb: int = 128
    cpus: float = 0.5
    env: dict[str, str] = field(default_factory=dict)
    backend: str = "docker"
    min_warm: int = 0
    max_instances: int = 10
    concurrency: int = 1
    network: bool = False
    route: str = ""
    auth: str = "public"
    extra: dict[str, Any] = field(default_factory=dict)
    layer_dir: Path | None = None  # installed dependencies (site-packages / node_modules), read-only

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.version)

    @property
    def module_and_function(self) -> tuple[str, str]:
        """`handler` is `fn` (in the single-file module `main`) or `module.fn` / `pkg/module.fn`."""
        module, _, function = self.handler.rpartition(".")
        return (module or "main", function)


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    cpus: float
    pids: int
    tmpfs_mb: int
    network: bool = False


@dataclass(frozen=True)
class SandboxStats:
    cpu_seconds: float
    memory_bytes: int
    memory_peak_bytes: int | None = None


class SandboxError(Exception):
    """A sandbox failed; `error_type` is what the caller sees."""

    error_type = "SandboxCrashed"


class SandboxTimeout(SandboxError):
    error_type = "Timeout"


class SandboxCrashed(SandboxError):
    error_type = "SandboxCrashed"


class SandboxOutOfMemory(SandboxCrashed):
    error_type = "OutOfMemory"


class SandboxStartError(SandboxError):
    error_type = "SandboxStartError"


class FunctionInitError(Exception):
    """The function's code failed to load (syntax error, missing handler, exception at import)."""

    def __init__(self, error: dict[str, Any]) -> None:
        self.error = error
        super().__init__(f"{error.get('type')}: {error.get('message')}")


class Sandbox(abc.ABC):
    """One running isolated environment with a connected agent."""

    id: str
    backend: str
    runtime: Runtime

    @abc.abstractmethod
    async def load(self, spec: FunctionSpec) -> float:
        """Bind this sandbox to one function version (code, env, limits); returns init ms."""

    @abc.abstractmethod
    async def invoke(self, frame: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send an invoke (or batch) frame and return the agent's result frame.

        Raises SandboxTimeout when no answer came in time (the sandbox is then unusable) and
        SandboxCrashed / SandboxOutOfMemory when the sandbox died.
        """

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop and remove the sandbox; idempotent, never raises."""

    @abc.abstractmethod
    def stats(self) -> SandboxStats | None:
        """Cheap resource reading (cgroup files), or None where the backend cannot measure."""

    @property
    @abc.abstractmethod
    def healthy(self) -> bool:
        """False once the agent's stream has closed or a timeout has poisoned the sandbox."""


class Backend(abc.ABC):
    """Creates sandboxes of one isolation technology."""

    name: str
    pids_limit: int = 128
    tmpfs_mb: int = 64
    stem_memory_mb: int = 128

    def limits_for(self, spec: FunctionSpec) -> Limits:
        return Limits(
            memory_mb=spec.memory_mb, cpus=spec.cpus, pids=self.pids_limit, tmpfs_mb=self.tmpfs_mb, network=spec.network
        )

    def stem_limits(self, runtime: Runtime) -> Limits | None:
        """Limits a stem cell (generic pre-started sandbox) is created with; None: no stem cells here.

        `Sandbox.load` must be able to move a stem cell to any function's limits (the Docker backend
        rewrites its cgroup limits); a backend that cannot, returns None.
        """
        return Limits(memory_mb=self.stem_memory_mb, cpus=1.0, pids=self.pids_limit, tmpfs_mb=self.tmpfs_mb)

    @abc.abstractmethod
    async def create(self, runtime: Runtime, limits: Limits, labels: dict[str, str]) -> Sandbox:
        """Start a generic sandbox for `runtime` whose agent is connected and waiting for `init`."""

    @abc.abstractmethod
    def availability(self) -> tuple[bool, str]:
        """(available, reason) on this host right now."""

    async def cleanup_orphans(self) -> int:
        """Remove sandboxes a previous run of this Hearth left behind; returns how many."""
        return 0

    async def close(self) -> None:
        return None
