"""The microVM backends through the real API: QEMU microvm (KVM where it works, TCG here) and Firecracker.

Every test drives a real Hearth server and real VMs, once per VM backend. A backend this host cannot
run is skipped with the capability it lacks, as the backend itself reports it (no qemu-system-x86_64,
no guest image and no root to build one, no firecracker binary, no usable KVM). The guest image is
built on demand when we are root (it is cached under HEARTH_MICROVM_CACHE_DIR across runs).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearth.engine.backends.vm.backend import MicroVMBackend, firecracker_backend
from hearth.engine.backends.vm.qemu import QEMU
from hearth.images import catalog
from hearth.images import microvm as microvm_image
from hearth.testing import HearthServer

PYTHON = catalog.default_runtime("python")  # stem cells are counted per runtime

pytestmark = pytest.mark.slow
VM_BACKENDS = ("microvm", "firecracker")


def vm_ids(server: HearthServer, backend: str) -> set[str]:
    """Ids of the VMs whose VMM process (QEMU or Firecracker) runs for `server` on `backend`."""
    run_dir = run_dir_of(server, backend)
    return vm_ids_left({d.name for d in run_dir.iterdir()} if run_dir.is_dir() else set())


def vm_ids_left(ids: set[str]) -> set[str]:
    """Which of these VM ids still have a (non-zombie) process naming them on its command line."""
    left: set[str] = set()
    for entry in Path("/proc").iterdir() if ids else ():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            left |= {vm for vm in ids if vm in cmdline}
    return left


@pytest.fixture(scope="module", params=VM_BACKENDS)
def vm_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "microvm" and shutil.which(QEMU) is None:
        pytest.skip(f"no {QEMU} on PATH (Debian's qemu-system-x86: scripts/install-system.sh)")
    request.getfixturevalue("microvm_guest_image")
    kind = MicroVMBackend if name == "microvm" else firecracker_backend
    backend = kind(run_dir=Path(tempfile.mkdtemp(prefix=f"hearth-{name}-check-")), owner="pytest-check")
    available, reason = backend.availability()
    if not available:
        pytest.skip(f"{name} backend not available here: {reason}")
    return name


@pytest.fixture(scope="module")
def vm_hearth(tmp_path_factory: pytest.TempPathFactory, vm_backend: str) -> Iterator[HearthServer]:
    server = HearthServer(tmp_path_factory.mktemp(f"hearth-{vm_backend}") / "data")
    server.start()
    yield server
    server.stop()
    assert not vm_ids(server, vm_backend), "VMs outlived the server"


def owner_of(server: HearthServer) -> str:
    from hearth.api.app import owner_id

    return owner_id(server.data_dir.resolve())


def run_dir_of(server: HearthServer, backend: str) -> Path:
    return Path(tempfile.gettempdir()) / f"hearth-{owner_of(server)}" / backend


def backend_details(server: HearthServer, backend: str) -> dict:  # type: ignore[type-arg]
    response = server.client.get(f"/api/backends/{backend}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


PROBE = """
import os, socket, sys
def handler(event, context):
    print("to stdout")
    print("to stderr", file=sys.stderr)
    out = {"uid": os.getuid(), "kernel": os.uname().release, "interfaces": sorted(n for _, n in socket.if_nameindex())}
    for path in ("/", "/hearth/code", "/opt/hearth"):
        try:
            open(os.path.join(path, "probe"), "w").close()
            out[path] = "writable"
        except OSError as exc:
            out[path] = type(exc).__name__
    with open("/tmp/probe", "w") as f:
        f.write("ok")
    for _ in range(4):  # straight to fd 1, past the capture: dropped in the guest, must not stall the call
        os.write(1, b"z" * 1_000_000)
    out["devices"] = sorted(os.listdir("/dev"))
    out["event"] = event
    return out
