"""MicroVMs as sandboxes: QEMU's `microvm` machine, KVM where a probe boot works, TCG otherwise.

Each sandbox is one QEMU process running a guest of its own (Debian's cloud kernel, a read-only root
disk with python3 and nodejs, an initramfs with busybox, the virtio modules and Hearth's agents: see
`microvm_image.py` and `init.sh`). The guest has no network device at all. The host talks to
the agent over a virtio-serial port backed by a Unix socket in the sandbox's directory, with the same
framing as containers (docs/protocol.md); a second port carries a few control lines to the guest's
init (limits, fresh entropy, and the agent's exit report: exit code and whether its cgroup was
OOM-killed). The function's code travels in the init frame (`files`): no directory is shared.

Starting fast:

- **Snapshots.** The first VM of a shape (runtime, RAM, vCPUs) boots; once its agent has said hello
  it is saved with QMP `migrate` to a file (while running, then resumed: it still serves), and every
  later VM of that shape is restored from the file with `-incoming defer` + `migrate-incoming`
  instead of booting. The host connects both ports *before* the guest state is loaded, so the guest
  never sees its host side disconnected (the agent would read end-of-file and exit). A restored
  agent already said hello before the snapshot: the saved hello is reused.
- **Stem cells.** The engine's generic pre-started sandboxes work unchanged: a restored, agent-ready
  VM waits for its function. A VM's RAM and vCPUs are fixed at start, so `load` moves the in-guest
  cgroup limits down to the function's and refuses a function that does not fit (the engine then
  starts a VM of the right shape).

Limits: guest RAM is the function's memory rounded up to a power of two (at least 128 MiB) plus
`GUEST_OVERHEAD_MB` for the guest kernel; the function's exact `memory_mb` and the process limit are
a cgroup inside the guest, the CPU share a host cgroup quota on the QEMU process (where the host's
cgroup file system is writable), vCPUs = ceil(cpus). QEMU runs with `-sandbox on` (seccomp: no
spawning, no obsolete or resource-control system calls) and, when Hearth runs as root, drops to
`nobody` (`-runas`) before the guest starts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import fcntl
import json
import logging
import math
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hearth.engine import provided
from hearth.engine.agent_sandbox import AgentSandbox, SandboxHost
from hearth.engine.backends.vm import provided_functions
from hearth.engine.backends.vm.disks import FunctionDisks
from hearth.engine.channel import AgentChannel
from hearth.engine.sandbox import (
    Backend,
    FunctionSpec,
    Limits,
    Purpose,
    Reply,
    Runtime,
    Sandbox,
    SandboxCrashed,
    SandboxOutOfMemory,
    SandboxStartError,
    SandboxStats,
)
from hearth.images import catalog, debian
from hearth.images import microvm as microvm_image

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
GUEST_OVERHEAD_MB = 64  # guest RAM beyond the function's limit: kernel, init, page cache of the root disk
MIN_RAM_BUCKET_MB = 128
TB_SIZE_MB = 64  # TCG's translated-code cache (QEMU's default of up to 1 GiB would grow with every VM)
MAX_FILES_BYTES = 48 * 2**20  # code + dependencies sent in the init frame (base64 inside JSON)
CPU_PERIOD_US = 100_000
BOOT_TIMEOUT_FLOOR_S = 60.0  # a TCG boot on a busy host takes 5-15 s
KVM_PROBE_TIMEOUT_S = 20.0
CONTROL_TIMEOUT_S = 10.0
AVAILABILITY_TTL_S = 5.0
SNAPSHOT_MAX_IDLE_S = 3 * 86400  # snapshots (and initramfs files) unused this long are removed
SECCOMP = "on,obsolete=deny,spawn=deny,resourcecontrol=deny"  # elevateprivileges must stay allowed for -runas
KERNEL_ARGS = (
    "console=ttyS0",
    "quiet",
    "panic=-1",  # a guest panic ends QEMU (-no-reboot) at once
    "reboot=t",
    "8250.nr_uarts=1",
    "cryptomgr.notests",
    "audit=0",
    "random.trust_cpu=on",
    # The guest runs one function and nothing else: its kernel/user speculation barriers protect
    # nothing the VM boundary does not, and cost boot and call time (above all under TCG).
    "mitigations=off",
)
TCG_SECURITY = (
    "TCG: QEMU's documentation does not treat TCG as a security boundary; the guest kernel separates the "
    "function from the host only as well as QEMU's emulator and device models do (seccomp-confined, run as nobody)"
)
KVM_SECURITY = "KVM: hardware virtualisation; the guest has its own kernel and only QEMU's small microvm device set"
NO_NETWORK = "the microvm backend gives functions no network device; use the docker backend for network: true"
# Whether a runtime's snapshot holds its started agent (restores skip the runtime's start) or only the
# booted guest (the agent starts after each restore). Node's OpenSSL generator and V8's Math.random
# are seeded when node starts: clones of a snapshot taken after that would produce the same "random"
# bytes (measured: identical crypto.randomBytes and randomUUID in two restored VMs). Python draws
# only from the kernel (os.urandom, and `random` seeds itself from it on first import), which the
# supervisor reseeds at every restore; what clones share is the str-hash secret (a DoS hardening).
# The relay (custom runtimes) holds no secret and seeds nothing its runtime uses: the runtime starts at load.
AGENT_IN_SNAPSHOT: dict[str, bool] = {"python": True, "javascript": False, "provided": True}
PR_SET_THP_DISABLE = 41


# ------------------------------------------------------------------------------------------------ shapes


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


def host_tsc_khz() -> int | None:
    """The host's TSC frequency, which a TCG guest's TSC runs at (from /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return int(float(line.split(":", 1)[1]) * 1000)
    except (OSError, ValueError):
        pass
    return None


_THP_DISABLED = False


def disable_thp_for_children() -> None:
    """PR_SET_THP_DISABLE on this process, inherited by the QEMUs it starts.

    QEMU madvises guest RAM for transparent huge pages: then every page the guest touches makes the
    host allocate 2 MiB, and a restored 192 MiB guest is almost wholly resident (measured: 100 MiB
    of guest RAM resident with THP vs 73 MiB without, for 71 MiB of saved state).
    """
    global _THP_DISABLED
    if _THP_DISABLED:
        return
    _THP_DISABLED = True
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)


