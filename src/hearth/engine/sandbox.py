"""The one small interface every isolation backend implements, and the specs that cross it.

A backend *creates* a generic sandbox for a runtime (agent started, connected, not yet bound to any
function), and the sandbox is then *loaded* with one function version. Cold starts do both at once;
stem cells (pre-started generic sandboxes) do the first ahead of time.
"""

from __future__ import annotations

import abc
import statistics
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# A runtime identifier (`python3.13`, `nodejs20.x`, `provided`), or a language (`python`) meaning its
# default runtime (hearth.images.catalog.CATALOG).
Runtime = str
Language = Literal["python", "javascript", "provided"]


@dataclass(frozen=True)
class BatchSettings:
    """A version's request batching (its `batch` setting): at most `max_size` calls per round trip."""

    max_size: int = 1
    max_wait_ms: float = 0.0
    batch_handler: bool = False  # the handler takes the list of events in one call


@dataclass(frozen=True)
class FunctionSpec:
    """Everything the engine needs to run one immutable version of a function."""

    name: str
    version: int
    language: Language
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
    layer_dir: Path | None = None  # installed dependencies (site-packages / node_modules), read-only
    runtime: str = ""  # `python3.13`, `nodejs20.x`; empty: the language's default runtime
    image: str | None = None  # an image function's image: its id when deployed, else the reference given
    batch: BatchSettings | None = None
    retries: int | None = None  # async: retries after a failure; None: the configured default
    schedule: tuple[str, ...] = ()  # cron expressions
    http_payload_format: str = "2.0"  # the HTTP trigger's event format: "2.0" (function URL) or "1.0"

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.version)

    @property
    def sandbox_runtime(self) -> str:
        """The runtime identifier this version runs on (the language's default when none was named)."""
        from hearth.images.catalog import runtime_image

        return runtime_image(self.runtime or self.language).name

    @property
    def module_and_function(self) -> tuple[str, str]:
        """`handler` is `fn` (in the single-file module `main`) or `module.fn` / `pkg/module.fn`."""
        module, _, function = self.handler.rpartition(".")
        return (module or "main", function)


@dataclass(frozen=True)
class LambdaIdentity:
    """The region and account a function runs in: the Lambda API's (HEARTH_LAMBDA_REGION, HEARTH_LAMBDA_ACCOUNT_ID)."""

    region: str = "us-east-1"
    account: str = "000000000000"

    def function_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{name}"


@dataclass(frozen=True)
class Purpose:
    """What a sandbox is started for: one function version, a stem cell, or a start-cost probe."""

    function: str | None = None  # None: not bound to a function yet (a stem cell or a probe)
    version: int | None = None
    image: str | None = None  # an image function's image (language provided)
    stem: bool = False  # a stem cell: kept ready for any function of its runtime

    @classmethod
    def stem_cell(cls) -> Purpose:
        return cls(stem=True)

    @classmethod
    def probe(cls) -> Purpose:
        return cls()

    @classmethod
    def serve(cls, spec: FunctionSpec, image: str | None = None) -> Purpose:
        return cls(function=spec.name, version=spec.version, image=image)


@dataclass(frozen=True, slots=True)
class Call:
    """One invocation for a sandbox to run: its id (the handler's request id), event and Lambda client context."""

    id: str
    event: Any
    client_context: Any = None


@dataclass(slots=True)
class Reply:
    """A sandbox's answer to one call. `result`: the JSON the handler returned, encoded, as the agent sent it."""

    id: str
    ok: bool
    result: bytes | None = None
    error: dict[str, Any] | None = None
    stdout: str = ""
    stderr: str = ""
    logs_truncated: bool = False
    duration_ms: float = 0.0
    cpu_ms: float | None = None
    max_rss_kb: int | None = None


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
    async def invoke(self, calls: Sequence[Call], timeout_s: float) -> list[Reply]:
        """Run `calls` (one after another when several) and return a reply for each, matched by id.

        Raises SandboxTimeout when no answer came in time (the sandbox is then unusable) and
        SandboxCrashed / SandboxOutOfMemory when the sandbox died.
        """

    def take_init_log(self) -> str:
        """What the function's code wrote while it loaded, once (it leads the first call's log)."""
        return ""

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


