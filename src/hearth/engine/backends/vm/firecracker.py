"""Firecracker microVMs as sandboxes, driven through Firecracker's API socket (docs/isolation.md).

Used where the `firecracker` binary is on PATH (no Debian package ships it; none is installed on
this project's machines, where the backend reports itself unavailable and its tests skip). The guest
is the microvm backend's (microvm_image.py: Debian's cloud kernel, the read-only root, the initramfs
with the supervisor and agents), so everything inside the VM is shared and tested there; this module
is the host side:

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
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from hearth.engine.backends.vm.backend import (
    BOOT_TIMEOUT_FLOOR_S,
    KERNEL_ARGS,
    KVM_SECURITY,
    NO_NETWORK,
    MicroVM,
    MicroVMBackend,
    MicroVMSandbox,
    Snapshot,
    VmShape,
    channel_close,
    sweep_orphans,
)
from hearth.engine.channel import AgentChannel
from hearth.engine.sandbox import Limits, SandboxCrashed, SandboxStartError
from hearth.images import microvm as microvm_image

FIRECRACKER = "firecracker"
MIN_VERSION = (1, 8, 0)  # ACPI (virtio-mmio devices in the DSDT) on x86_64
GUEST_CID = 3
CONTROL_PORT = 1024
AGENT_PORT = 1025
PROBE_TIMEOUT_S = 20.0
INSTALL_HINT = (
    "install a static release build (firecracker and jailer, v1.8 or later) from "
    "github.com/firecracker-microvm/firecracker/releases into PATH"
)


def firecracker_version(binary: str) -> tuple[int, int, int] | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


class FirecrackerVM(MicroVM):
    """One Firecracker process: its API socket, its vsock socket, and the jail it may run in."""

    def __init__(self, directory: Path, root: Path, jailed: bool) -> None:
        super().__init__(directory)
        self.root = root  # where the VMM's "/" (jailed) or working directory (not jailed) is on the host
        self.jailed = jailed

    def inside(self, host_path: Path) -> str:
        """How the VMM names a file: a jail sees its root; an unjailed VMM takes host paths."""
        return "/" + host_path.relative_to(self.root).as_posix() if self.jailed else str(host_path)

    def qemu_log(self) -> str:  # the VMM's own output and the guest's serial console share one file
        text = microvm_read(self.path("qemu.log")).strip()
        return text[-2500:] or "(no output)"

    async def api(self, method: str, path: str, body: dict[str, Any] | None, timeout_s: float = 10.0) -> None:
        transport = httpx.AsyncHTTPTransport(uds=str(self.root / "api.sock"))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=timeout_s) as client:
            response = await client.request(method, path, json=body)
        if response.status_code >= 300:
            try:
                fault = response.json().get("fault_message", response.text)
            except ValueError:
                fault = response.text
            raise SandboxStartError(f"Firecracker {method} {path}: {response.status_code} {fault}")

    async def wait_api(self, deadline: float) -> None:
        while not (self.root / "api.sock").exists():
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise SandboxStartError(f"Firecracker exited with code {self.proc.returncode}: {self.qemu_log()}")
            if time.monotonic() > deadline:
                raise SandboxStartError("Firecracker did not open its API socket in time")
            await asyncio.sleep(0.005)

    async def connect_vsock(self, port: int, deadline: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A stream to the guest's vsock `port` (retried until the guest listens)."""
        path = str(self.root / "v.sock")
        while True:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise SandboxStartError(f"Firecracker exited with code {self.proc.returncode}: {self.qemu_log()}")
            if time.monotonic() > deadline:
                raise SandboxStartError(f"the guest did not accept vsock port {port} in time: {self.qemu_log()}")
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

    async def stop(self) -> None:
        await super().stop()
        if self.jailed:  # <chroot base>/firecracker/<id>/root -> remove <id>
            shutil.rmtree(self.root.parent, ignore_errors=True)


def microvm_read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