# -------------------------------------------------------------------------------------------------- QMP


class QmpError(RuntimeError):
    pass


class Qmp:
    """A blocking QMP client (used from worker threads: only starts, snapshots and restores need it)."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:  # QEMU creates the monitor's socket after the chardevs it was given before it
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout_s)
            try:
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        self.file = self.sock.makefile("rb")
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise QmpError("QEMU closed its monitor")
        return json.loads(line)  # type: ignore[no-any-return]

    def execute(self, command: str, fd: int | None = None, **arguments: Any) -> Any:
        message = json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n"
        if fd is None:
            self.sock.sendall(message)
        else:  # SCM_RIGHTS: QEMU keeps the descriptor under the name in `fdname`
            socket.send_fds(self.sock, [message], [fd])
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise QmpError(f"{command}: {reply['error'].get('desc', reply['error'])}")
            # anything else is an asynchronous event: not needed here

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()


# ------------------------------------------------------------------------------------------- host cgroup


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


# ------------------------------------------------------------------------------------------------ the VM


class MicroVM:
    """One QEMU process and the host ends of its sockets."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.proc: asyncio.subprocess.Process | None = None
        self.cgroup: HostCpuCgroup | None = None
        self.exit_report: tuple[int, int] | None = None  # (agent exit code, OOM kills in its cgroup)
        self.control_closed = asyncio.Event()
        self._control: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._control_task: asyncio.Task[None] | None = None
        self._replies: asyncio.Queue[str] = asyncio.Queue()
        self._control_lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def path(self, name: str) -> Path:
        return self.directory / name

    def qemu_log(self) -> str:
        with contextlib.suppress(OSError):
            text = self.path("qemu.log").read_text(errors="replace").strip()
            console = self.path("console.log").read_text(errors="replace").strip()
            joined = "\n".join(part for part in (text, console[-1500:]) if part)
            return joined[-2500:] or "(no output)"
        return "(no output)"

    async def start(self, command: list[str], cgroup: HostCpuCgroup | None, cwd: Path | None = None) -> None:
        disable_thp_for_children()
        with open(self.path("qemu.log"), "wb") as output:
            self.proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd,
            )
        self.cgroup = cgroup
        if cgroup is not None:
            cgroup.add(self.proc.pid)

    async def connect(self, name: str, deadline: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to one of QEMU's listening sockets (it creates them shortly after it starts)."""
        path = str(self.path(f"{name}.sock"))
        while True:
            try:
                return await asyncio.open_unix_connection(path, limit=2**20)
            except (FileNotFoundError, ConnectionRefusedError):
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise SandboxStartError(
                        f"QEMU exited with code {self.proc.returncode}: {self.qemu_log()}"
                    ) from None
                if time.monotonic() > deadline:
                    raise SandboxStartError(f"QEMU did not open its {name} socket in time") from None
                await asyncio.sleep(0.005)

    def attach_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._control = (reader, writer)
        self._control_task = asyncio.create_task(self._read_control(reader))

    async def detach_control(self) -> None:
        """Close the control stream on purpose (Firecracker: before a snapshot); attach_control may follow."""
        if self._control_task is not None:
            self._control_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._control_task
        if self._control is not None:
            self._control[1].close()
        self._control, self._control_task = None, None
        self.control_closed = asyncio.Event()
        self._replies = asyncio.Queue()

    async def _read_control(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                text = line.decode(errors="replace").strip()
                if text.startswith("exit "):  # the agent ended; the guest is about to power off
                    parts = text.split()
                    with contextlib.suppress(ValueError, IndexError):
                        self.exit_report = (int(parts[1]), int(parts[2]))
                    self.kill()
                elif text:
                    self._replies.put_nowait(text)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.control_closed.set()

    async def control(self, command: str, timeout_s: float = CONTROL_TIMEOUT_S) -> str:
        """One line to the guest's init, one line back ("ok", "pong" or "error ...")."""
        if self._control is None or self.control_closed.is_set():
            raise SandboxCrashed("the microVM's control port is closed")
        async with self._control_lock:
            writer = self._control[1]
            writer.write(command.encode() + b"\n")
            await writer.drain()
            try:
                reply = await asyncio.wait_for(self._replies.get(), timeout_s)
            except TimeoutError:
                raise SandboxCrashed(f"the guest did not answer {command.split()[0]!r}") from None
        if reply.startswith("error"):
            raise SandboxCrashed(f"the guest refused {command.split()[0]!r}: {reply}")
        return reply

    async def expect(self, line: str, timeout_s: float) -> None:
        """Wait for an unsolicited line from the guest (the supervisor's "ready" once it serves)."""
        try:
            got = await asyncio.wait_for(self._replies.get(), timeout_s)
        except TimeoutError:
            raise SandboxStartError(f"the guest did not say {line!r} in time: {self.qemu_log()}") from None
        if got != line:
            raise SandboxStartError(f"the guest said {got!r} instead of {line!r}")

    async def wait_exit_report(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.control_closed.wait(), timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def stop(self) -> None:
        if self._control is not None:
            with contextlib.suppress(Exception):
                self._control[1].close()
        self.kill()
        if self.proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 10)
        if self._control_task is not None:
            self._control_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._control_task
        if self.cgroup is not None:
            self.cgroup.remove()
        shutil.rmtree(self.directory, ignore_errors=True)

    # ----- QMP (blocking: run in a worker thread)
    def qmp_snapshot(self, target_fd: int, timeout_s: float) -> None:
        """Save the running guest to `target_fd` and let it run on."""
        qmp = Qmp(self.path("qmp.sock"), timeout_s)
        try:
            qmp.execute("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
            qmp.execute("getfd", fd=target_fd, fdname="snapshot")
            qmp.execute("migrate", uri="fd:snapshot")
            deadline = time.monotonic() + timeout_s
            while True:
                status = qmp.execute("query-migrate").get("status")
                if status == "completed":
                    break
                if status in ("failed", "cancelled") or time.monotonic() > deadline:
                    with contextlib.suppress(QmpError):
                        qmp.execute("migrate_cancel")
                    raise QmpError(f"saving the VM ended {status}")
                time.sleep(0.005)
        finally:
            with contextlib.suppress(QmpError, OSError):
                qmp.execute("cont")  # the saved VM goes on serving
            qmp.close()

    def qmp_restore(self, source_fd: int, timeout_s: float) -> None:
        """Load a saved guest into this (`-incoming defer`) QEMU and wait until it runs."""
        qmp = Qmp(self.path("qmp.sock"), timeout_s)
        try:
            qmp.execute("getfd", fd=source_fd, fdname="snapshot")
            qmp.execute("migrate-incoming", uri="fd:snapshot")
            deadline = time.monotonic() + timeout_s
            while (status := qmp.execute("query-status").get("status")) != "running":
                if status not in ("inmigrate", "paused", "prelaunch", "restore-vm") or time.monotonic() > deadline:
                    raise QmpError(f"restoring the VM ended in state {status}")
                time.sleep(0.002)
        finally:
            qmp.close()


# ------------------------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class Snapshot:
    directory: Path

    @property
    def memory(self) -> Path:
        return self.directory / "memory"

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.directory / "meta.json").read_text())  # type: ignore[no-any-return]


class SnapshotStore:
    """Saved agent-ready guests under <cache>/snapshots/<key>/ (memory + meta.json), one per VM shape."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, key: str) -> Snapshot | None:
        snapshot = Snapshot(self.root / key)
        return snapshot if (snapshot.directory / "meta.json").exists() and snapshot.memory.exists() else None

    def discard(self, key: str) -> None:
        shutil.rmtree(self.root / key, ignore_errors=True)

    def touch(self, snapshot: Snapshot) -> None:
        with contextlib.suppress(OSError):
            os.utime(snapshot.directory / "meta.json")

    def prune(self, max_age_s: float = SNAPSHOT_MAX_IDLE_S) -> int:
        """Remove snapshots not restored for `max_age_s` (older agents, images or shapes nobody uses)."""
        removed = 0
        if not self.root.is_dir():
            return 0
        now = time.time()
        for entry in self.root.iterdir():
            meta = entry / "meta.json"
            try:
                stale = now - (meta if meta.exists() else entry).stat().st_mtime > max_age_s
            except OSError:
                continue
            if stale and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
            elif stale and entry.name.endswith(".lock"):
                with contextlib.suppress(OSError):
                    entry.unlink()
        return removed

    def try_lock(self, key: str) -> int | None:
        """The lock for saving `key` (a descriptor to pass to `unlock`), or None while another process holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / f".{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @staticmethod
    def unlock(fd: int) -> None:
        os.close(fd)

    def workdir(self, key: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))

    def commit(self, key: str, work: Path) -> Snapshot:
        target = self.root / key
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
        return Snapshot(target)


