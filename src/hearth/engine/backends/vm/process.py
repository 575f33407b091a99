"""One VMM process (QEMU or Firecracker): its directory, its host cgroup, and the guest supervisor's control channel.

The control channel is a line protocol with the root supervisor inside the guest (supervisor.py):
the host sends a command (limits, clock, seed, start, seal, ping) and reads one reply; the guest
also sends, unasked, "ready" when it serves and "exit <code> <oom kills>" when the agent ended.
How the channel is reached (a virtio-serial port or a vsock port) is the VMM's business (vmm.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from pathlib import Path

from hearth.engine.backends.vm.cgroups import HostCpuCgroup
from hearth.engine.backends.vm.host import disable_thp_for_children, read_text
from hearth.engine.sandbox import SandboxCrashed, SandboxStartError

CONTROL_TIMEOUT_S = 10.0
LOG = "vmm.log"  # the VMM's own output (and, for Firecracker, the guest's serial console)
CONSOLE = "console.log"  # QEMU writes the guest's serial console here


class VmProcess:
    """One VMM process and the host ends of its streams."""

    def __init__(self, directory: Path, label: str, root: Path | None = None) -> None:
        self.directory = directory  # the VM's directory on the host (logs, sockets, hearth.pid)
        self.label = label  # "QEMU" / "Firecracker", in error messages
        # Where the VMM runs and finds its files: the VM's directory, or a jail removed with the VM.
        self.root = root or directory
        self.proc: asyncio.subprocess.Process | None = None
        self.cgroup: HostCpuCgroup | None = None
        self.exit_report: tuple[int, int] | None = None  # (agent exit code, OOM kills in its cgroup)
        self.control_closed = asyncio.Event()
        self._control: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._control_task: asyncio.Task[None] | None = None
        self._replies: asyncio.Queue[str] = asyncio.Queue()
        self._control_lock = asyncio.Lock()
        # QEMU: the agent's stream, connected before the guest could use it and held until open_agent takes it.
        self.agent_stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def jailed(self) -> bool:
        return self.root != self.directory

    def path(self, name: str) -> Path:
        return self.directory / name

    def log_tail(self) -> str:
        """The end of the VMM's output and of the guest's console, for error messages."""
        text = read_text(self.path(LOG)).strip()
        console = read_text(self.path(CONSOLE)).strip()
        joined = "\n".join(part for part in (text, console[-1500:]) if part)
        return joined[-2500:] or "(no output)"

    def check_running(self) -> None:
        """SandboxStartError when the VMM has exited (while the host waits for it)."""
        assert self.proc is not None
        if self.proc.returncode is not None:
            raise SandboxStartError(f"{self.label} exited with code {self.proc.returncode}: {self.log_tail()}")

    async def start(self, command: list[str]) -> None:
        disable_thp_for_children()
        with open(self.path(LOG), "wb") as output:
            self.proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.root,
            )
        if self.cgroup is not None:
            self.cgroup.add(self.proc.pid)

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
            raise SandboxStartError(f"the guest did not say {line!r} in time: {self.log_tail()}") from None
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
        for stream in (self._control, self.agent_stream):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream[1].close()
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
        if self.jailed:  # <chroot base>/<vmm>/<id>/root -> remove <id>
            shutil.rmtree(self.root.parent, ignore_errors=True)
