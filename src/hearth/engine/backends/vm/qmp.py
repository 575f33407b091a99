"""QEMU's monitor protocol (QMP): a small blocking client and the two migrations snapshots are made of."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from pathlib import Path
from typing import Any


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


def save_running(monitor: Path, target_fd: int, timeout_s: float) -> None:
    """Save the running guest to `target_fd` and let it run on (blocking: run in a worker thread)."""
    qmp = Qmp(monitor, timeout_s)
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


def load_incoming(monitor: Path, source_fd: int, timeout_s: float) -> None:
    """Load a saved guest into a `-incoming defer` QEMU and wait until it runs (blocking: a worker thread)."""
    qmp = Qmp(monitor, timeout_s)
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
