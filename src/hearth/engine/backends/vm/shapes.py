"""What a microVM is started with (its shape) and how a function's limits map onto one."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hearth.engine.sandbox import Limits, Runtime

GUEST_OVERHEAD_MB = 64  # guest RAM beyond the function's limit: kernel, init, page cache of the root disk
MIN_RAM_BUCKET_MB = 128


def ram_bucket(memory_mb: int) -> int:
    """The memory limit a VM is started for: a power of two, at least MIN_RAM_BUCKET_MB."""
    return max(MIN_RAM_BUCKET_MB, 1 << max(0, math.ceil(math.log2(max(1, memory_mb)))))


def vcpus_for(cpus: float) -> int:
    return max(1, math.ceil(cpus - 1e-9))


@dataclass(frozen=True)
class VmShape:
    """What a VM is started with; VMs of one shape are restored from one snapshot."""

    runtime: Runtime
    memory_mb: int  # the in-guest cgroup limit at start (load may lower it)
    vcpus: int
    pids: int
    tmpfs_mb: int
    disk: str = ""  # `provided`: the function's disk (disks.py), attached read-only as a second drive

    @property
    def ram_mb(self) -> int:
        return self.memory_mb + GUEST_OVERHEAD_MB


def shape_for(runtime: Runtime, limits: Limits, disk: str = "") -> VmShape:
    return VmShape(runtime, ram_bucket(limits.memory_mb), vcpus_for(limits.cpus), limits.pids, limits.tmpfs_mb, disk)


def start_limits(shape: VmShape) -> Limits:
    """The limits a VM of `shape` has until a function loads (load lowers them to the function's)."""
    return Limits(shape.memory_mb, float(shape.vcpus), shape.pids, shape.tmpfs_mb, False)
