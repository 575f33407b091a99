"""A running microVM as a sandbox: the shared `AgentSandbox` over a host that speaks to the guest's supervisor.

The function's code travels in the init frame (`files`): the guest shares no directory with the host.
A VM's RAM and vCPUs are fixed at start, so `apply_limits` moves the in-guest cgroup limits down to
the function's and refuses a function that does not fit (the engine then starts a VM of the right shape).
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path
from typing import Any

from hearth.engine import provided
from hearth.engine.agent_sandbox import AgentSandbox, SandboxHost
from hearth.engine.backends.vm import provided_functions
from hearth.engine.backends.vm.process import VmProcess
from hearth.engine.backends.vm.shapes import VmShape, vcpus_for
from hearth.engine.backends.vm.timings import StartTimings
from hearth.engine.channel import AgentChannel
from hearth.engine.sandbox import (
    Backend,
    FunctionSpec,
    Limits,
    SandboxCrashed,
    SandboxOutOfMemory,
    SandboxStartError,
    SandboxStats,
)

MAX_FILES_BYTES = 48 * 2**20  # code + dependencies sent in the init frame (base64 inside JSON)


def no_network(backend: str) -> str:
    return f"the {backend} backend gives functions no network device; use the docker backend for network: true"


def collect_files(spec: FunctionSpec) -> list[dict[str, Any]]:
    """The function's code (-> /hearth/code) and dependency layer (-> /hearth/deps) as init-frame files."""
    files: list[dict[str, Any]] = []
    total = 0
    sources = [(spec.code_dir, "/hearth/code")]
    if spec.layer_dir is not None:
        sources.append((spec.layer_dir, "/hearth/deps"))
    for source, target in sources:
        for root, _dirs, names in os.walk(source):
            for name in sorted(names):
                path = Path(root) / name
                if path.is_symlink() or not path.is_file():
                    continue
                data = path.read_bytes()
                total += len(data)
                if total > MAX_FILES_BYTES:
                    raise SandboxStartError(
                        f"code and dependencies are over {MAX_FILES_BYTES >> 20} MiB: too large for the microvm "
                        "backend, which sends them into the VM with the init frame"
                    )
                mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
                relative = path.relative_to(source).as_posix()
                files.append({"path": f"{target}/{relative}", "data": base64.b64encode(data).decode(), "mode": mode})
    return files


class MicroVMHost(SandboxHost):
    """One microVM: its shape, guest limits (the supervisor's control channel), files sent in `init`."""

    def __init__(self, backend: str, shape: VmShape, vm: VmProcess) -> None:
        self.backend = backend
        self.shape = shape
        self.vm = vm
        self.image: provided.ImageConfig | None = None  # an image function's image (language provided)

    @property
    def alive(self) -> bool:
        return self.vm.exit_report is None

    async def apply_limits(self, current: Limits, wanted: Limits) -> None:
        if wanted.network:
            raise SandboxStartError(no_network(self.backend))
        if wanted.memory_mb > self.shape.memory_mb or vcpus_for(wanted.cpus) != self.shape.vcpus:
            raise SandboxStartError(
                f"this microVM was started for {self.shape.memory_mb} MiB and {self.shape.vcpus} vCPU; the function "
                f"needs {wanted.memory_mb} MiB and {vcpus_for(wanted.cpus)} vCPU"
            )
        # Always: this also moves the agent into the function's cgroup (supervisor.py).
        await self.vm.control(f"limits {wanted.memory_mb * 2**20} {wanted.pids}")
        if wanted.cpus != current.cpus and self.vm.cgroup is not None:
            self.vm.cgroup.set_cpus(wanted.cpus)

    async def place(self, spec: FunctionSpec, frame: dict[str, Any]) -> None:
        frame["files"] = await asyncio.to_thread(collect_files, spec)  # the guest shares no directory with us
        if self.shape.runtime == provided.LANGUAGE:  # the relay writes the files, starts the bootstrap/entrypoint
            frame.update(provided_functions.init_fields(spec, frame, self.image))

    async def loaded(self, spec: FunctionSpec) -> None:
        await self.vm.control("seal")  # the code the agent wrote is read-only from now on, as in containers

    async def explain_crash(self, reason: str, limits: Limits) -> SandboxCrashed:
        await self.vm.wait_exit_report(2.0)
        report = self.vm.exit_report
        if report is not None and report[1] > 0:
            return SandboxOutOfMemory(f"the function exceeded its memory limit of {limits.memory_mb} MB")
        detail = f" (agent exit code {report[0]})" if report is not None else ""
        return SandboxCrashed(f"{reason}{detail}")

    async def destroy(self) -> None:
        await self.vm.stop()

    def stats(self) -> SandboxStats | None:
        """The QEMU process: its CPU time and resident memory (guest RAM it touched + QEMU's own)."""
        pid = self.vm.pid
        if pid is None:
            return None
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        values = {line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.startswith("Vm")}
        return SandboxStats(
            cpu_seconds=(int(fields[11]) + int(fields[12])) / ticks,
            memory_bytes=int(values.get("VmRSS", 0)) * 1024,
            memory_peak_bytes=int(values.get("VmHWM", 0)) * 1024 or None,
        )


class MicroVMSandbox(AgentSandbox):
    def __init__(
        self,
        backend: Backend,
        sandbox_id: str,
        shape: VmShape,
        vm: VmProcess,
        channel: AgentChannel,
        limits: Limits,
        start_path: str,
        timings: StartTimings,
        warm_timeout_s: float,
    ) -> None:
        self.microvm_host = MicroVMHost(backend.name, shape, vm)
        super().__init__(backend, sandbox_id, shape.runtime, channel, self.microvm_host, limits)
        self.shape = shape
        self.vm = vm
        self.start_path = start_path  # "boot" or "restore"
        self._timings = timings
        self._warm_timeout_s = warm_timeout_s

    async def warm(self) -> None:
        """Run the runtime once in the guest (off the request path: stem cells under TCG).

        A restored VM's QEMU has translated none of the guest's code yet; under TCG that makes the first
        load ~0.7 s (Python) slower. The agent's `warm` frame loads and calls a throwaway function first.
        """
        started = time.perf_counter()
        await self.warm_up(self._warm_timeout_s)
        self._timings.record(f"warm/{self.runtime}", (time.perf_counter() - started) * 1000)
