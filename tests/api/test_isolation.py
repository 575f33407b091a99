"""What a function cannot do inside its sandbox: network, writes outside /tmp, privileges."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import docker
import httpx

from hearth.engine.backends.gvisor import host_pids_ceiling
from hearth.images import catalog
from hearth.testing import HearthServer

PROBE = """
import os, socket

def handler(event, context):
    out = {"uid": os.getuid(), "interfaces": sorted(n for _, n in socket.if_nameindex()), "kernel": os.uname().release}
    try:
        socket.create_connection(("127.0.0.1", event["port"]), timeout=2).close()
        out["host_loopback"] = "reached"
    except OSError as exc:
        out["host_loopback"] = type(exc).__name__
    try:
        socket.create_connection(("192.0.2.1", 80), timeout=1).close()
        out["outside"] = "reached"
    except OSError as exc:
        out["outside"] = type(exc).__name__
    for path in ("/hearth/code/evil.py", "/etc/evil", "/opt/hearth/evil", "/evil"):
        try:
            with open(path, "w") as f:
                f.write("x")
            out[path] = "written"
        except OSError as exc:
            out[path] = type(exc).__name__
    with open("/tmp/fine", "w") as f:
        f.write("ok")
    out["tmp"] = open("/tmp/fine").read()
    out["docker_sock"] = os.path.exists("/var/run/docker.sock")
    with open("/proc/self/status") as f:
        caps = [line.split()[1] for line in f if line.startswith("CapEff")]
    out["cap_eff"] = caps[0]
    return out
"""


def test_no_network_no_writes_outside_tmp_no_privileges(hearth: HearthServer, fname: str, backend: str) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[object] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    port = listener.getsockname()[1]
    try:
        hearth.deploy(fname, PROBE, backend=backend)
        response = hearth.invoke(fname, {"port": port})
        assert response.status_code == 200, response.text
        out = response.json()
    finally:
        listener.close()
    assert out["uid"] == 65534
    assert out["interfaces"] == ["lo"]
    assert out["host_loopback"] != "reached" and not accepted
    assert out["outside"] != "reached"
    for path in ("/hearth/code/evil.py", "/etc/evil", "/opt/hearth/evil", "/evil"):
        assert out[path] in ("OSError", "PermissionError"), (path, out[path])
    assert out["tmp"] == "ok"
    assert out["docker_sock"] is False
    assert int(out["cap_eff"], 16) == 0
    # Under gVisor the function talks to gVisor's own kernel, in a microVM to the guest's: not the host's.
    assert (out["kernel"] == os.uname().release) is (backend == "docker"), out["kernel"]


def test_javascript_cannot_write_outside_tmp(hearth: HearthServer, fname: str, backend: str) -> None:
    code = (
        "const fs = require('fs');\n"
        "exports.handler = async () => {\n"
        "  const r = {};\n"
        "  for (const p of ['/hearth/code/x.js', '/etc/x', '/tmp/ok']) {\n"
        "    try { fs.writeFileSync(p, 'x'); r[p] = 'written'; } catch (e) { r[p] = e.code; }\n"
        "  }\n"
        "  r.uid = process.getuid();\n"
        "  return r;\n"
        "};\n"
    )
    hearth.deploy(fname, code, language="javascript", backend=backend)
    out = hearth.invoke(fname).json()
    assert out["/hearth/code/x.js"] in ("EROFS", "EACCES") and out["/etc/x"] in ("EROFS", "EACCES")
    assert out["/tmp/ok"] == "written" and out["uid"] == 65534


def test_limits_are_applied_to_the_container(
    hearth: HearthServer, fname: str, container_backend: str, docker_client: docker.DockerClient
) -> None:
    backend = container_backend
    hearth.deploy(fname, "def handler(e, c):\n    return 1\n", memory_mb=96, cpus=0.25, backend=backend)
    assert hearth.invoke(fname).status_code == 200
    containers: list = []
    deadline = time.monotonic() + 5
    while not containers and time.monotonic() < deadline:  # a stem cell is renamed just after it is taken
        containers = docker_client.containers.list(filters={"name": f"hearth-{fname}-v1-"})
        time.sleep(0.05)
    assert len(containers) == 1
    cid = containers[0].id
    # Enforcement is what the kernel holds, whichever path (cold start or stem cell) set it.
    memory = Path(f"/sys/fs/cgroup/memory/docker/{cid}")
    assert int((memory / "memory.limit_in_bytes").read_text()) == 96 * 1024 * 1024
    assert int((memory / "memory.memsw.limit_in_bytes").read_text()) == 96 * 1024 * 1024
    cpu = Path(f"/sys/fs/cgroup/cpu/docker/{cid}")
    assert int((cpu / "cpu.cfs_quota_us").read_text()) * 4 == int((cpu / "cpu.cfs_period_us").read_text())
    pids_max = int(Path(f"/sys/fs/cgroup/pids/docker/{cid}/pids.max").read_text())
    host = containers[0].attrs["HostConfig"]
    if backend == "gvisor":
        # Processes inside: RLIMIT_NPROC, counted by gVisor's kernel; the host pids.max bounds runsc's own tasks.
        assert host["Runtime"] == "runsc"
        assert host["Ulimits"] == [{"Name": "nproc", "Soft": 128, "Hard": 128}]
        assert pids_max == host_pids_ceiling(128)
    else:
        assert pids_max == 128 and host.get("Runtime") in (None, "runc")
    assert host["ReadonlyRootfs"] is True
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"]
    assert any("no-new-privileges" in opt for opt in host["SecurityOpt"])
    assert containers[0].attrs["Config"]["User"] == "65534:65534"


TASK_COUNT = """
import threading