# --------------------------------------------------------------------------------------------- sandbox


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

    def __init__(self, backend: MicroVMBackend, shape: VmShape, vm: MicroVM) -> None:
        self.shape = shape
        self.vm = vm
        self._backend = backend
        self.image: provided.ImageConfig | None = None  # an image function's image (language provided)

    @property
    def alive(self) -> bool:
        return self.vm.exit_report is None

    async def apply_limits(self, current: Limits, wanted: Limits) -> None:
        if wanted.network:
            raise SandboxStartError(NO_NETWORK)
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

    def spent(self, replies: Sequence[Reply]) -> bool:
        return self.shape.runtime == provided.LANGUAGE and provided_functions.runtime_exited(replies)

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
        backend: MicroVMBackend,
        sandbox_id: str,
        shape: VmShape,
        vm: MicroVM,
        channel: AgentChannel,
        limits: Limits,
        start_path: str,
    ) -> None:
        self.microvm_host = MicroVMHost(backend, shape, vm)
        super().__init__(backend, sandbox_id, shape.runtime, channel, self.microvm_host, limits)
        self.shape = shape
        self.vm = vm
        self.start_path = start_path  # "boot" or "restore"
        self._microvm = backend

    async def warm(self) -> None:
        """Run the runtime once in the guest (off the request path: stem cells under TCG).

        A restored VM's QEMU has translated none of the guest's code yet; under TCG that makes the first
        load ~0.7 s (Python) slower. The agent's `warm` frame loads and calls a throwaway function first.
        """
        started = time.perf_counter()
        await self.warm_up(max(30.0, self._microvm.start_timeout_s))
        self._microvm._time(f"warm/{self.runtime}", (time.perf_counter() - started) * 1000)


