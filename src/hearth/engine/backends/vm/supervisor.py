"""The root helper inside a Hearth microVM (guest side; stdlib only; started by init.sh).

Runs as root, chrooted into the guest's read-only root, outside the function's cgroup. It

- talks to the host over the control channel, one command per line, one answer per line:
  `seed <hex>` (mix host randomness into the kernel's pool, credit it and force the CRNG to reseed:
  every VM restored from one snapshot would otherwise share its random state), `clock <unix ns>`
  (a restored guest's wall clock would resume at the snapshot's moment), `limits <bytes>
  <pids>` (set the function's cgroup and move the agent into it; sent before every function loads),
  `seal` (remount /hearth read-only once the function's code is written there),
  `start` (start the agent, when the kernel command line did not say `hearth.autostart=1`), `ping`;
- starts the agent through launch.sh (which drops to nobody);
- reports how the agent ended (`exit <code> <oom kills>`) and exits, after which init powers the VM off;
  so it does when the host disconnects or never connects (Hearth stopped or died: no orphan VMs).

Transports: `virtio` (QEMU): the control channel is the virtio-serial port /run/hearth-control and
the agent opens /dev/hearth-agent itself. `vsock` (Firecracker, which has no virtio-serial): the
control channel is a connection to vsock port 1024 (accepted again after the host closes it, until
the agent runs: Firecracker resets vsock connections when it snapshots), and on `start` the agent
gets the first connection to port 1025 as an inherited descriptor (HEARTH_AGENT_FD).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time

CGROUP = "/run/hearth-cg/fn"
AGENTS = {
    "python": ["/usr/bin/python3", "-I", "/opt/hearth/python/agent.py"],
    "javascript": ["/usr/bin/node", "/opt/hearth/javascript/agent.js"],
    # the relay, in the function's own root file system (its disk, mounted by init.sh)
    "provided": ["--root", "/run/hearth-fn", "/opt/hearth-relay/relay"],
}
RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)
VSOCK_CONTROL_PORT = 1024
VSOCK_AGENT_PORT = 1025
HOST_TIMEOUT_S = 120.0  # a VM whose host never connects powers off


class Channel:
    """Line I/O over a file descriptor; a read of nothing means the host is not connected (virtio-serial)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.buffer = b""

    def say(self, line: str) -> None:
        data = (line + "\n").encode()
        with self.lock:
            while data:
                data = data[os.write(self.fd, data) :]

    def wait_for_host(self, timeout_s: float) -> bool:
        """Until the host side is connected (virtio-serial: writable; until then poll says POLLHUP)."""
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(events & select.POLLOUT for _, events in poller.poll(100)):
                return True
            time.sleep(0.05)
        return False

    def lines(self):  # type: ignore[no-untyped-def]
        """Lines from the host until it disconnects (Hearth stopped or died): then the VM has no purpose."""
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                yield line.decode(errors="replace").strip()
            chunk = os.read(self.fd, 4096)
            if not chunk:
                return
            self.buffer += chunk


