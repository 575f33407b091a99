"""Sandboxes yield to the front: their processes run under SCHED_BATCH.

When the host writes a call to an agent, the kernel wakes the agent, and under the default policy a
woken task may preempt the task that woke it: the host's event loop, with the HTTP response and the
next requests still to handle. SCHED_BATCH keeps the agent's fair share of CPU and only gives up
that wake-up preemption, so on a busy machine the front finishes its turn and the sandbox runs
right after it (on an idle core it runs at once, as before). Measured with `python -m bench.run
--only warm` on a 2-core host: ~1.1-1.2x the warm throughput at 16 connections.

The policy is a performance choice, not a limit: code in the sandbox may set its own (Linux lets an
unprivileged process move between SCHED_OTHER and SCHED_BATCH). Under gVisor the socket's peer is
not the sandbox's host process, so gVisor sandboxes keep the default policy.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from pathlib import Path

PEER_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_pid(sock: socket.socket) -> int | None:
    """The process at the other end of a Unix socket, as the host sees it (0 or None: unknown)."""
    with contextlib.suppress(OSError):
        pid, _, _ = PEER_CREDENTIALS.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEER_CREDENTIALS.size)
        )
        return pid or None
    return None


def batch_process(pid: int) -> bool:
    """Put every thread of `pid` under SCHED_BATCH (threads and children it starts later inherit it).
    False if the host may not (Hearth not root and the process not its own) or the process is gone."""
    try:
        threads = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return False
    done = False
    for tid in threads:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))
            done = True
    return done


def batch_peer(sock: socket.socket | None) -> bool:
    """SCHED_BATCH for the agent process connected at `sock`."""
    pid = peer_pid(sock) if sock is not None else None
    return pid is not None and batch_process(pid)
