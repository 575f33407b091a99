"""What differs between the VMMs a microVM backend can drive: the `Vmm` interface.

`MicroVMBackend` (backend.py) does everything both VMMs share: shapes, the snapshot store and its
locks, boot-or-restore, the agent's handshake, limits, timings and orphans. A `Vmm` does what
only it knows: whether it can run here, its command line or API calls, where the guest's streams
come from (QEMU: virtio-serial ports behind Unix sockets; Firecracker: vsock through one Unix
socket), and how a running guest is saved and restored. Implementations: qemu.py, firecracker.py.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hearth.engine.backends.vm.process import VmProcess
from hearth.engine.backends.vm.shapes import VmShape
from hearth.engine.backends.vm.snapshots import Snapshot
from hearth.engine.channel import AgentChannel
from hearth.engine.sandbox import Runtime
from hearth.images import microvm as microvm_image

BOOT_TIMEOUT_FLOOR_S = 60.0  # a TCG boot on a busy host takes 5-15 s
KERNEL_ARGS = (
    "console=ttyS0",
    "quiet",
    "panic=-1",  # a guest panic ends the VMM at once
    "reboot=t",
    "8250.nr_uarts=1",
    "cryptomgr.notests",
    "audit=0",
    "random.trust_cpu=on",
    # The guest runs one function and nothing else: its kernel/user speculation barriers protect
    # nothing the VM boundary does not, and cost boot and call time (above all under TCG).
    "mitigations=off",
)
KVM_SECURITY = "KVM: hardware virtualisation; the guest has its own kernel and only QEMU's small microvm device set"


@dataclass(frozen=True)
class Guest:
    """The files every VM of a backend boots (hearth.images.microvm): kernel, read-only root, initramfs."""

    image: microvm_image.GuestImage
    initramfs: Path


class SnapshotFailed(Exception):
    """Saving a guest failed; the VM it was taken from is still usable after `resume_after_failed_save`."""


def hearth_args(shape: VmShape, transport: str, autostart: bool) -> list[str]:
    """The kernel arguments the guest's init and supervisor read (init.sh, supervisor.py)."""
    return [
        f"hearth.runtime={shape.runtime}",
        f"hearth.mem={shape.memory_mb}",
        f"hearth.pids={shape.pids}",
        f"hearth.tmpfs={shape.tmpfs_mb}",
        f"hearth.transport={transport}",
        f"hearth.autostart={int(autostart)}",
    ]


class Vmm(abc.ABC):
    """One virtual machine monitor, as a microVM backend drives it."""

    name: str  # the backend's name
    kind: str  # what isolates, in a few words (GET /api/backends)
    label: str  # the VMM's name in messages
    vm_noun: str  # "microVM", "Firecracker VM"
    # Whether a runtime's snapshot holds its started agent (restores skip the runtime's start) or only the
    # booted guest (the agent starts after each restore).
    agent_in_snapshot: Mapping[Runtime, bool]
    restore_timeout_floor_s = 0.0  # a restore's deadline is at least this long
    probe_boot = False  # availability boots one guest first (where nothing cheaper says the VMM works)

    @abc.abstractmethod
    def missing(self) -> str | None:
        """Why this VMM cannot run on this host (before the guest image is looked at), or None."""

    @abc.abstractmethod
    def accelerator(
        self, setting: str, guest: Guest, scratch: Path, cache_dir: Path, probe: VmShape
    ) -> tuple[str, str]:
        """("kvm" | "tcg", why) for `setting` (auto, kvm, tcg); may boot `probe` in `scratch` to find out."""

    @abc.abstractmethod
    def describe(self, accelerator: tuple[str, str] | None) -> dict[str, Any]:
        """machine, accelerator, accelerator_reason, security and the VMM's version (GET /api/backends/<name>)."""

    @abc.abstractmethod
    def snapshot_key(self, guest: Guest, shape: VmShape, accel: str) -> str:
        """Names the snapshot of `shape`: it changes with everything a saved guest depends on."""

    @abc.abstractmethod
    def new_vm(self, vm_id: str, directory: Path, cache_dir: Path) -> VmProcess:
        """The (not yet started) process for a VM in `directory`."""

    @abc.abstractmethod
    async def boot(self, vm: VmProcess, guest: Guest, shape: VmShape, accel: str, deadline: float) -> None:
        """Start the guest from its kernel; return once its supervisor said "ready" on the attached control channel."""

    @abc.abstractmethod
    async def restore(
        self, vm: VmProcess, guest: Guest, shape: VmShape, accel: str, snapshot: Snapshot, deadline: float
    ) -> None:
        """Start the VM from `snapshot`; return once it runs with its control channel attached."""

    @abc.abstractmethod
    async def open_agent(self, vm: VmProcess, deadline: float, *, start: bool) -> AgentChannel:
        """The agent's stream; with `start`, tell the supervisor to start the agent first."""

    @abc.abstractmethod
    async def save(self, vm: VmProcess, work: Path, timeout_s: float) -> None:
        """Save the booted guest into `work` (at least `memory`); SnapshotFailed if it could not."""

    async def resume_after_failed_save(self, vm: VmProcess, deadline: float) -> None:
        """Make a VM whose save failed serve again (control channel attached, supervisor ready)."""
        return None

    def cleanup(self, run_dir: Path, cache_dir: Path) -> None:
        """Remove what this VMM leaves beyond the VM directories (orphans.py removes those)."""
        return None