"""


def test_python_function_runs_isolated_in_a_vm(vm_hearth: HearthServer, vm_backend: str, fname: str) -> None:
    vm_hearth.deploy(fname, PROBE, backend=vm_backend, memory_mb=96, cpus=0.25)
    first = vm_hearth.invoke(fname, {"n": 1})
    assert first.status_code == 200, first.text
    out = first.json()
    assert first.headers["X-Hearth-Cold"] == "true"
    assert out["event"] == {"n": 1}
    assert out["uid"] == 65534
    assert out["kernel"] != os.uname().release  # the guest's own kernel
    assert out["interfaces"] == ["lo"]  # no network device at all
    assert out["/"] != "writable" and out["/opt/hearth"] != "writable"
    assert out["/hearth/code"] != "writable"  # the code the agent wrote was sealed read-only
    assert "hearth-control" not in out["devices"] and "vda" not in out["devices"]
    second = vm_hearth.invoke(fname, {"n": 2})
    assert second.headers["X-Hearth-Cold"] == "false" and second.json()["event"] == {"n": 2}
    invocation = second.headers["X-Hearth-Invocation-Id"]
    deadline = time.monotonic() + 10  # records are written behind the call (~0.5 s)
    while (record := vm_hearth.client.get(f"/api/invocations/{invocation}")).status_code != 200:
        assert time.monotonic() < deadline, record.text
        time.sleep(0.2)
    assert (record.json()["stdout"], record.json()["stderr"]) == ("to stdout\n", "to stderr\n")
    # The CPU share is a quota on the VM's host process: 0.25 of a CPU.
    sandbox = record.json()["sandbox_id"]
    vm_dir = run_dir_of(vm_hearth, vm_backend) / sandbox
    pid = next(p.read_text().strip() for p in vm_dir.glob("*.pid") if p.name != "hearth.pid")
    group = Path(f"/sys/fs/cgroup/cpu/hearth-microvm-{owner_of(vm_hearth)}/{sandbox}")
    if group.parent.parent.is_dir():  # cgroup v1's cpu controller (this host); v2 hosts have cpu.max instead
        assert int((group / "cpu.cfs_quota_us").read_text()) * 4 == int((group / "cpu.cfs_period_us").read_text())
        assert pid in (group / "cgroup.procs").read_text().split()


def test_timeout_kills_the_vm_and_the_next_call_gets_a_new_one(
    vm_hearth: HearthServer, vm_backend: str, fname: str
) -> None:
    code = (
        "calls = 0\n"
        "def handler(event, context):\n"
        "    global calls\n"
        "    calls += 1\n"
        "    if event.get('spin'):\n"
        "        while True:\n"
        "            pass\n"
        "    return calls\n"
    )
    vm_hearth.deploy(fname, code, timeout_s=2, backend=vm_backend)
    assert vm_hearth.invoke(fname).json() == 1
    before = vm_ids(vm_hearth, vm_backend)
    started = time.monotonic()
    response = vm_hearth.invoke(fname, {"spin": True})
    assert response.status_code == 504 and response.json()["error"]["type"] == "Timeout"
    assert time.monotonic() - started < 6
    after = vm_hearth.invoke(fname)
    assert (after.status_code, after.json()) == (200, 1), after.text  # a fresh VM: module state starts over
    assert after.headers["X-Hearth-Cold"] == "true"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (before - vm_ids(vm_hearth, vm_backend)):
        time.sleep(0.2)
    assert before - vm_ids(vm_hearth, vm_backend), "the timed-out VM is still running"


def test_memory_limit_is_enforced_in_the_guest(vm_hearth: HearthServer, vm_backend: str, fname: str) -> None:
    code = (
        "def handler(event, context):\n"
        "    if event.get('bomb'):\n"
        "        blocks = []\n"
        "        while True:\n"
        "            blocks.append(bytearray(8 * 1024 * 1024))\n"
        "    keep = bytearray(event.get('mb', 1) * 1024 * 1024)\n"
        "    return len(keep) >> 20\n"
    )
    vm_hearth.deploy(fname, code, memory_mb=64, backend=vm_backend)
    assert vm_hearth.invoke(fname, {"mb": 32}).json() == 32  # under the limit: fine
    response = vm_hearth.invoke(fname, {"bomb": True})
    assert response.status_code == 502, response.text
    assert response.json()["error"]["type"] == "OutOfMemory"
    assert vm_hearth.invoke(fname, {"mb": 1}).json() == 1  # a new VM serves the next call


def test_vms_are_restored_from_a_snapshot_and_clones_do_not_share_randomness(
    vm_hearth: HearthServer, vm_backend: str, fname: str
) -> None:
    python = (
        "import os, time, uuid\n"
        "def handler(e, c):\n"
        "    return [os.urandom(16).hex(), str(uuid.uuid4()), time.time()]\n"
    )
    node = (
        "const crypto = require('crypto');\n"
        "exports.handler = async (event, context) =>\n"
        "  [crypto.randomBytes(16).toString('hex'), crypto.randomUUID(), Date.now() / 1000,\n"
        "   { event, name: context.functionName, node: process.version }];\n"
    )
    for n in range(2):
        vm_hearth.deploy(f"{fname}-py{n}", python, backend=vm_backend)
        vm_hearth.deploy(f"{fname}-js{n}", node, language="javascript", backend=vm_backend)
    # One after another: each is a VM of its own either way, and under TCG four at once on two cores
    # (the first JavaScript one also booting to save the snapshot) can take longer than a client waits.
    names = [f"{fname}-{kind}{n}" for kind in ("py", "js") for n in range(2)]
    results, answered_at = {}, {}
    for name in names:  # each answer's host time is taken as it arrives: a boot of the next may take long
        results[name] = vm_hearth.invoke(name, {"s": "é"})
        answered_at[name] = time.time()
    for name, response in results.items():
        assert response.status_code == 200, (name, response.text)
    for kind in ("py", "js"):
        one, two = (results[f"{fname}-{kind}{n}"].json() for n in range(2))
        assert not set(map(str, one[:2])) & set(map(str, two[:2])), f"{kind} VMs from one snapshot share randomness"
        for n, guest_time in enumerate((one[2], two[2])):  # the guest's clock was set at restore, not the snapshot's
            host_time = answered_at[f"{fname}-{kind}{n}"]
            assert abs(guest_time - host_time) < 30, f"{kind} guest clock is off by {guest_time - host_time:.0f} s"
    js = results[f"{fname}-js0"].json()[3]  # JavaScript: the event and the context arrive as in containers
    assert js["event"] == {"s": "é"} and js["name"] == f"{fname}-js0" and js["node"].startswith("v")
    assert vm_hearth.invoke(f"{fname}-js0").headers["X-Hearth-Cold"] == "false"
    details = backend_details(vm_hearth, vm_backend)["details"]
    assert details["snapshots"] is True, details.get("snapshot_problem")
    assert details["accelerator"] in ("kvm", "tcg") and details["accelerator_reason"]
    assert details["starts"].get("restore/python", {}).get("samples", 0) >= 1, details["starts"]
    assert details["starts"].get("restore/javascript", {}).get("samples", 0) >= 1, details["starts"]
    assert not details["starts"].get("boot/python"), "a VM booted although a snapshot could be restored"


def test_stem_cells_serve_first_calls(vm_hearth: HearthServer, vm_backend: str, fname: str) -> None:
    """Once the backend is in use, pre-started (restored, warmed) VMs wait for functions' first calls."""
    vm_hearth.deploy(fname + "-first", "def handler(e, c):\n    return 1\n", backend=vm_backend)
    assert vm_hearth.invoke(fname + "-first").status_code == 200  # the backend is in use: stem cells from now on
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not backend_details(vm_hearth, vm_backend)["stem_cells"].get(PYTHON):
        time.sleep(0.5)
    assert backend_details(vm_hearth, vm_backend)["stem_cells"].get(PYTHON), backend_details(vm_hearth, vm_backend)
    vm_hearth.deploy(fname, "def handler(e, c):\n    return 'stem'\n", backend=vm_backend)
    response = vm_hearth.invoke(fname)
    assert (response.status_code, response.json()) == (200, "stem")
    assert response.headers["X-Hearth-Path"] == "stem"