class FirecrackerBackend(MicroVMBackend):
    name = "firecracker"
    kind = "virtual machine: Firecracker on KVM, a guest kernel of its own and five emulated devices"

    def __init__(self, *, binary: str = FIRECRACKER, **kwargs: Any) -> None:
        kwargs.pop("accel", None)
        super().__init__(accel="kvm", **kwargs)
        self.binary = binary
        self._version: tuple[int, int, int] | None = None
        self._probe: tuple[bool, str] | None = None

    # ----- availability
    def _check(self) -> tuple[bool, str]:
        path = shutil.which(self.binary)
        if path is None:
            return False, f"{self.binary} is not on PATH (no Debian package ships it; {INSTALL_HINT})"
        self._version = firecracker_version(path)
        if self._version is None or self._version < MIN_VERSION:
            found = ".".join(map(str, self._version)) if self._version else "unknown"
            return False, f"Firecracker {found} is too old: 1.8+ describes its devices by ACPI, which the guest needs"
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return False, "Firecracker needs KVM and /dev/kvm is not usable here"
        image = microvm_image.find_image(self.cache_dir)
        if image is None:
            return False, f"no microVM guest image in {microvm_image.image_dir(self.cache_dir)}: `make microvm-image`"
        self._image = image
        self._initramfs = microvm_image.ensure_initramfs(image, self.cache_dir)
        if self._probe is None:
            self._probe = self._probe_boot()
        return self._probe

    def _probe_boot(self) -> tuple[bool, str]:
        """Boot the guest once (blocking; KVM boots take well under a second) and wait for its supervisor."""

        async def probe() -> tuple[bool, str]:
            try:
                sandbox = await self._create("python", Limits(128, 1.0, self.pids_limit, self.tmpfs_mb))
            except SandboxStartError as exc:
                return False, f"a probe boot under Firecracker failed: {exc}"
            await sandbox.stop()
            return True, "ok"

        previous, self.snapshots_enabled = self.snapshots_enabled, False
        self._checked = (time.monotonic(), True, "probing")  # _create asks availability()
        try:
            return asyncio.run(probe())
        finally:
            self.snapshots_enabled = previous

    def accelerator(self) -> tuple[str, str]:
        return ("kvm", "Firecracker runs on KVM only")

    def jailer(self) -> str | None:
        """The jailer next to the firecracker binary, used when Hearth runs as root."""
        firecracker = shutil.which(self.binary)
        if firecracker is None or os.geteuid() != 0:
            return None
        candidate = Path(firecracker).with_name("jailer")
        return str(candidate) if os.access(candidate, os.X_OK) else None

    def describe(self) -> dict[str, Any]:
        details = super().describe()
        details.update(
            {
                "machine": "firecracker",
                "accelerator": "kvm",
                "accelerator_reason": "Firecracker runs on KVM only",
                "security": KVM_SECURITY.replace("QEMU's small microvm device set", "Firecracker's five devices"),
                "qemu": None,
                "firecracker": ".".join(map(str, self._version)) if self._version else None,
                "jailer": self.jailer(),
                "agent_in_snapshot": {"python": False, "javascript": False, "provided": False},
            }
        )
        return details

    def refuse(self, settings: Any) -> str | None:
        if settings.get("network"):
            return NO_NETWORK.replace("microvm", "firecracker")
        return None

    # ----- the VM
    def kernel_args(self, shape: VmShape, accel: str) -> str:
        args = [a for a in KERNEL_ARGS if a != "reboot=t"] + ["reboot=k", "pci=off"]  # i8042 reset ends Firecracker
        args += [
            f"hearth.runtime={shape.runtime}",
            f"hearth.mem={shape.memory_mb}",
            f"hearth.pids={shape.pids}",
            f"hearth.tmpfs={shape.tmpfs_mb}",
            "hearth.transport=vsock",
            "hearth.autostart=0",
        ]
        return " ".join(args)

    def snapshot_key(self, shape: VmShape, accel: str) -> str:
        assert self._image is not None and self._initramfs is not None
        return microvm_image.digest(
            {
                "vmm": "firecracker",
                "version": self._version,
                "image": self._image.key,
                "initramfs": self._initramfs.name,
                "boot_args": self.kernel_args(shape, accel),
                "shape": [shape.runtime, shape.memory_mb, shape.vcpus, shape.pids, shape.tmpfs_mb, shape.disk],
            }
        )

    def _new_firecracker(self, limits: Limits) -> tuple[str, FirecrackerVM, list[str]]:
        vm_id, plain = self._new_vm(limits)
        jailer = self.jailer()
        if jailer is None:
            vm = FirecrackerVM(plain.directory, plain.directory, jailed=False)
            command = [self.binary, "--api-sock", str(vm.directory / "api.sock"), "--id", f"hearth-{vm_id}"]
        else:
            base = self.cache_dir / "jail"  # the cache's file system: the guest's files are hard-linked in
            root = base / Path(shutil.which(self.binary) or self.binary).name / vm_id / "root"
            root.mkdir(parents=True)
            vm = FirecrackerVM(plain.directory, root, jailed=True)
            command = [jailer, "--id", vm_id, "--exec-file", shutil.which(self.binary) or self.binary]
            command += ["--uid", "65534", "--gid", "65534", "--chroot-base-dir", str(base)]
            command += ["--", "--api-sock", "/api.sock"]
        vm.cgroup = plain.cgroup
        return vm_id, vm, command

    def _place(self, vm: FirecrackerVM, source: Path) -> Path:
        """`source` as the VMM will open it: hard-linked into its jail, or where it is."""
        if not vm.jailed:
            return source
        target = vm.root / source.name
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
        return target

    async def _launch(self, vm: FirecrackerVM, command: list[str], deadline: float) -> None:
        await vm.start(command, vm.cgroup, cwd=vm.root)
        assert vm.proc is not None
        (vm.directory / "vmm.pid").write_text(f"{vm.proc.pid}\n")
        await vm.wait_api(deadline)

    async def _boot(self, shape: VmShape, accel: str, limits: Limits, key: str, save: bool) -> MicroVMSandbox:
        assert self._image is not None and self._initramfs is not None
        started = time.perf_counter()
        vm_id, vm, command = self._new_firecracker(limits)
        channel: AgentChannel | None = None
        try:
            deadline = time.monotonic() + max(self.start_timeout_s, BOOT_TIMEOUT_FLOOR_S)
            kernel = self._place(vm, self._image.kernel)
            initrd = self._place(vm, self._initramfs)
            rootfs = self._place(vm, self._image.rootfs)
            await self._launch(vm, command, deadline)
            await vm.api("PUT", "/machine-config", {"vcpu_count": shape.vcpus, "mem_size_mib": shape.ram_mb})
            boot = {"kernel_image_path": vm.inside(kernel), "initrd_path": vm.inside(initrd)}
            await vm.api("PUT", "/boot-source", {**boot, "boot_args": self.kernel_args(shape, accel)})
            drive = {"drive_id": "root", "path_on_host": vm.inside(rootfs), "is_root_device": False}
            await vm.api("PUT", "/drives/root", {**drive, "is_read_only": True})
            if shape.disk:  # `provided`: the function's disk, the guest's second drive (provided_functions.py)
                function_disk = {"drive_id": "fn", "path_on_host": vm.inside(self._place(vm, Path(shape.disk)))}
                await vm.api("PUT", "/drives/fn", {**function_disk, "is_root_device": False, "is_read_only": True})
            await vm.api("PUT", "/vsock", {"guest_cid": GUEST_CID, "uds_path": "v.sock"})  # relative: see module doc
            await vm.api("PUT", "/entropy", {})
            await vm.api("PUT", "/actions", {"action_type": "InstanceStart"})
            control = await vm.connect_vsock(CONTROL_PORT, deadline)
            vm.attach_control(*control)
            await vm.expect("ready", max(0.1, deadline - time.monotonic()))
            self._time(f"boot-to-supervisor/{shape.runtime}", (time.perf_counter() - started) * 1000)
            snapshot = await self._save_firecracker(vm, shape, key) if save else None
            if save and snapshot is None:  # saving failed: this VM serves, running again
                await vm.api("PATCH", "/vm", {"state": "Resumed"})
                vm.attach_control(*await vm.connect_vsock(CONTROL_PORT, deadline))
                await vm.expect("ready", max(0.1, deadline - time.monotonic()))
            if snapshot is None:
                channel = await self._start_agent(vm, deadline)
        except BaseException:
            await channel_close(channel)
            await vm.stop()
            raise
        if snapshot is not None:
            await vm.stop()
            return await self._restore(shape, accel, snapshot, limits)
        assert channel is not None
        return MicroVMSandbox(self, vm_id, shape, vm, channel, limits, "boot")

    async def _start_agent(self, vm: FirecrackerVM, deadline: float) -> AgentChannel:
        await vm.control("start")
        channel = AgentChannel(*await vm.connect_vsock(AGENT_PORT, deadline))
        await self._handshake(vm, channel, deadline)
        return channel

    async def _save_firecracker(self, vm: FirecrackerVM, shape: VmShape, key: str) -> Snapshot | None:
        """Pause the booted guest and save it (no vsock connection may be open: Firecracker resets them)."""
        work = self.snapshots.workdir(key)
        try:
            started = time.perf_counter()
            await vm.detach_control()  # the supervisor goes back to accepting
            await asyncio.sleep(0.05)
            await vm.api("PATCH", "/vm", {"state": "Paused"})
            state, memory = vm.root / "vmstate", vm.root / "memory"
            body = {"snapshot_type": "Full", "snapshot_path": vm.inside(state), "mem_file_path": vm.inside(memory)}
            await vm.api("PUT", "/snapshot/create", body, timeout_s=120)
            for produced in (state, memory):
                shutil.move(produced, work / produced.name)
            ms = (time.perf_counter() - started) * 1000
            meta = {"hello": None, "vmm": "firecracker", "created_at": time.time(), "save_ms": round(ms, 1)}
            (work / "meta.json").write_text(json.dumps(meta, indent=1))
            snapshot = self.snapshots.commit(key, work)
            self._time(f"snapshot/{shape.runtime}", ms)
            return snapshot
        except SandboxStartError:
            return None
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def _restore(self, shape: VmShape, accel: str, snapshot: Snapshot, limits: Limits) -> MicroVMSandbox:
        assert self._image is not None
        started = time.perf_counter()
        vm_id, vm, command = self._new_firecracker(limits)
        channel: AgentChannel | None = None
        try:
            deadline = time.monotonic() + max(self.start_timeout_s, BOOT_TIMEOUT_FLOOR_S)
            self._place(vm, self._image.rootfs)  # the drives are reopened at the paths they had when saved
            if shape.disk:
                self._place(vm, Path(shape.disk))
            state = self._place(vm, snapshot.directory / "vmstate")
            memory = self._place(vm, snapshot.memory)
            await self._launch(vm, command, deadline)
            backend = {"backend_type": "File", "backend_path": vm.inside(memory)}
            await vm.api("PUT", "/snapshot/load", {"snapshot_path": vm.inside(state), "mem_backend": backend}, 60)
            await vm.api("PATCH", "/vm", {"state": "Resumed"})
            self.snapshots.touch(snapshot)
            control = await vm.connect_vsock(CONTROL_PORT, deadline)
            vm.attach_control(*control)
            await vm.expect("ready", max(0.1, deadline - time.monotonic()))
            await vm.control(f"clock {time.time_ns()}")
            await vm.control(f"seed {secrets.token_hex(64)}")
            channel = await self._start_agent(vm, deadline)
            self._time(f"restore-to-ready/{shape.runtime}", (time.perf_counter() - started) * 1000)
        except SandboxCrashed as exc:
            await channel_close(channel)
            await vm.stop()
            raise SandboxStartError(f"the restored Firecracker VM did not answer: {exc}") from None
        except BaseException:
            await channel_close(channel)
            await vm.stop()
            raise
        return MicroVMSandbox(self, vm_id, shape, vm, channel, limits, "restore")

    async def cleanup_orphans(self) -> int:
        removed = await asyncio.to_thread(sweep_orphans, self.run_dir, f"hearth-microvm-{self.owner}")
        with contextlib.suppress(OSError):  # jails of VMs that are gone
            for jail in (self.cache_dir / "jail").glob("*/*"):
                if not (self.run_dir / jail.name).exists():
                    shutil.rmtree(jail, ignore_errors=True)
        return removed
