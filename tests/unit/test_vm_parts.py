"""The microVM backends' pure parts: shapes, kernel arguments, timings, and one backend class per VMM.

Nothing here starts a VM (tests/engine/test_microvm.py does, through the API).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hearth.engine.backends.vm.backend import MicroVMBackend, firecracker_backend
from hearth.engine.backends.vm.firecracker import FirecrackerVmm
from hearth.engine.backends.vm.qemu import QemuVmm
from hearth.engine.backends.vm.shapes import GUEST_OVERHEAD_MB, ram_bucket, shape_for, start_limits, vcpus_for
from hearth.engine.backends.vm.timings import StartTimings
from hearth.engine.backends.vm.vmm import Vmm
from hearth.engine.sandbox import Limits


@pytest.mark.parametrize(("memory_mb", "bucket"), [(1, 128), (128, 128), (129, 256), (300, 512), (1024, 1024)])
def test_a_vm_gets_a_power_of_two_of_ram_at_least_128_mib(memory_mb: int, bucket: int) -> None:
    assert ram_bucket(memory_mb) == bucket


@pytest.mark.parametrize(("cpus", "vcpus"), [(0.1, 1), (1.0, 1), (1.01, 2), (2.0, 2), (2.5, 3)])
def test_vcpus_are_the_cpu_share_rounded_up(cpus: float, vcpus: int) -> None:
    assert vcpus_for(cpus) == vcpus


def test_a_shape_holds_the_function_and_the_guest_kernel() -> None:
    shape = shape_for("python", Limits(200, 1.5, 64, 32))
    assert (shape.memory_mb, shape.vcpus, shape.pids, shape.tmpfs_mb, shape.disk) == (256, 2, 64, 32, "")
    assert shape.ram_mb == 256 + GUEST_OVERHEAD_MB
    assert start_limits(shape) == Limits(256, 2.0, 64, 32, False)


def test_each_vmm_tells_the_guest_its_transport_and_whether_the_agent_starts_at_boot() -> None:
    shape = shape_for("javascript", Limits(128, 1.0, 128, 64))
    qemu = QemuVmm().kernel_args(shape, "kvm").split()
    firecracker = FirecrackerVmm().kernel_args(shape).split()
    assert "hearth.transport=virtio" in qemu and "reboot=t" in qemu
    assert "hearth.transport=vsock" in firecracker and "reboot=k" in firecracker and "reboot=t" not in firecracker
    assert "hearth.autostart=0" in qemu and "hearth.autostart=0" in firecracker  # JS: never in a snapshot
    python = shape_for("python", Limits(128, 1.0, 128, 64))
    assert "hearth.autostart=1" in QemuVmm().kernel_args(python, "kvm").split()
    assert "hearth.autostart=0" in FirecrackerVmm().kernel_args(python).split()  # vsock does not survive a snapshot


def test_start_timings_keep_the_recent_samples_of_each_kind() -> None:
    timings = StartTimings(keep=3)
    for ms in (10.0, 20.0, 30.0, 40.0):
        timings.record("boot/python", ms)
    timings.record("restore/python", 5.0)
    assert timings.summary() == {
        "boot/python": {"p50_ms": 30.0, "last_ms": 40.0, "samples": 3},
        "restore/python": {"p50_ms": 5.0, "last_ms": 5.0, "samples": 1},
    }


def test_the_two_vm_backends_are_one_class_with_different_vmms(tmp_path: Path) -> None:
    microvm = MicroVMBackend(run_dir=tmp_path / "microvm", owner="test")
    firecracker = firecracker_backend(run_dir=tmp_path / "firecracker", owner="test", binary="no-such-firecracker")
    assert type(microvm) is type(firecracker) is MicroVMBackend
    assert isinstance(microvm.vmm, QemuVmm) and isinstance(firecracker.vmm, FirecrackerVmm)
    assert (microvm.name, firecracker.name) == ("microvm", "firecracker")
    assert not issubclass(FirecrackerVmm, QemuVmm) and issubclass(FirecrackerVmm, Vmm)
    available, reason = firecracker.availability()
    assert not available and "no-such-firecracker is not on PATH" in reason
    assert firecracker.refuse({"network": True}) == (
        "the firecracker backend gives functions no network device; use the docker backend for network: true"
    )
    assert firecracker.describe()["accelerator"] == "kvm"