def test_network_functions_are_refused(vm_hearth: HearthServer, vm_backend: str, fname: str) -> None:
    response = vm_hearth.client.post(
        "/api/functions",
        json={"name": fname, "language": "python", "code": "def handler(e, c):\n    return 1\n", "backend": vm_backend,
              "network": True},
    )  # fmt: skip
    assert response.status_code == 422
    assert "network" in response.text and vm_backend in response.text


def test_vms_power_off_when_hearth_dies(tmp_path: Path, vm_backend: str, fname: str) -> None:
    """A killed Hearth leaves no VM behind: each guest powers off once its host side disconnects."""
    server = HearthServer(tmp_path / "data")
    server.start()
    try:
        server.deploy(fname, "def handler(e, c):\n    return 1\n", backend=vm_backend)
        assert server.invoke(fname).status_code == 200
        running = vm_ids(server, vm_backend)
        assert running
    finally:
        server.stop(signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and vm_ids_left(running):
        time.sleep(0.2)
    assert not vm_ids_left(running), "a VM outlived the Hearth that started it"



def test_a_backend_that_becomes_available_later_gets_stem_cells(
    tmp_path: Path, microvm_guest_image: None, fname: str
) -> None:
    """The guest image built while Hearth runs: functions may use microvm from then on, with stem cells."""
    if shutil.which(QEMU) is None:
        pytest.skip(f"no {QEMU} on PATH (Debian's qemu-system-x86: scripts/install-system.sh)")
    cache = tmp_path / "cache"
    server = HearthServer(tmp_path / "data", env={"HEARTH_MICROVM_CACHE_DIR": str(cache)})
    server.start()
    try:
        assert backend_details(server, "microvm")["available"] is False
        body = {"name": fname, "language": "python", "code": "def handler(e, c):\n    return 1\n", "backend": "microvm"}
        refused = server.client.post("/api/functions", json=body)
        assert refused.status_code == 422 and "guest image" in refused.text
        image = microvm_image.image_dir()
        (cache / "images").mkdir(parents=True)
        (cache / "images" / image.name).symlink_to(image)  # "built" now
        server.deploy(fname, "def handler(e, c):\n    return 'first'\n", backend="microvm")
        assert server.invoke(fname).json() == "first"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not backend_details(server, "microvm")["stem_cells"].get(PYTHON):
            time.sleep(0.5)
        server.deploy(fname + "-2", "def handler(e, c):\n    return 'second'\n", backend="microvm")
        second = server.invoke(fname + "-2")
        assert (second.json(), second.headers["X-Hearth-Path"]) == ("second", "stem")
    finally:
        server.stop()
