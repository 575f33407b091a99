"""MicroVMs as sandboxes: one backend class, driven by a VMM (QEMU's `microvm` machine or Firecracker).

Each sandbox is one VMM process running a guest of its own (Debian's cloud kernel, a read-only root
disk with python3 and nodejs, an initramfs with busybox, the virtio modules and Hearth's agents: see
hearth.images.microvm and init.sh). The guest has no network device at all. The host talks to the
agent over one stream, with the same framing as containers (docs/protocol.md), and to the guest's
root supervisor over a second (limits, fresh entropy and clock, and the agent's exit report: exit
code and whether its cgroup was OOM-killed). Where those streams come from, and how a VM is started,
saved and restored, is the VMM's part (vmm.py: qemu.py, firecracker.py); the rest is here.

Starting fast:

- **Snapshots.** The first VM of a shape (runtime, RAM, vCPUs) boots; once its supervisor (and, where
  the VMM's `agent_in_snapshot` says so, its agent) is ready it is saved, and every later VM of that
  shape is restored from the file instead of booting. A restored agent that was in the snapshot already
  said hello before it: the saved hello is reused. Restored clones get the host's time and fresh entropy.
- **Stem cells.** The engine's generic pre-started sandboxes work unchanged: a restored, agent-ready
  VM waits for its function (sandbox.py: `load` fits the function into the VM's shape or refuses it).

Limits: guest RAM is the function's memory rounded up to a power of two (at least 128 MiB) plus
`GUEST_OVERHEAD_MB` for the guest kernel (shapes.py); the function's exact `memory_mb` and the process
limit are a cgroup inside the guest, the CPU share a host cgroup quota on the VMM process (cgroups.py,
where the host's cgroup file system is writable), vCPUs = ceil(cpus).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hearth.engine import provided
from hearth.engine.backends.vm import provided_functions
from hearth.engine.backends.vm.cgroups import HostCpuCgroup
from hearth.engine.backends.vm.disks import FunctionDisks
from hearth.engine.backends.vm.firecracker import FIRECRACKER, FirecrackerVmm
from hearth.engine.backends.vm.orphans import HEARTH_IDENTITY, sweep_orphans
from hearth.engine.backends.vm.process import VmProcess
from hearth.engine.backends.vm.qemu import QemuVmm
from hearth.engine.backends.vm.sandbox import MicroVMSandbox, no_network
from hearth.engine.backends.vm.shapes import GUEST_OVERHEAD_MB, MIN_RAM_BUCKET_MB, VmShape, shape_for, start_limits
from hearth.engine.backends.vm.snapshots import SNAPSHOT_MAX_IDLE_S, Snapshot, SnapshotStore
from hearth.engine.backends.vm.timings import StartTimings
from hearth.engine.backends.vm.vmm import BOOT_TIMEOUT_FLOOR_S, Guest, SnapshotFailed, Vmm
from hearth.engine.channel import AgentChannel
from hearth.engine.sandbox import (
    Backend,
    Limits,
    Purpose,
    Runtime,
    Sandbox,
    SandboxCrashed,
    SandboxStartError,
)
from hearth.images import catalog, debian
from hearth.images import microvm as microvm_image

log = logging.getLogger(__name__)

AVAILABILITY_TTL_S = 5.0
WARM_TIMEOUT_FLOOR_S = 30.0


class MicroVMBackend(Backend):
    """The `microvm` backend with QemuVmm (the default), the `firecracker` backend with FirecrackerVmm."""

    runs_provided = True  # custom runtimes and image functions (provided_functions.py)

    def __init__(
        self,
        *,
        run_dir: Path,
        owner: str,
        vmm: Vmm | None = None,
        cache_dir: Path | None = None,
        accel: str = "auto",
        snapshots: bool = True,
        pids_limit: int = 128,
        tmpfs_mb: int = 64,
        max_log_bytes: int = 64 * 1024,
        max_result_bytes: int = 6 * 1024 * 1024,
        start_timeout_s: float = 30.0,
    ) -> None:
        if accel not in ("auto", "kvm", "tcg"):
            raise ValueError(f"accel must be auto, kvm or tcg, not {accel!r}")
        self.vmm = vmm or QemuVmm()
        self.name = self.vmm.name
        self.kind = self.vmm.kind
        self.run_dir = run_dir
        self.owner = owner
        self.cache_dir = cache_dir or microvm_image.default_cache_dir()
        self.accel_setting = accel
        self.snapshots_enabled = snapshots
        self.pids_limit = pids_limit
        self.tmpfs_mb = tmpfs_mb
        self.max_log_bytes = max_log_bytes
        self.max_result_bytes = max_result_bytes
        self.start_timeout_s = start_timeout_s
        self.snapshots = SnapshotStore(self.cache_dir / "snapshots")
        self.function_disks = FunctionDisks(self.cache_dir)
        self.snapshot_problem: str | None = None
        self.start_timings = StartTimings()
        self._shape_locks: dict[str, asyncio.Lock] = {}
        self._checked: tuple[float, bool, str] | None = None
        self._accel: tuple[str, str] | None = None  # (kvm|tcg, why)
        self._guest: Guest | None = None
        self._probe: tuple[bool, str] | None = None

    # ----- availability and facts
    def availability(self) -> tuple[bool, str]:
        now = time.monotonic()
        if self._checked is None or now - self._checked[0] > AVAILABILITY_TTL_S or not self._checked[1]:
            self._checked = (now, *self._check())
        return self._checked[1], self._checked[2]

    def _check(self) -> tuple[bool, str]:
        if (problem := self.vmm.missing()) is not None:
            return False, problem
        image = microvm_image.find_image(self.cache_dir)
        if image is None:
            return False, (
                f"no microVM guest image in {microvm_image.image_dir(self.cache_dir)}: build it with "
                "`make microvm-image` (as root)"
            )
        try:
            initramfs = microvm_image.ensure_initramfs(image, self.cache_dir)
        except OSError as exc:
            return False, f"cannot write the guest's initramfs into {self.cache_dir}: {exc}"
        if self._guest is None:  # once per process: drop what older versions left in the cache
            self.snapshots.prune()
            microvm_image.prune_initramfs(self.cache_dir, SNAPSHOT_MAX_IDLE_S)
            self.function_disks.prune()
        self._guest = Guest(image, initramfs)
        accel, why = self.accelerator()
        if self.accel_setting == "kvm" and accel != "kvm":
            return False, f"HEARTH_MICROVM_ACCEL=kvm, but KVM cannot run the guest here: {why}"
        if self.vmm.probe_boot:
            if self._probe is None:
                self._probe = self._probe_boot()
            return self._probe
        return True, "ok"

    def _probe_boot(self) -> tuple[bool, str]:
        """Boot the guest once (blocking) and wait for its agent."""

        async def probe() -> tuple[bool, str]:
            try:
                sandbox = await self._create("python", Limits(128, 1.0, self.pids_limit, self.tmpfs_mb))
            except SandboxStartError as exc:
                return False, f"a probe boot under {self.vmm.label} failed: {exc}"
            await sandbox.stop()
            return True, "ok"

        previous, self.snapshots_enabled = self.snapshots_enabled, False
        self._checked = (time.monotonic(), True, "probing")  # _create asks availability()
        try:
            return asyncio.run(probe())
        finally:
            self.snapshots_enabled = previous

    def accelerator(self) -> tuple[str, str]:
        """("kvm" | "tcg", why), found once (the VMM may boot a probe guest to find out)."""
        if self._accel is None:
            assert self._guest is not None, "availability() first"
            probe = VmShape("python", MIN_RAM_BUCKET_MB, 1, self.pids_limit, self.tmpfs_mb)
            scratch = self._ensure_run_dir()
            self._accel = self.vmm.accelerator(self.accel_setting, self._guest, scratch, self.cache_dir, probe)
        return self._accel

    def describe(self) -> dict[str, Any]:
        manifest: dict[str, Any] = {}
        image = self._guest.image if self._guest is not None else None
        if image is not None:
            with contextlib.suppress(OSError, ValueError):
                manifest = image.manifest
        return {
            **self.vmm.describe(self._accel),
            "guest_kernel": manifest.get("kernel_release"),
            "guest_packages": manifest.get("packages"),
            "guest_image": str(image.directory) if image else None,
            "snapshots": self.snapshots_enabled,
            "snapshot_problem": self.snapshot_problem,
            "agent_in_snapshot": dict(self.vmm.agent_in_snapshot),
            "network": "none (no network device)",
            "guest_overhead_mb": GUEST_OVERHEAD_MB,
            "starts": self.timings(),
        }

    def timings(self) -> dict[str, dict[str, float | int]]:
        """Median and last of recent starts by kind: boot/<runtime>, restore/<runtime>, snapshot/<runtime>."""
        return self.start_timings.summary()

    @property
    def client(self) -> Any:
        """The local Docker engine, which holds the images of `provided` VMs (None when it is not reachable)."""
        return self.function_disks.client

    def runtimes(self) -> list[str]:
        return [*super().runtimes(), catalog.default_runtime(provided.LANGUAGE)]

    def refuse(self, settings: Mapping[str, Any]) -> str | None:
        if settings.get("network"):
            return no_network(self.name)
        if settings.get("language") == provided.LANGUAGE:
            return provided_functions.refusal()
        runtime = settings.get("runtime")
        if runtime and catalog.runtime_image(str(runtime)).name not in self.runtimes():
            return (
                f"the {self.name} backend's guest image runs only {', '.join(self.runtimes())} "
                f"(built from Debian {debian.host_suite()}), not {runtime}"
            )
        return None

    def _ensure_run_dir(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o711)
        return self.run_dir

    # ----- sandboxes
    async def create(self, runtime: Runtime, limits: Limits, purpose: Purpose) -> Sandbox:
        started = time.perf_counter()
        name = catalog.runtime_image(runtime).name
        if name not in self.runtimes():  # the guest image holds the host suite's python3 and nodejs only
            raise SandboxStartError(f"the {self.name} backend runs only {', '.join(self.runtimes())}, not {name}")
        runtime = catalog.language_of(name)  # the guest's agents and snapshots are per language
        try:
            disk, image = "", None
            if runtime == provided.LANGUAGE:
                disk, image = await provided_functions.function_disk(self.function_disks, purpose.image)
            sandbox = await self._create(runtime, limits, disk)
            sandbox.microvm_host.image = image
            if purpose.stem and self.accelerator()[0] == "tcg":
                await sandbox.warm()
        except Exception as exc:
            self.start_costs.record_failure(f"{type(exc).__name__}: {exc}")
            raise
        ms = (time.perf_counter() - started) * 1000
        self.start_costs.record(name, ms)
        self.start_timings.record(f"{sandbox.start_path}/{runtime}", ms)
        return sandbox

    async def _create(self, runtime: Runtime, limits: Limits, disk: str = "") -> MicroVMSandbox:
        if limits.network:
            raise SandboxStartError(no_network(self.name))
        available, reason = await asyncio.to_thread(self.availability)
        if not available:
            raise SandboxStartError(f"the {self.name} backend is not available here: {reason}")
        accel, _ = self.accelerator()
        assert self._guest is not None
        shape = shape_for(runtime, limits, disk)
        at_start = start_limits(shape)
        key = self.vmm.snapshot_key(self._guest, shape, accel)
        if not self.snapshots_enabled:
            return await self._boot(shape, accel, at_start, key, save=False)
        if (snapshot := self.snapshots.get(key)) is not None:
            try:
                return await self._restore(shape, accel, snapshot, at_start)
            except SandboxStartError as exc:
                log.warning("restoring a %s microVM failed, booting one (snapshot discarded): %s", runtime, exc)
                self.snapshots.discard(key)
        # No snapshot of this shape yet: one boot saves it, here or in another Hearth process; everyone
        # else waits for it and restores (parallel boots under TCG would only slow each other down).
        async with self._shape_locks.setdefault(key, asyncio.Lock()):
            deadline = time.monotonic() + max(self.start_timeout_s, BOOT_TIMEOUT_FLOOR_S)
            while (lock := self.snapshots.try_lock(key)) is None and time.monotonic() < deadline:
                if self.snapshots.get(key) is not None:
                    break
                await asyncio.sleep(0.2)
            try:
                if (snapshot := self.snapshots.get(key)) is not None:
                    return await self._restore(shape, accel, snapshot, at_start)
                return await self._boot(shape, accel, at_start, key, save=lock is not None)
            finally:
                if lock is not None:
                    self.snapshots.unlock(lock)

    def _new_vm(self, limits: Limits) -> VmProcess:
        vm_id = secrets.token_hex(6)
        directory = self._ensure_run_dir() / vm_id
        directory.mkdir(mode=0o700)
        (directory / "hearth.pid").write_text(f"{HEARTH_IDENTITY}\n")  # whose VM this is (orphans.py)
        vm = self.vmm.new_vm(vm_id, directory, self.cache_dir)
        vm.cgroup = HostCpuCgroup.create(f"hearth-microvm-{self.owner}", vm_id)
        if vm.cgroup is not None:  # boots and restores run at full speed; `load` sets the function's share
            vm.cgroup.set_cpus(limits.cpus)
        return vm

    def _sandbox(
        self, shape: VmShape, vm: VmProcess, channel: AgentChannel, limits: Limits, path: str
    ) -> MicroVMSandbox:
        warm_timeout_s = max(WARM_TIMEOUT_FLOOR_S, self.start_timeout_s)
        return MicroVMSandbox(
            self, vm.directory.name, shape, vm, channel, limits, path, self.start_timings, warm_timeout_s
        )

    def _ms_since(self, started: float) -> float:
        return (time.perf_counter() - started) * 1000

    async def _boot(self, shape: VmShape, accel: str, limits: Limits, key: str, save: bool) -> MicroVMSandbox:
        """Boot a VM; with `save` (the caller holds the shape's lock) snapshot it and serve a restored one."""
        assert self._guest is not None
        started = time.perf_counter()
        vm = self._new_vm(limits)
        channel: AgentChannel | None = None
        in_snapshot = self.vmm.agent_in_snapshot[shape.runtime]
        try:
            deadline = time.monotonic() + max(self.start_timeout_s, BOOT_TIMEOUT_FLOOR_S)
            await self.vmm.boot(vm, self._guest, shape, accel, deadline)
            self.start_timings.record(f"boot-to-supervisor/{shape.runtime}", self._ms_since(started))
            if in_snapshot:
                channel = await self.vmm.open_agent(vm, deadline, start=False)
                await self._handshake(vm, channel, deadline)
                self.start_timings.record(f"boot-to-ready/{shape.runtime}", self._ms_since(started))
            snapshot = await self._save(vm, shape, key, channel.hello if channel else None) if save else None
            if save and snapshot is None:
                await self.vmm.resume_after_failed_save(vm, deadline)
            if channel is None and snapshot is None:
                channel = await self.vmm.open_agent(vm, deadline, start=True)
                await self._handshake(vm, channel, deadline)
                self.start_timings.record(f"boot-to-ready/{shape.runtime}", self._ms_since(started))
        except BaseException:
            await channel_close(channel)
            await vm.stop()
            raise
        if snapshot is not None:
            # A restored VM holds only the memory its guest touched (measured: ~130 MiB RSS for a Python guest
            # vs ~265 MiB for the VM that booted it, which also holds the kernel it loaded): serve from one.
            await channel_close(channel)
            await vm.stop()
            try:
                return await self._restore(shape, accel, snapshot, limits)
            except SandboxStartError as exc:  # a snapshot this host cannot restore: boot from now on
                log.warning("a %s snapshot saved here does not restore; snapshots off: %s", self.vmm.vm_noun, exc)
                self.snapshots.discard(key)
                self.snapshots_enabled = False
                self.snapshot_problem = str(exc)[:500]
                return await self._boot(shape, accel, limits, key, save=False)
        assert channel is not None
        return self._sandbox(shape, vm, channel, limits, "boot")

    async def _handshake(self, vm: VmProcess, channel: AgentChannel, deadline: float) -> None:
        try:
            await channel.handshake(max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            raise SandboxStartError(f"the microVM's agent did not start in time: {vm.log_tail()}") from None
        except SandboxCrashed as exc:
            raise SandboxStartError(f"the microVM's agent did not start: {exc}: {vm.log_tail()}") from None

    async def _save(self, vm: VmProcess, shape: VmShape, key: str, hello: dict[str, Any] | None) -> Snapshot | None:
        """Snapshot a freshly booted VM (agent ready, or not started: the VMM's agent_in_snapshot) for its shape."""
        work = self.snapshots.workdir(key)
        try:
            started = time.perf_counter()
            try:
                await self.vmm.save(vm, work, self.start_timeout_s)
            except SnapshotFailed as exc:
                log.warning("could not save a %s %s snapshot: %s", shape.runtime, self.vmm.vm_noun, exc)
                return None
            ms = self._ms_since(started)
            meta = {
                "hello": hello,
                "vmm": self.vmm.name,
                "shape": asdict(shape),
                "created_at": time.time(),
                "save_ms": round(ms, 1),
                "bytes": (work / "memory").stat().st_size,
            }
            (work / "meta.json").write_text(json.dumps(meta, indent=1))
            snapshot = self.snapshots.commit(key, work)
            self.start_timings.record(f"snapshot/{shape.runtime}", ms)
            log.info(
                "saved a %s %s snapshot (%.0f MiB) in %.0f ms",
                shape.runtime,
                self.vmm.vm_noun,
                meta["bytes"] / 2**20,
                ms,
            )
            return snapshot
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def _restore(self, shape: VmShape, accel: str, snapshot: Snapshot, limits: Limits) -> MicroVMSandbox:
        assert self._guest is not None
        started = time.perf_counter()
        hello = snapshot.meta["hello"]
        vm = self._new_vm(limits)
        channel: AgentChannel | None = None
        try:
            deadline = time.monotonic() + max(self.start_timeout_s, self.vmm.restore_timeout_floor_s)
            await self.vmm.restore(vm, self._guest, shape, accel, snapshot, deadline)
            self.snapshots.touch(snapshot)
            # A restored guest's clock resumes at the snapshot's moment, and clones of one snapshot share its
            # entropy pool: the host's time, then fresh host randomness and a forced reseed.
            await vm.control(f"clock {time.time_ns()}")
            await vm.control(f"seed {secrets.token_hex(64)}")
            if hello is not None:
                channel = await self.vmm.open_agent(vm, deadline, start=False)
                channel.hello = dict(hello)
            else:  # the runtime starts now (the VMM's agent_in_snapshot)
                deadline = time.monotonic() + max(self.start_timeout_s, BOOT_TIMEOUT_FLOOR_S)
                channel = await self.vmm.open_agent(vm, deadline, start=True)
                await self._handshake(vm, channel, deadline)
            self.start_timings.record(f"restore-to-ready/{shape.runtime}", self._ms_since(started))
        except SandboxCrashed as exc:
            await channel_close(channel)
            await vm.stop()
            raise SandboxStartError(f"the restored {self.vmm.vm_noun} did not answer: {exc}") from None
        except BaseException:
            await channel_close(channel)
            await vm.stop()
            raise
        return self._sandbox(shape, vm, channel, limits, "restore")

    async def cleanup_orphans(self) -> int:
        """Kill the VMs that a previous run of this Hearth, or any Hearth on this host that has died, left behind.

        (A guest also powers itself off when its host disconnects, or never connects within 120 s.)
        """
        removed = await asyncio.to_thread(sweep_orphans, self.run_dir, f"hearth-microvm-{self.owner}")
        await asyncio.to_thread(self.vmm.cleanup, self.run_dir, self.cache_dir)
        return removed


def firecracker_backend(*, binary: str = FIRECRACKER, **settings: Any) -> MicroVMBackend:
    """The `firecracker` backend: the microVM backend driving Firecracker (KVM only, so no accelerator setting)."""
    settings.pop("accel", None)
    return MicroVMBackend(vmm=FirecrackerVmm(binary), accel="kvm", **settings)


async def channel_close(channel: AgentChannel | None) -> None:
    if channel is not None:
        await channel.close()
