"""QEMU's `microvm` machine as a VMM: KVM where a probe boot works, TCG otherwise.

The host talks to the guest over two virtio-serial ports, each behind a Unix socket QEMU listens on
in the VM's directory: the agent's stream and the supervisor's control channel. Snapshots are QMP
migrations to a file (qmp.py): saved while the guest runs (it then serves on), restored into a QEMU
started with `-incoming defer`. The host connects both ports *before* the guest state is loaded, so
the guest never sees its host side disconnected (the agent would read end-of-file and exit).
QEMU runs with `-sandbox on` (seccomp: no spawning, no obsolete or resource-control system calls)
and, when Hearth runs as root, drops to `nobody` (`-runas`) before the guest starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hearth.engine.backends.vm import provided_functions
from hearth.engine.backends.vm.host import cpu_model, host_tsc_khz, read_text
from hearth.engine.backends.vm.process import VmProcess
from hearth.engine.backends.vm.qmp import QmpError, load_incoming, save_running
from hearth.engine.backends.vm.shapes import VmShape
from hearth.engine.backends.vm.snapshots import Snapshot
from hearth.engine.backends.vm.vmm import KERNEL_ARGS, KVM_SECURITY, Guest, SnapshotFailed, Vmm, hearth_args
from hearth.engine.channel import AgentChannel
from hearth.engine.sandbox import Runtime, SandboxStartError
from hearth.images import microvm as microvm_image

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
TB_SIZE_MB = 64  # TCG's translated-code cache (QEMU's default of up to 1 GiB would grow with every VM)
KVM_PROBE_TIMEOUT_S = 20.0
SECCOMP = "on,obsolete=deny,spawn=deny,resourcecontrol=deny"  # elevateprivileges must stay allowed for -runas
TCG_SECURITY = (
    "TCG: QEMU's documentation does not treat TCG as a security boundary; the guest kernel separates the "
    "function from the host only as well as QEMU's emulator and device models do (seccomp-confined, run as nobody)"
)
# Node's OpenSSL generator and V8's Math.random are seeded when node starts: clones of a snapshot taken
# after that would produce the same "random" bytes (measured: identical crypto.randomBytes and randomUUID
# in two restored VMs). Python draws only from the kernel (os.urandom, and `random` seeds itself from it
# on first import), which the supervisor reseeds at every restore; what clones share is the str-hash
# secret (a DoS hardening). The relay (custom runtimes) holds no secret and seeds nothing its runtime
# uses: the runtime starts at load.
AGENT_IN_SNAPSHOT: dict[Runtime, bool] = {"python": True, "javascript": False, "provided": True}


class QemuVmm(Vmm):
    name = "microvm"
    kind = "virtual machine: QEMU microvm with a guest kernel of its own (KVM where it works, else TCG emulation)"
    label = "QEMU"
    vm_noun = "microVM"
    agent_in_snapshot = AGENT_IN_SNAPSHOT

    def __init__(self, binary: str = QEMU) -> None:
        self.binary = binary
        self._version: str | None = None
        self._tsc_khz = host_tsc_khz()

    def missing(self) -> str | None:
        if shutil.which(self.binary) is None:
            return f"{self.binary} is not installed (Debian's qemu-system-x86; as root: bash scripts/install-system.sh)"
        return None

    def version(self) -> str:
        if self._version is None:
            try:
                out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=10).stdout
                self._version = out.splitlines()[0].strip() if out.strip() else "unknown"
            except (OSError, subprocess.SubprocessError):
                self._version = "unknown"
        return self._version

    def describe(self, accelerator: tuple[str, str] | None) -> dict[str, Any]:
        accel, why = accelerator or ("unknown", "not probed yet")
        return {
            "machine": "microvm",
            "accelerator": accel,
            "accelerator_reason": why,
            "security": TCG_SECURITY if accel == "tcg" else KVM_SECURITY,
            "qemu": self.version() if shutil.which(self.binary) else None,
        }

    # ----- the accelerator
    def accelerator(
        self, setting: str, guest: Guest, scratch: Path, cache_dir: Path, probe: VmShape
    ) -> tuple[str, str]:
        """KVM when a probe boot of the real guest under KVM reaches its agent (remembered per host and guest)."""
        if setting == "tcg":
            return ("tcg", "HEARTH_MICROVM_ACCEL=tcg")
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return ("tcg", "no usable /dev/kvm")
        key = microvm_image.digest(
            {
                "qemu": self.version(),
                "image": guest.image.key,
                "initramfs": guest.initramfs.name,
                "host": os.uname().release,
                "cpu": cpu_model(),
            }
        )
        record = cache_dir / "kvm-probe.json"
        try:
            cached = json.loads(record.read_text())
        except (OSError, ValueError):
            cached = {}
        if key in cached:
            return (cached[key]["accel"], cached[key]["reason"])
        accel, reason = self._probe_kvm(guest, scratch, probe)
        cached[key] = {"accel": accel, "reason": reason, "at": time.time()}
        with contextlib.suppress(OSError):
            record.write_text(json.dumps(cached, indent=1))
        log.info("microvm accelerator: %s (%s)", accel, reason)
        return (accel, reason)

    def _probe_kvm(self, guest: Guest, scratch: Path, shape: VmShape) -> tuple[str, str]:
        """Boot the guest under KVM and wait for its agent's hello (blocking; a few seconds)."""
        directory = Path(tempfile.mkdtemp(prefix="kvm-probe-", dir=scratch))
        command = self.command(guest, shape, directory, accel="kvm", restore=False)
        output = open(directory / "qemu.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + KVM_PROBE_TIMEOUT_S
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            while True:
                if proc.poll() is not None:
                    return ("tcg", f"KVM probe boot: QEMU exited ({_first_error(directory)})")
                if "KVM internal error" in read_text(directory / "qemu.log"):
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
                    if proc.poll() is not None or "KVM internal error" in read_text(directory / "qemu.log"):
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

    # ----- the command line
    def kernel_args(self, shape: VmShape, accel: str) -> str:
        args = list(KERNEL_ARGS)
        if accel == "tcg" and self._tsc_khz:  # without these a third of TCG boots hang calibrating the TSC
            args += [f"tsc_early_khz={self._tsc_khz}", "tsc=reliable"]
        args += hearth_args(shape, "virtio", AGENT_IN_SNAPSHOT[shape.runtime])
        return " ".join(args)

    def command(self, guest: Guest, shape: VmShape, directory: Path, *, accel: str, restore: bool) -> list[str]:
        """QEMU's command line. A restore has the same machine and devices, no kernel, and `-incoming defer`."""
        d = directory
        command = [self.binary, "-name", f"hearth-{directory.name}", "-M", "microvm"]
        if accel == "kvm":
            command += ["-accel", "kvm", "-cpu", "host"]
        else:
            command += ["-accel", f"tcg,tb-size={TB_SIZE_MB}", "-cpu", "max"]
        command += [
            "-m", str(shape.ram_mb), "-smp", str(shape.vcpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-chardev", f"file,id=console,path={d / 'console.log'}", "-serial", "chardev:console",
            "-drive", f"id=root,file={guest.image.rootfs},format=raw,if=none,readonly=on",
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
            command += ["-kernel", str(guest.image.kernel), "-initrd", str(guest.initramfs)]
            command += ["-append", self.kernel_args(shape, accel)]
        return command

    def snapshot_key(self, guest: Guest, shape: VmShape, accel: str) -> str:
        placeholder = Path("/VM")
        return microvm_image.digest(
            {
                "qemu": self.version(),
                "accel": accel,
                "shape": asdict(shape),
                "boot": self.command(guest, shape, placeholder, accel=accel, restore=False),
            }
        )

    # ----- one VM
    def new_vm(self, vm_id: str, directory: Path, cache_dir: Path) -> VmProcess:
        return VmProcess(directory, self.label)

    async def _start_connected(
        self, vm: VmProcess, guest: Guest, shape: VmShape, accel: str, deadline: float, *, restore: bool
    ) -> None:
        """Start QEMU and connect both ports (the agent's stream is held until open_agent)."""
        await vm.start(self.command(guest, shape, vm.directory, accel=accel, restore=restore))
        control = await _connect(vm, "control", deadline)
        vm.agent_stream = await _connect(vm, "agent", deadline)
        vm.attach_control(*control)

    async def boot(self, vm: VmProcess, guest: Guest, shape: VmShape, accel: str, deadline: float) -> None:
        await self._start_connected(vm, guest, shape, accel, deadline, restore=False)
        await vm.expect("ready", max(0.1, deadline - time.monotonic()))

    async def restore(
        self, vm: VmProcess, guest: Guest, shape: VmShape, accel: str, snapshot: Snapshot, deadline: float
    ) -> None:
        # Both ports connected before the state loads: the guest must never see its host side closed.
        await self._start_connected(vm, guest, shape, accel, deadline, restore=True)
        fd = os.open(snapshot.memory, os.O_RDONLY)
        try:
            await asyncio.to_thread(load_incoming, vm.path("qmp.sock"), fd, max(0.1, deadline - time.monotonic()))
        except (QmpError, OSError) as exc:
            raise SandboxStartError(f"restoring the snapshot failed: {exc}: {vm.log_tail()}") from None
        finally:
            os.close(fd)

    async def open_agent(self, vm: VmProcess, deadline: float, *, start: bool) -> AgentChannel:
        if start:
            await vm.control("start")
        assert vm.agent_stream is not None, "open_agent after boot or restore, once"
        stream, vm.agent_stream = vm.agent_stream, None
        return AgentChannel(*stream)

    async def save(self, vm: VmProcess, work: Path, timeout_s: float) -> None:
        try:
            fd = os.open(work / "memory", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                await asyncio.to_thread(save_running, vm.path("qmp.sock"), fd, timeout_s)
            finally:
                os.close(fd)
        except (QmpError, OSError) as exc:
            raise SnapshotFailed(str(exc)) from None


async def _connect(vm: VmProcess, name: str, deadline: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to one of QEMU's listening sockets (it creates them shortly after it starts)."""
    path = str(vm.path(f"{name}.sock"))
    while True:
        try:
            return await asyncio.open_unix_connection(path, limit=2**20)
        except (FileNotFoundError, ConnectionRefusedError):
            vm.check_running()
            if time.monotonic() > deadline:
                raise SandboxStartError(f"QEMU did not open its {name} socket in time") from None
            await asyncio.sleep(0.005)


def _first_error(directory: Path) -> str:
    lines = [line.strip() for line in read_text(directory / "qemu.log").splitlines() if line.strip()]
    return lines[0][:300] if lines else "no output"