def handler(event, context):
    release, started, error = threading.Event(), [], None
    while len(started) < 1000:
        thread = threading.Thread(target=release.wait)
        try:
            thread.start()
        except RuntimeError as exc:
            error = str(exc)
            break
        started.append(thread)
    release.set()
    for thread in started:
        thread.join()
    return {"started": len(started), "error": error}
"""


def test_task_limit_holds_inside_the_sandbox(hearth: HearthServer, fname: str, backend: str) -> None:
    """HEARTH_PIDS_LIMIT (128) bounds a function's tasks on every backend, and the sandbox survives reaching it.

    Threads, not processes: both limits count every task (the pids cgroup under runc, RLIMIT_NPROC in gVisor's
    kernel), and under gVisor each extra process costs ~10 MiB of sandbox memory (the fork bomb of
    tests/security ends in OutOfMemory there before the limit).
    """
    hearth.deploy(fname, TASK_COUNT, memory_mb=256, timeout_s=30, backend=backend)
    response = hearth.invoke(fname)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["error"] is not None and "thread" in out["error"], out
    assert 100 <= out["started"] < 128, out  # the agent's own tasks (and tini's under runc) count too
    assert hearth.invoke(fname).status_code == 200  # the same sandbox still answers


SPIN_OR_ALLOCATE = """
import time

def handler(event, context):
    if event.get("allocate_mb"):
        block = bytearray(event["allocate_mb"] * 1024 * 1024)
        block[::4096] = b"x" * len(block[::4096])
        return len(block)
    started = time.monotonic()
    while time.monotonic() - started < event.get("spin_s", 0):
        pass
    return "spun"
"""


def test_a_stem_cell_takes_the_function_limits(
    hearth: HearthServer, fname: str, container_backend: str, docker_client: docker.DockerClient
) -> None:
    """A stem cell starts with generic limits (128 MB, 1 CPU): loading a function must move it to the function's.

    CPU is read from the host's cgroup: inside gVisor, a task's CPU time includes time its host thread
    spent throttled, so the function's own process_time() says nothing about the quota there.
    (A microVM's stem cells are booted per memory size, so they never change limits.)
    """
    backend = container_backend

    def stems() -> int:
        key = f"{backend}/{catalog.default_runtime('python')}"  # stem cells are per runtime
        return int(httpx.get(f"{hearth.base_url}/readyz").json()["stem_cells"].get(key, 0))

    hearth.deploy(fname + "-first", "def handler(e, c):\n    return 1\n", backend=backend)
    hearth.invoke(fname + "-first")  # a backend's stem cells start at its first use if it is not the default
    deadline = time.monotonic() + 30
    while stems() < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    hearth.deploy(fname, SPIN_OR_ALLOCATE, memory_mb=64, cpus=0.25, backend=backend)
    first = hearth.invoke(fname)
    assert (first.status_code, first.headers["X-Hearth-Path"]) == (200, "stem"), first.text
    containers: list = []
    deadline = time.monotonic() + 10
    while not containers and time.monotonic() < deadline:  # a stem cell is renamed just after it is taken
        containers = docker_client.containers.list(filters={"name": f"hearth-{fname}-v1-"})
        time.sleep(0.05)
    usage = Path(f"/sys/fs/cgroup/cpuacct/docker/{containers[0].id}/cpuacct.usage")
    cpu_before, wall_before = int(usage.read_text()), time.monotonic()
    assert hearth.invoke(fname, {"spin_s": 1.5}).json() == "spun"
    share = (int(usage.read_text()) - cpu_before) / 1e9 / (time.monotonic() - wall_before)
    assert share < 0.4, f"the sandbox used {share:.2f} of a CPU with cpus=0.25"
    assert hearth.invoke(fname, {"allocate_mb": 16}).json() == 16 * 1024 * 1024
    oom = hearth.invoke(fname, {"allocate_mb": 96})  # fits the stem cell's 128 MB, not the function's 64
    assert oom.status_code == 502 and oom.json()["error"]["type"] == "OutOfMemory", oom.text
