"""A host cgroup per VMM process: the CPU share of the function inside (the guest's own cgroup holds the rest)."""

from __future__ import annotations

import contextlib
from pathlib import Path

CPU_PERIOD_US = 100_000


class HostCpuCgroup:
    """A cgroup (v1 `cpu` controller or v2 `cpu`) for one QEMU process: its CPU quota."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @classmethod
    def create(cls, group: str, name: str) -> HostCpuCgroup | None:
        root = Path("/sys/fs/cgroup")
        try:
            if (root / "cgroup.controllers").exists():  # v2
                parent = root / group
                parent.mkdir(exist_ok=True)
                if "cpu" not in (parent / "cgroup.subtree_control").read_text().split():
                    (parent / "cgroup.subtree_control").write_text("+cpu")
                path, version = parent / name, 2
            elif (root / "cpu" / "cpu.cfs_quota_us").exists():
                (root / "cpu" / group).mkdir(exist_ok=True)
                path, version = root / "cpu" / group / name, 1
            else:
                return None
            path.mkdir(parents=True, exist_ok=True)  # parents: another Hearth's sweep may remove an empty group
        except OSError:
            return None
        return cls(path, version)

    def set_cpus(self, cpus: float) -> None:
        quota = max(1000, int(cpus * CPU_PERIOD_US))
        with contextlib.suppress(OSError):
            if self.version == 2:
                (self.path / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
            else:
                (self.path / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    def add(self, pid: int) -> None:
        with contextlib.suppress(OSError):
            (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()