def vsock_listener(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    listener.bind((socket.VMADDR_CID_ANY, port))
    listener.listen(1)
    return listener


def reseed(hex_data: str) -> None:
    data = bytes.fromhex(hex_data)
    with open("/dev/urandom", "wb") as pool:
        fcntl.ioctl(pool, RNDADDENTROPY, struct.pack("ii", len(data) * 8, len(data)) + data)
        fcntl.ioctl(pool, RNDRESEEDCRNG)


MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 1, 2, 4, 32
LIBC = ctypes.CDLL(None, use_errno=True)  # loaded at start: a restored guest does not pay for it


def seal(path: str) -> None:
    if LIBC.mount(None, path.encode(), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None) != 0:
        raise OSError(ctypes.get_errno(), f"remounting {path} read-only")


def drain(fd: int) -> None:
    while os.read(fd, 1 << 16):
        pass


def read_int(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return -1


def oom_kills() -> int:
    try:
        with open(f"{CGROUP}/memory.events") as events:
            for line in events:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Supervisor:
    def __init__(self, runtime: str, transport: str) -> None:
        self.runtime = runtime
        self.transport = transport
        self.agent: subprocess.Popen[bytes] | None = None
        self.agent_listener: socket.socket | None = None
        self.control_listener: socket.socket | None = None
        if transport == "vsock":
            self.control_listener = vsock_listener(VSOCK_CONTROL_PORT)
            self.control_listener.settimeout(HOST_TIMEOUT_S)
            self.agent_listener = vsock_listener(VSOCK_AGENT_PORT)
            self.agent_listener.settimeout(HOST_TIMEOUT_S)
        else:
            self.channel = Channel(os.open("/run/hearth-control", os.O_RDWR | os.O_NOCTTY))

    def accept_control(self) -> bool:
        """vsock: the host's next control connection (Firecracker resets all of them at a snapshot)."""
        assert self.control_listener is not None
        try:
            connection, _ = self.control_listener.accept()
        except TimeoutError:
            return False
        connection.settimeout(None)
        self.channel = Channel(connection.detach())
        return True

    def start(self) -> None:
        if self.agent is not None:
            return
        # The agent starts outside the function's cgroup and moves into it at `limits` (before any
        # function code runs): the page cache of the runtime it maps as it starts (python3, libnode) is
        # then charged to the root cgroup. Charged to the function's, those pages would be what its
        # reclaim evicts and faults back in at the memory limit, again and again, instead of an OOM kill
        # (measured: a Python memory bomb under a 64 MiB limit still not killed after 60 s under TCG).
        # oom_score_adj back to 0: the supervisor's -1000 is inherited, and a cgroup whose only tasks
        # cannot be OOM-killed stays stuck at its limit instead of killing the function.
        command = ["/bin/sh", "-c", 'echo 0 > /proc/self/oom_score_adj && exec /opt/hearth/launch.sh "$@"', "agent"]
        command += AGENTS[self.runtime]
        # What the agent's process tree writes to fd 1/2 itself (not a handler's captured output) goes to a
        # pipe the supervisor drains and drops: on the serial console a flood would stall the guest.
        output, sink = os.pipe()
        threading.Thread(target=drain, args=(output,), daemon=True).start()
        if self.agent_listener is None:
            self.agent = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, close_fds=True)
        else:
            try:
                connection, _ = self.agent_listener.accept()
            except TimeoutError:  # the host asked for the agent and never connected to it
                os._exit(1)
            self.agent_listener.close()
            fd = connection.detach()
            env = {"HEARTH_AGENT_FD": str(fd), "PATH": "/usr/bin:/bin"}
            self.agent = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, pass_fds=(fd,), env=env
            )
            os.close(fd)
        os.close(sink)
        threading.Thread(target=self.watch, args=(self.agent,), daemon=True).start()

    def watch(self, agent: subprocess.Popen[bytes]) -> None:
        code = agent.wait()
        self.channel.say(f"exit {code if code >= 0 else 128 - code} {oom_kills()}")
        os._exit(0)

    def handle(self, words: list[str]) -> str:
        if not words:
            return "error empty command"
        command, args = words[0], words[1:]
        try:
            if command == "seed":
                reseed(args[0])
            elif command == "clock":  # a restored guest's wall clock resumes at the snapshot's time
                time.clock_settime_ns(time.CLOCK_REALTIME, int(args[0]))
            elif command == "limits":
                with open(f"{CGROUP}/memory.max", "w") as limit:
                    limit.write(args[0])
                with open(f"{CGROUP}/pids.max", "w") as limit:
                    limit.write(args[1])
                if self.agent is None:
                    return "error limits: no agent"
                with open(f"{CGROUP}/cgroup.procs", "w") as procs:  # the whole process, every thread
                    procs.write(str(self.agent.pid))
            elif command == "start":
                if self.agent_listener is not None:  # the host connects the agent port after this answer
                    self.channel.say("ok")
                    self.start()
                    return ""
                self.start()
            elif command == "seal":  # the function's code is in place: /hearth read-only from now on
                seal("/hearth")
            elif command == "ping":
                return "pong"
            elif command == "stat":  # the function's cgroup: memory.current, memory.peak, oom kills
                return f"ok {read_int(f'{CGROUP}/memory.current')} {read_int(f'{CGROUP}/memory.peak')} {oom_kills()}"
            else:
                return f"error unknown command {command}"
        except (OSError, ValueError, IndexError) as exc:
            return f"error {command}: {exc}"
        return "ok"

    def serve(self, autostart: bool) -> None:
        if self.control_listener is not None:
            self.serve_vsock()
            return
        if not self.channel.wait_for_host(HOST_TIMEOUT_S):  # whoever started this VM is gone
            return
        self.channel.say("ready")
        if autostart:
            self.start()
        self.serve_lines()

    def serve_vsock(self) -> None:
        """Control connections until the agent runs; a snapshot (taken before) closes the one before it."""
        while self.accept_control():
            self.channel.say("ready")
            self.serve_lines()
            if self.agent is not None:
                return
            os.close(self.channel.fd)

    def serve_lines(self) -> None:
        for line in self.channel.lines():
            reply = self.handle(line.split())
            if reply:
                self.channel.say(reply)
        if self.agent is not None:  # the host went away: end the agent, then the VM (init powers it off)
            self.agent.kill()


def main() -> None:
    options = dict(arg.split("=", 1) for arg in sys.argv[1:] if "=" in arg)
    with open("/proc/self/oom_score_adj", "w") as adj:  # the function's OOM never takes the supervisor
        adj.write("-1000")
    supervisor = Supervisor(options.get("runtime", "python"), options.get("transport", "virtio"))
    supervisor.serve(options.get("autostart") == "1")


if __name__ == "__main__":
    main()