# --------------------------------------------------------------------------------------------- backend


class MicroVMBackend(Backend):
    name = "microvm"
    kind = "virtual machine: QEMU microvm with a guest kernel of its own (KVM where it works, else TCG emulation)"
    runs_provided = True  # custom runtimes and image functions (provided_functions.py)

    def __init__(
        self,
        *,
        run_dir: Path,
        owner: str,
        cache_dir: Path | None = None,
        accel: str = "auto",
        snapshots: bool = True,
        pids_limit: int = 128,
        tmpfs_mb: int = 64,
        max_log_bytes: int = 64 * 1024,
        max_result_bytes: int = 6 * 1024 * 1024,
        start_timeout_s: float = 30.0,
        qemu: str = QEMU,
    ) -> None:
        if accel not in ("auto", "kvm", "tcg"):
            raise ValueError(f"accel must be auto, kvm or tcg, not {accel!r}")
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
        self.qemu = qemu
        self.snapshots = SnapshotStore(self.cache_dir / "snapshots")
        self.function_disks = FunctionDisks(self.cache_dir)
        self.snapshot_problem: str | None = None
        self._shape_locks: dict[str, asyncio.Lock] = {}
        self._checked: tuple[float, bool, str] | None = None
        self._accel: tuple[str, str] | None = None  # (kvm|tcg, why)
        self._image: microvm_image.GuestImage | None = None
        self._initramfs: Path | None = None
        self._qemu_version: str | None = None
        self._timings: dict[str, deque[float]] = {}
        self._tsc_khz = host_tsc_khz()

    # ----- availability and facts
    def availability(self) -> tuple[bool, str]:
        now = time.monotonic()
        if self._checked is None or now - self._checked[0] > AVAILABILITY_TTL_S or not self._checked[1]:
            self._checked = (now, *self._check())
        return self._checked[1], self._checked[2]

    def _check(self) -> tuple[bool, str]:
        qemu = shutil.which(self.qemu)
        if qemu is None:
            return False, (
                f"{self.qemu} is not installed (Debian's qemu-system-x86; as root: bash scripts/install-system.sh)"
            )
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
        if self._image is None:  # once per process: drop what older versions left in the cache
            self.snapshots.prune()
            microvm_image.prune_initramfs(self.cache_dir, SNAPSHOT_MAX_IDLE_S)
            self.function_disks.prune()
        self._image, self._initramfs = image, initramfs
        accel, why = self.accelerator()
        if self.accel_setting == "kvm" and accel != "kvm":
            return False, f"HEARTH_MICROVM_ACCEL=kvm, but KVM cannot run the guest here: {why}"
        return True, "ok"

    def qemu_version(self) -> str:
        if self._qemu_version is None:
            try:
                out = subprocess.run([self.qemu, "--version"], capture_output=True, text=True, timeout=10).stdout
                self._qemu_version = out.splitlines()[0].strip() if out.strip() else "unknown"
            except (OSError, subprocess.SubprocessError):
                self._qemu_version = "unknown"
        return self._qemu_version

    def accelerator(self) -> tuple[str, str]:
        """("kvm" | "tcg", why): KVM when a probe boot of the real guest under KVM reaches its agent."""
        if self._accel is None:
            if self.accel_setting == "tcg":
                self._accel = ("tcg", "HEARTH_MICROVM_ACCEL=tcg")
            else:
                self._accel = self._probe_kvm_cached()
        return self._accel

    def _probe_kvm_cached(self) -> tuple[str, str]:
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return ("tcg", "no usable /dev/kvm")
        assert self._image is not None and self._initramfs is not None
        key = microvm_image.digest(
            {
                "qemu": self.qemu_version(),
                "image": self._image.key,
                "initramfs": self._initramfs.name,
                "host": os.uname().release,
                "cpu": _cpu_model(),
            }
        )
        record = self.cache_dir / "kvm-probe.json"
        try:
            cached = json.loads(record.read_text())
        except (OSError, ValueError):
            cached = {}
        if key in cached:
            return (cached[key]["accel"], cached[key]["reason"])
        accel, reason = self._probe_kvm()
        cached[key] = {"accel": accel, "reason": reason, "at": time.time()}
        with contextlib.suppress(OSError):
            record.write_text(json.dumps(cached, indent=1))
        log.info("microvm accelerator: %s (%s)", accel, reason)
        return (accel, reason)

    def _probe_kvm(self) -> tuple[str, str]:
        """Boot the Python guest under KVM and wait for its agent's hello (blocking; a few seconds)."""
        directory = Path(tempfile.mkdtemp(prefix="kvm-probe-", dir=self._ensure_run_dir()))
        shape = VmShape("python", MIN_RAM_BUCKET_MB, 1, self.pids_limit, self.tmpfs_mb)
        command = self.command(shape, directory, accel="kvm", restore=False)
        output = open(directory / "qemu.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + KVM_PROBE_TIMEOUT_S
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            while True:
                if proc.poll() is not None:
                    return ("tcg", f"KVM probe boot: QEMU exited ({_first_error(directory)})")
                if "KVM internal error" in _read(directory / "qemu.log"):
                    return ("tcg", f"KVM probe boot failed: {_first_error(directory)}")
                if time.monotonic() > deadline:
                    return ("tcg", f"KVM probe boot: no agent within {KVM_PROBE_TIMEOUT_S:g} s")
                try:
                    sock.connect(str(directory / "agent.sock"))
                    break
                except OSError:
                    time.sleep(0.01)
            sock.settimeout(0.2)
            while time.monotonic() < deadline:
                try:
                    if sock.recv(4):
                        return ("kvm", "a probe boot under KVM reached the agent")
                    return ("tcg", "KVM probe boot: the agent's port closed")
                except TimeoutError:
                    if proc.poll() is not None or "KVM internal error" in _read(directory / "qemu.log"):
                        return ("tcg", f"KVM probe boot failed: {_first_error(directory)}")
                except OSError:  # QEMU went away
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(2)
                    return ("tcg", f"KVM probe boot failed: {_first_error(directory)}")
            return ("tcg", f"KVM probe boot: no agent within {KVM_PROBE_TIMEOUT_S:g} s")
        finally:
            sock.close()
            proc.kill()
            proc.wait()
            output.close()
            shutil.rmtree(directory, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        accel, why = self._accel or ("unknown", "not probed yet")
        manifest: dict[str, Any] = {}
        if self._image is not None:
            with contextlib.suppress(OSError, ValueError):
                manifest = self._image.manifest
        return {
            "machine": "microvm",
            "accelerator": accel,
            "accelerator_reason": why,
            "security": TCG_SECURITY if accel == "tcg" else KVM_SECURITY,
            "qemu": self.qemu_version() if shutil.which(self.qemu) else None,
            "guest_kernel": manifest.get("kernel_release"),
            "guest_packages": manifest.get("packages"),
            "guest_image": str(self._image.directory) if self._image else None,
            "snapshots": self.snapshots_enabled,
            "snapshot_problem": self.snapshot_problem,
            "agent_in_snapshot": AGENT_IN_SNAPSHOT,
            "network": "none (no network device)",
            "guest_overhead_mb": GUEST_OVERHEAD_MB,
            "starts": self.timings(),
        }

    def timings(self) -> dict[str, dict[str, float | int]]:
        """Median and last of recent starts by kind: boot/<runtime>, restore/<runtime>, snapshot/<runtime>."""
        return {
            key: {"p50_ms": round(statistics.median(v), 1), "last_ms": round(v[-1], 1), "samples": len(v)}
            for key, v in sorted(self._timings.items())
            if v
        }

    def _time(self, key: str, ms: float) -> None:
        self._timings.setdefault(key, deque(maxlen=50)).append(ms)

    @property
    def client(self) -> Any:
        """The local Docker engine, which holds the images of `provided` VMs (None when it is not reachable)."""
        return self.function_disks.client

    def runtimes(self) -> list[str]:
        return [*super().runtimes(), catalog.default_runtime(provided.LANGUAGE)]

    def refuse(self, settings: Mapping[str, Any]) -> str | None:
        if settings.get("network"):
            return NO_NETWORK
        if settings.get("language") == provided.LANGUAGE:
            return provided_functions.refusal()
        runtime = settings.get("runtime")
        if runtime and catalog.runtime_image(str(runtime)).name not in self.runtimes():
            return (
                f"the {self.name} backend's guest image runs only {', '.join(self.runtimes())} "
                f"(built from Debian {debian.host_suite()}), not {runtime}"
            )
        return None

    # ----- command line
    def _ensure_run_dir(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o711)
        return self.run_dir

    def shape_for(self, runtime: Runtime, limits: Limits, disk: str = "") -> VmShape:
        return VmShape(
            runtime, ram_bucket(limits.memory_mb), vcpus_for(limits.cpus), limits.pids, limits.tmpfs_mb, disk
        )

    def kernel_args(self, shape: VmShape, accel: str) -> str:
        args = list(KERNEL_ARGS)
        if accel == "tcg" and self._tsc_khz:  # without these a third of TCG boots hang calibrating the TSC
            args += [f"tsc_early_khz={self._tsc_khz}", "tsc=reliable"]
        args += [
            f"hearth.runtime={shape.runtime}",
            f"hearth.mem={shape.memory_mb}",
            f"hearth.pids={shape.pids}",
            f"hearth.tmpfs={shape.tmpfs_mb}",
            "hearth.transport=virtio",
            f"hearth.autostart={int(AGENT_IN_SNAPSHOT[shape.runtime])}",
        ]
        return " ".join(args)

    def command(self, shape: VmShape, directory: Path, *, accel: str, restore: bool) -> list[str]:
        """QEMU's command line. A restore has the same machine and devices, no kernel, and `-incoming defer`."""
        assert self._image is not None and self._initramfs is not None
        d = directory
        command = [self.qemu, "-name", f"hearth-{directory.name}", "-M", "microvm"]
        if accel == "kvm":
            command += ["-accel", "kvm", "-cpu", "host"]
        else:
            command += ["-accel", f"tcg,tb-size={TB_SIZE_MB}", "-cpu", "max"]
        command += [
            "-m", str(shape.ram_mb), "-smp", str(shape.vcpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-chardev", f"file,id=console,path={d / 'console.log'}", "-serial", "chardev:console",
            "-drive", f"id=root,file={self._image.rootfs},format=raw,if=none,readonly=on",
            "-device", "virtio-blk-device,drive=root",
            *(provided_functions.qemu_drive(shape.disk) if shape.disk else []),
            "-device", "virtio-serial-device,max_ports=4",
            "-chardev", f"socket,id=agent,path={d / 'agent.sock'},server=on,wait=off",
            "-device", "virtserialport,chardev=agent,name=hearth.agent",
            "-chardev", f"socket,id=control,path={d / 'control.sock'},server=on,wait=off",
            "-device", "virtserialport,chardev=control,name=hearth.control",
            "-object", "rng-random,id=rng,filename=/dev/urandom", "-device", "virtio-rng-device,rng=rng",
            "-qmp", f"unix:{d / 'qmp.sock'},server=on,wait=off",
            "-pidfile", str(d / "qemu.pid"),
            "-sandbox", SECCOMP,
        ]  # fmt: skip
        if os.geteuid() == 0:
            command += ["-runas", "nobody"]
        if restore:
            command += ["-incoming", "defer"]
        else:
            command += ["-kernel", str(self._image.kernel), "-initrd", str(self._initramfs)]
            command += ["-append", self.kernel_args(shape, accel)]
        return command

    def snapshot_key(self, shape: VmShape, accel: str) -> str:
        placeholder = Path("/VM")
        return microvm_image.digest(
            {
                "qemu": self.qemu_version(),
                "accel": accel,
                "shape": asdict(shape),
                "boot": self.command(shape, placeholder, accel=accel, restore=False),
            }
        )

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
        self._time(f"{sandbox.start_path}/{runtime}", ms)
        return sandbox

    async def _create(self, runtime: Runtime, limits: Limits, disk: str = "") -> MicroVMSandbox:
        if limits.network:
            raise SandboxStartError(NO_NETWORK)
        available, reason = await asyncio.to_thread(self.availability)
        if not available:
            raise SandboxStartError(f"the microvm backend is not available here: {reason}")
        accel, _ = self.accelerator()
        shape = self.shape_for(runtime, limits, disk)
        at_start = Limits(shape.memory_mb, float(shape.vcpus), shape.pids, shape.tmpfs_mb, False)
        key = self.snapshot_key(shape, accel)
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

    def _new_vm(self, limits: Limits) -> tuple[str, MicroVM]:
        vm_id = secrets.token_hex(6)
        directory = self._ensure_run_dir() / vm_id
        directory.mkdir(mode=0o700)
        (directory / "hearth.pid").write_text(f"{HEARTH_IDENTITY}\n")  # whose VM this is (sweep_orphans)
        vm = MicroVM(directory)
        cgroup = HostCpuCgroup.create(f"hearth-microvm-{self.owner}", vm_id)
        if cgroup is not None:  # boots and restores run at full speed; `load` sets the function's share
            cgroup.set_cpus(limits.cpus)
        vm.cgroup = cgroup
        return vm_id, vm

    async def _boot(self, shape: VmShape, accel: str, limits: Limits, key: str, save: bool) -> MicroVMSandbox:
        """Boot a VM; with `save` (the caller holds the shape's lock) snapshot it and serve a restored one."""
        started = time.perf_counter()
        vm_id, vm = self._new_vm(limits)
        channel: AgentChannel | None = None
        try:
            await vm.start(self.command(shape, vm.directory, accel=accel, restore=False), vm.cgroup)
            deadline = time.monotonic() + max(self.start_timeout_s, BOOT_TIMEOUT_FLOOR_S)
            control = await vm.connect("control", deadline)
            agent = await vm.connect("agent", deadline)
            vm.attach_control(*control)
            channel = AgentChannel(*agent)
            await vm.expect("ready", max(0.1, deadline - time.monotonic()))
            in_snapshot = AGENT_IN_SNAPSHOT[shape.runtime]
            if in_snapshot:
                await self._handshake(vm, channel, deadline)
                self._time(f"boot-to-ready/{shape.runtime}", (time.perf_counter() - started) * 1000)
            snapshot = await self._save(vm, shape, key, channel.hello) if save else None
            if snapshot is None and not in_snapshot:
                await vm.control("start")
                await self._handshake(vm, channel, deadline)
                self._time(f"boot-to-ready/{shape.runtime}", (time.perf_counter() - started) * 1000)
        except BaseException:
            await channel_close(channel)
            await vm.stop()
            raise
        if snapshot is not None:
            # A restored VM holds only the memory its guest touched (measured: ~130 MiB RSS for a Python guest
            # vs ~265 MiB for the VM that booted it, which also holds the kernel it loaded): serve from one.
            await channel.close()
            await vm.stop()
            try:
                return await self._restore(shape, accel, snapshot, limits)
            except SandboxStartError as exc:  # a snapshot this host cannot restore: boot from now on
                log.warning("a microVM snapshot saved here does not restore; snapshots off: %s", exc)
                self.snapshots.discard(key)
                self.snapshots_enabled = False
                self.snapshot_problem = str(exc)[:500]
                return await self._boot(shape, accel, limits, key, save=False)
        return MicroVMSandbox(self, vm_id, shape, vm, channel, limits, "boot")

    async def _handshake(self, vm: MicroVM, channel: AgentChannel, deadline: float) -> None:
        try:
            await channel.handshake(max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            raise SandboxStartError(f"the microVM's agent did not start in time: {vm.qemu_log()}") from None
        except SandboxCrashed as exc:
            raise SandboxStartError(f"the microVM's agent did not start: {exc}: {vm.qemu_log()}") from None

    async def _save(self, vm: MicroVM, shape: VmShape, key: str, hello: dict[str, Any]) -> Snapshot | None:
        """Snapshot a freshly booted VM (agent ready, or not started: AGENT_IN_SNAPSHOT) for its shape."""
        work = self.snapshots.workdir(key)
        try:
            started = time.perf_counter()
            fd = os.open(work / "memory", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                await asyncio.to_thread(vm.qmp_snapshot, fd, self.start_timeout_s)
            except (QmpError, OSError) as exc:
                log.warning("could not save a %s microVM snapshot: %s", shape.runtime, exc)
                return None
            finally:
                os.close(fd)
            ms = (time.perf_counter() - started) * 1000
            meta = {
                "hello": hello if AGENT_IN_SNAPSHOT[shape.runtime] else None,
                "shape": asdict(shape),
                "created_at": time.time(),
                "save_ms": round(ms, 1),
                "bytes": (work / "memory").stat().st_size,
            }
            (work / "meta.json").write_text(json.dumps(meta, indent=1))
            snapshot = self.snapshots.commit(key, work)
            self._time(f"snapshot/{shape.runtime}", ms)
            log.info("saved a %s microVM snapshot (%.0f MiB) in %.0f ms", shape.runtime, meta["bytes"] / 2**20, ms)
            return snapshot
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def _restore(self, shape: VmShape, accel: str, snapshot: Snapshot, limits: Limits) -> MicroVMSandbox:
        started = time.perf_counter()
        hello = snapshot.meta["hello"]
        vm_id, vm = self._new_vm(limits)
        channel: AgentChannel | None = None
        try:
            await vm.start(self.command(shape, vm.directory, accel=accel, restore=True), vm.cgroup)
            deadline = time.monotonic() + self.start_timeout_s
            # Both ports connected before the state loads: the guest must never see its host side closed.
            control = await vm.connect("control", deadline)
            agent = await vm.connect("agent", deadline)
            fd = os.open(snapshot.memory, os.O_RDONLY)
            try:
                await asyncio.to_thread(vm.qmp_restore, fd, max(0.1, deadline - time.monotonic()))
            except (QmpError, OSError) as exc:
                raise SandboxStartError(f"restoring the snapshot failed: {exc}: {vm.qemu_log()}") from None
            finally:
                os.close(fd)
            self.snapshots.touch(snapshot)
            vm.attach_control(*control)
            channel = AgentChannel(*agent)
            # A restored guest's clock resumes at the snapshot's moment, and clones of one snapshot share its
            # entropy pool: the host's time, then fresh host randomness and a forced reseed.
            await vm.control(f"clock {time.time_ns()}")
            await vm.control(f"seed {secrets.token_hex(64)}")
            if hello is not None:
                channel.hello = dict(hello)
            else:  # the runtime starts now (AGENT_IN_SNAPSHOT)
                await vm.control("start")
                await self._handshake(vm, channel, time.monotonic() + max(self.start_timeout_s, BOOT_TIMEOUT_FLOOR_S))
            self._time(f"restore-to-ready/{shape.runtime}", (time.perf_counter() - started) * 1000)
        except SandboxCrashed as exc:
            await channel_close(channel)
            await vm.stop()
            raise SandboxStartError(f"the restored microVM did not answer: {exc}") from None
        except BaseException:
            await channel_close(channel)
            await vm.stop()
            raise
        return MicroVMSandbox(self, vm_id, shape, vm, channel, limits, "restore")

    async def cleanup_orphans(self) -> int:
        """Kill the VMs that a previous run of this Hearth, or any Hearth on this host that has died, left behind.

        Each VM directory records its Hearth process (pid and start time, `hearth.pid`); a QEMU is only
        killed when its pidfile's process still has the VM's id on its command line.
        (A guest also powers itself off when its host disconnects, or never connects within 120 s.)
        """
        return await asyncio.to_thread(sweep_orphans, self.run_dir, f"hearth-microvm-{self.owner}")


def process_identity(pid: int) -> str | None:
    """ "pid starttime" of a running process, or None."""
    try:
        return f"{pid} {Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return None


HEARTH_IDENTITY = process_identity(os.getpid())


def sweep_orphans(run_dir: Path, cgroup_group: str) -> int:
    """See MicroVMBackend.cleanup_orphans; also used by the firecracker backend."""
    removed = 0
    candidates = list(run_dir.glob("*")) if run_dir.is_dir() else []
    kind = run_dir.name  # "microvm" / "firecracker"
    candidates += [d for d in Path(tempfile.gettempdir()).glob(f"hearth-*/{kind}/*") if d.parent != run_dir]
    for directory in candidates:
        if not directory.is_dir():
            continue
        if directory.parent != run_dir:  # another Hearth's VM: only if that Hearth is gone
            recorded = _read(directory / "hearth.pid").strip()
            if not recorded or process_identity(int(recorded.split()[0])) == recorded:
                continue
        for pidfile in ("qemu.pid", "vmm.pid"):
            pid = _read(directory / pidfile).strip()
            if pid.isdigit() and directory.name in _read(Path(f"/proc/{pid}/cmdline")).replace("\0", " "):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
                removed += 1
        shutil.rmtree(directory, ignore_errors=True)
    for root in (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")):  # empty cgroups of gone VMs
        for group in root.glob("hearth-microvm-*") if root.is_dir() else []:
            for child in group.iterdir():
                if child.is_dir() and (group.name == cgroup_group or not _read(child / "cgroup.procs").strip()):
                    with contextlib.suppress(OSError):
                        child.rmdir()
            if group.name != cgroup_group:
                with contextlib.suppress(OSError):  # only succeeds when empty
                    group.rmdir()
    return removed


async def channel_close(channel: AgentChannel | None) -> None:
    if channel is not None:
        await channel.close()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _first_error(directory: Path) -> str:
    lines = [line.strip() for line in _read(directory / "qemu.log").splitlines() if line.strip()]
    return lines[0][:300] if lines else "no output"


def _cpu_model() -> str:
    for line in _read(Path("/proc/cpuinfo")).splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"