class StartCosts:
    """What starting a sandbox has cost on one backend: the recent starts, measured where they happen.

    A start is `Backend.create`: from the request to a sandbox whose agent is connected and has
    answered the handshake (not yet loaded with a function). Backends record every start, the stem
    cells started in the background at boot included, so a figure is there shortly after Hearth starts.
    """

    def __init__(self, window: int = 50) -> None:
        self._samples: dict[str, deque[float]] = {}
        self._last: dict[str, float] = {}
        self.started = 0
        self.failed = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._window = window

    def record(self, runtime: str, ms: float) -> None:
        self._samples.setdefault(runtime, deque(maxlen=self._window)).append(ms)
        self._last[runtime] = time.time()
        self.started += 1

    def record_failure(self, error: str) -> None:
        self.failed += 1
        self.last_error = error[:500]
        self.last_error_at = time.time()

    def summary(self) -> dict[str, dict[str, float | int]]:
        """Per runtime: p50 and last of the recent starts (ms), how many the window holds, when the last was."""
        return {
            runtime: {
                "p50_ms": round(statistics.median(samples), 1),
                "last_ms": round(samples[-1], 1),
                "samples": len(samples),
                "last_at": self._last[runtime],
            }
            for runtime, samples in sorted(self._samples.items())
            if samples
        }


class Backend(abc.ABC):
    """Creates sandboxes of one isolation technology."""

    name: str
    kind: str = ""  # what isolates, in a few words (shown by GET /api/backends)
    # Stem cells from the start (the default backend), or only once a function on this backend is first started:
    # idle stem cells of a backend nobody uses would hold memory for nothing.
    stem_cells_at_start: bool = True
    identity: LambdaIdentity = LambdaIdentity()  # region and account functions see (hearth.engine.lambda_env)
    # Until then, one sandbox is started and stopped in the background at boot to measure the start cost
    # (GET /api/backends); a backend whose starts are expensive may turn that off.
    probe_at_start: bool = True
    pids_limit: int = 128
    tmpfs_mb: int = 64
    stem_memory_mb: int = 128
    # What every agent of this backend is told (the init frame) and how long it may take to connect and load.
    max_log_bytes: int = 64 * 1024
    max_result_bytes: int = 6 * 1024 * 1024
    start_timeout_s: float = 30.0

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
    async def create(self, runtime: Runtime, limits: Limits, purpose: Purpose) -> Sandbox:
        """Start a generic sandbox for `runtime` whose agent is connected and waiting for `init`."""

    @abc.abstractmethod
    def availability(self) -> tuple[bool, str]:
        """(available, reason) on this host right now."""

    @property
    def start_costs(self) -> StartCosts:
        """Measured sandbox starts; `create` records each one (`record(runtime, ms)` / `record_failure`)."""
        costs = self.__dict__.get("_start_costs")
        if costs is None:
            costs = self.__dict__["_start_costs"] = StartCosts()
        return costs

    def runtimes(self) -> list[str]:
        """The runtime identifiers this backend can run right now (hearth.images.catalog.CATALOG)."""
        from hearth.images.catalog import LANGUAGES, default_runtime

        return [default_runtime(language) for language in LANGUAGES]

    def describe(self) -> dict[str, Any]:
        """Backend-specific facts for GET /api/backends (e.g. the OCI runtime, the accelerator)."""
        return {}

    def refuse(self, settings: Mapping[str, Any]) -> str | None:
        """Why this backend cannot run a function with these settings (e.g. `network`), or None."""
        return None

    async def cleanup_orphans(self) -> int:
        """Remove sandboxes a previous run of this Hearth left behind; returns how many."""
        return 0

    async def close(self) -> None:
        return None
