"""VMs that a Hearth which has gone (or this one, before a restart) left behind: found by their directories."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from hearth.engine.backends.vm.host import read_text


def process_identity(pid: int) -> str | None:
    """ "pid starttime" of a running process, or None."""
    try:
        return f"{pid} {Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return None


HEARTH_IDENTITY = process_identity(os.getpid())


def sweep_orphans(run_dir: Path, cgroup_group: str) -> int:
    """Kill and remove the VMs under `run_dir` (or a dead Hearth's of its kind) and empty cgroups; how many were killed.

    Each VM directory records its Hearth process (pid and start time, `hearth.pid`); a VMM is only
    killed when its pidfile's process still has the VM's id on its command line.
    """
    removed = 0
    candidates = list(run_dir.glob("*")) if run_dir.is_dir() else []
    kind = run_dir.name  # "microvm" / "firecracker"
    candidates += [d for d in Path(tempfile.gettempdir()).glob(f"hearth-*/{kind}/*") if d.parent != run_dir]
    for directory in candidates:
        if not directory.is_dir():
            continue
        if directory.parent != run_dir:  # another Hearth's VM: only if that Hearth is gone
            recorded = read_text(directory / "hearth.pid").strip()
            if not recorded or process_identity(int(recorded.split()[0])) == recorded:
                continue
        for pidfile in ("qemu.pid", "vmm.pid"):
            pid = read_text(directory / pidfile).strip()
            if pid.isdigit() and directory.name in read_text(Path(f"/proc/{pid}/cmdline")).replace("\0", " "):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
                removed += 1
        shutil.rmtree(directory, ignore_errors=True)
    for root in (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")):  # empty cgroups of gone VMs
        for group in root.glob("hearth-microvm-*") if root.is_dir() else []:
            for child in group.iterdir():
                if child.is_dir() and (group.name == cgroup_group or not read_text(child / "cgroup.procs").strip()):
                    with contextlib.suppress(OSError):
                        child.rmdir()
            if group.name != cgroup_group:
                with contextlib.suppress(OSError):  # only succeeds when empty
                    group.rmdir()
    return removed
