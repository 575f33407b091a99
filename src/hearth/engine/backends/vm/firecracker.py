"""Firecracker microVMs as sandboxes, driven through Firecracker's API socket (docs/isolation.md).

Used where the `firecracker` binary is on PATH (no Debian package ships it; none is installed on
this project's machines, where the backend reports itself unavailable and its tests skip). The guest
is the microvm backend's (hearth.images.microvm: Debian's cloud kernel, the read-only root, the initramfs
with the supervisor and agents), so everything inside the VM is shared and tested there; this module
is the VMM (vmm.py) the shared backend (backend.py) drives:

- one `firecracker --api-sock <dir>/api.sock` process per VM (or `jailer ... -- --api-sock /api.sock`
  when `jailer` sits next to it and Hearth runs as root: chrooted, as uid/gid 65534, its files hard
  linked into the jail), configured with `PUT /machine-config`, `/boot-source`, `/drives/root`
  (read-only, not the root device: the initramfs mounts it), `/vsock`, `/entropy` and started with
  `PUT /actions {"action_type": "InstanceStart"}`;
- Firecracker has no virtio-serial: host and guest talk over vsock, which Firecracker exposes on the
  host as the Unix socket `v.sock`; the host connects and writes `CONNECT <port>\\n`, Firecracker
  answers `OK <port>\\n`. The supervisor's control channel is port 1024; after `start` the agent's
  stream is port 1025 (the agent gets the accepted connection as HEARTH_AGENT_FD);
- snapshots: `PATCH /vm {"state": "Paused"}` + `PUT /snapshot/create` (full) of a booted guest whose
  supervisor waits for its next control connection (Firecracker resets vsock connections at a
  snapshot, so none may be open and the agent, whose stream must survive, starts only after a
  restore); restore with `PUT /snapshot/load` (the memory file is mapped, not read: clones share its
  page cache) + `PATCH /vm {"state": "Resumed"}`. Firecracker reopens the vsock socket at the same
  *relative* path, so each VM's process runs in its own directory (or jail) and uses `v.sock`;
- Firecracker only runs on KVM; its ACPI device description (Firecracker 1.8+) is what lets the
  Debian kernel, built without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, find the virtio-mmio devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from hearth.engine.backends.vm.process import VmProcess
from hearth.engine.backends.vm.shapes import VmShape
from hearth.engine.backends.vm.snapshots import Snapshot
from hearth.engine.backends.vm.vmm import (
    BOOT_TIMEOUT_FLOOR_S,
    KERNEL_ARGS,
    KVM_SECURITY,
    Guest,
    SnapshotFailed,
    Vmm,
    hearth_args,
)
from hearth.engine.channel import AgentChannel
from hearth.engine.sandbox import Runtime, SandboxStartError
from hearth.images import microvm as microvm_image

FIRECRACKER = "firecracker"
MIN_VERSION = (1, 8, 0)  # ACPI (virtio-mmio devices in the DSDT) on x86_64
GUEST_CID = 3
CONTROL_PORT = 1024
AGENT_PORT = 1025
ONLY_KVM = ("kvm", "Firecracker runs on KVM only")
INSTALL_HINT = (
    "install a static release build (firecracker and jailer, v1.8 or later) from "
    "github.com/firecracker-microvm/firecracker/releases into PATH"
)
# vsock connections do not survive a snapshot: the agent, whose stream must, starts after each restore.
AGENT_IN_SNAPSHOT: dict[Runtime, bool] = {"python": False, "javascript": False, "provided": False}


def firecracker_version(binary: str) -> tuple[int, int, int] | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


class FirecrackerVmm(Vmm):
    name = "firecracker"
    kind = "virtual machine: Firecracker on KVM, a guest kernel of its own and five emulated devices"
    label = "Firecracker"
    vm_noun = "Firecracker VM"
    agent_in_snapshot = AGENT_IN_SNAPSHOT
    restore_timeout_floor_s = BOOT_TIMEOUT_FLOOR_S
    probe_boot = True  # nothing short of a boot shows that this host's KVM runs the guest

    def __init__(self, binary: str = FIRECRACKER) -> None:
        self.binary = binary
        self._version: tuple[int, int, int] | None = None

    def missing(self) -> str | None:
        path = shutil.which(self.binary)
        if path is None:
            return f"{self.binary} is not on PATH (no Debian package ships it; {INSTALL_HINT})"
        self._version = firecracker_version(path)
        if self._version is None or self._version < MIN_VERSION:
            found = ".".join(map(str, self._version)) if self._version else "unknown"
            return f"Firecracker {found} is too old: 1.8+ describes its devices by ACPI, which the guest needs"
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return "Firecracker needs KVM and /dev/kvm is not usable here"
        return None

    def accelerator(
        self, setting: str, guest: Guest, scratch: Path, cache_dir: Path, probe: VmShape
    ) -> tuple[str, str]:
        return ONLY_KVM

    def jailer(self) -> str | None:
        """The jailer next to the firecracker binary, used when Hearth runs as root."""
        firecracker = shutil.which(self.binary)
        if firecracker is None or os.geteuid() != 0:
            return None
        candidate = Path(firecracker).with_name("jailer")
        return str(candidate) if os.access(candidate, os.X_OK) else None

    def describe(self, accelerator: tuple[str, str] | None) -> dict[str, Any]:
        return {
            "machine": "firecracker",
            "accelerator": ONLY_KVM[0],
            "accelerator_reason": ONLY_KVM[1],
            "security": KVM_SECURITY.replace("QEMU's small microvm device set", "Firecracker's five devices"),
            "qemu": None,
            "firecracker": ".".join(map(str, self._version)) if self._version else None,
            "jailer": self.jailer(),
        }

    def kernel_args(self, shape: VmShape) -> str:
        args = [a for a in KERNEL_ARGS if a != "reboot=t"] + ["reboot=k", "pci=off"]  # i8042 reset ends Firecracker
        return " ".join(args + hearth_args(shape, "vsock", autostart=False))

    def snapshot_key(self, guest: Guest, shape: VmShape, accel: str) -> str:
        return microvm_image.digest(
            {
                "vmm": "firecracker",
                "version": self._version,
                "image": guest.image.key,
                "initramfs": guest.initramfs.name,
                "boot_args": self.kernel_args(shape),
                "shape": [shape.runtime, shape.memory_mb, shape.vcpus, shape.pids, shape.tmpfs_mb, shape.disk],
            }
        )

    # ----- one VM
    def new_vm(self, vm_id: str, directory: Path, cache_dir: Path) -> VmProcess:
        if self.jailer() is None:
            return VmProcess(directory, self.label)
        base = cache_dir / "jail"  # the cache's file system: the guest's files are hard-linked in
        root = base / Path(shutil.which(self.binary) or self.binary).name / vm_id / "root"
        root.mkdir(parents=True)
        return VmProcess(directory, self.label, root=root)

    def _command(self, vm: VmProcess) -> list[str]:
        vm_id = vm.directory.name
        jailer = self.jailer()
        if not vm.jailed or jailer is None:
            return [self.binary, "--api-sock", str(vm.directory / "api.sock"), "--id", f"hearth-{vm_id}"]
        binary = shutil.which(self.binary) or self.binary
        command = [jailer, "--id", vm_id, "--exec-file", binary, "--uid", "65534", "--gid", "65534"]
        return [*command, "--chroot-base-dir", str(vm.root.parents[2]), "--", "--api-sock", "/api.sock"]

    async def _launch(self, vm: VmProcess, deadline: float) -> None:
        await vm.start(self._command(vm))
        assert vm.proc is not None
        (vm.directory / "vmm.pid").write_text(f"{vm.proc.pid}\n")
        while not (vm.root / "api.sock").exists():
            vm.check_running()
            if time.monotonic() > deadline:
                raise SandboxStartError("Firecracker did not open its API socket in time")
            await asyncio.sleep(0.005)

    async def boot(self, vm: VmProcess, guest: Guest, shape: VmShape, accel: str, deadline: float) -> None:
        kernel = _place(vm, guest.image.kernel)
        initrd = _place(vm, guest.initramfs)
        rootfs = _place(vm, guest.image.rootfs)
        await self._launch(vm, deadline)
        await _api(vm, "PUT", "/machine-config", {"vcpu_count": shape.vcpus, "mem_size_mib": shape.ram_mb})
        boot = {"kernel_image_path": _inside(vm, kernel), "initrd_path": _inside(vm, initrd)}
        await _api(vm, "PUT", "/boot-source", {**boot, "boot_args": self.kernel_args(shape)})
        drive = {"drive_id": "root", "path_on_host": _inside(vm, rootfs), "is_root_device": False}
        await _api(vm, "PUT", "/drives/root", {**drive, "is_read_only": True})
        if shape.disk:  # `provided`: the function's disk, the guest's second drive (provided_functions.py)
            function_disk = {"drive_id": "fn", "path_on_host": _inside(vm, _place(vm, Path(shape.disk)))}
            await _api(vm, "PUT", "/drives/fn", {**function_disk, "is_root_device": False, "is_read_only": True})
        await _api(vm, "PUT", "/vsock", {"guest_cid": GUEST_CID, "uds_path": "v.sock"})  # relative: see module doc
        await _api(vm, "PUT", "/entropy", {})
        await _api(vm, "PUT", "/actions", {"action_type": "InstanceStart"})
        await self._attach_control(vm, deadline)

    async def _attach_control(self, vm: VmProcess, deadline: float) -> None:
        vm.attach_control(*await _connect_vsock(vm, CONTROL_PORT, deadline))
        await vm.expect("ready", max(0.1, deadline - time.monotonic()))

    async def restore(
        self, vm: VmProcess, guest: Guest, shape: VmShape, accel: str, snapshot: Snapshot, deadline: float
    ) -> None:
        _place(vm, guest.image.rootfs)  # the drives are reopened at the paths they had when saved
        if shape.disk:
            _place(vm, Path(shape.disk))
        state = _place(vm, snapshot.directory / "vmstate")
        memory = _place(vm, snapshot.memory)
        await self._launch(vm, deadline)
        backend = {"backend_type": "File", "backend_path": _inside(vm, memory)}
        await _api(vm, "PUT", "/snapshot/load", {"snapshot_path": _inside(vm, state), "mem_backend": backend}, 60)
        await _api(vm, "PATCH", "/vm", {"state": "Resumed"})
        await self._attach_control(vm, deadline)

    async def open_agent(self, vm: VmProcess, deadline: float, *, start: bool) -> AgentChannel:
        if start:
            await vm.control("start")
        return AgentChannel(*await _connect_vsock(vm, AGENT_PORT, deadline))

    async def save(self, vm: VmProcess, work: Path, timeout_s: float) -> None:
        """Pause the booted guest and save it (no vsock connection may be open: Firecracker resets them)."""
        try:
            await vm.detach_control()  # the supervisor goes back to accepting
            await asyncio.sleep(0.05)
            await _api(vm, "PATCH", "/vm", {"state": "Paused"})
            state, memory = vm.root / "vmstate", vm.root / "memory"
            body = {"snapshot_type": "Full", "snapshot_path": _inside(vm, state), "mem_file_path": _inside(vm, memory)}
            await _api(vm, "PUT", "/snapshot/create", body, timeout_s=120)
            for produced in (state, memory):
                shutil.move(produced, work / produced.name)
        except SandboxStartError as exc:
            raise SnapshotFailed(str(exc)) from None

    async def resume_after_failed_save(self, vm: VmProcess, deadline: float) -> None:
        await _api(vm, "PATCH", "/vm", {"state": "Resumed"})
        await self._attach_control(vm, deadline)

    def cleanup(self, run_dir: Path, cache_dir: Path) -> None:
        """Jails of VMs that are gone."""
        with contextlib.suppress(OSError):
            for jail in (cache_dir / "jail").glob("*/*"):
                if not (run_dir / jail.name).exists():
                    shutil.rmtree(jail, ignore_errors=True)


def _inside(vm: VmProcess, host_path: Path) -> str:
    """How the VMM names a file: a jail sees its root; an unjailed VMM takes host paths."""
    return "/" + host_path.relative_to(vm.root).as_posix() if vm.jailed else str(host_path)


def _place(vm: VmProcess, source: Path) -> Path:
    """`source` as the VMM will open it: hard-linked into its jail, or where it is."""
    if not vm.jailed:
        return source
    target = vm.root / source.name
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target


async def _api(vm: VmProcess, method: str, path: str, body: dict[str, Any] | None, timeout_s: float = 10.0) -> None:
    transport = httpx.AsyncHTTPTransport(uds=str(vm.root / "api.sock"))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=timeout_s) as client:
        response = await client.request(method, path, json=body)
    if response.status_code >= 300:
        try:
            fault = response.json().get("fault_message", response.text)
        except ValueError:
            fault = response.text
        raise SandboxStartError(f"Firecracker {method} {path}: {response.status_code} {fault}")


async def _connect_vsock(
    vm: VmProcess, port: int, deadline: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream to the guest's vsock `port` (retried until the guest listens)."""
    path = str(vm.root / "v.sock")
    while True:
        vm.check_running()
        if time.monotonic() > deadline:
            raise SandboxStartError(f"the guest did not accept vsock port {port} in time: {vm.log_tail()}")
        try:
            reader, writer = await asyncio.open_unix_connection(path, limit=2**20)
        except (FileNotFoundError, ConnectionRefusedError):
            await asyncio.sleep(0.01)
            continue
        writer.write(f"CONNECT {port}\n".encode())
        try:
            answer = await asyncio.wait_for(reader.readline(), 2.0)
        except (TimeoutError, ConnectionError):
            answer = b""
        if answer.startswith(b"OK "):
            return reader, writer
        writer.close()  # nobody listens on that port yet: Firecracker closed the connection
        await asyncio.sleep(0.02)
