"""The microvm backend next to Docker (`python -m bench.run --only microvm`, or `python -m bench.microvm`).

Figures (each also as a ratio to Docker's, measured in the same run where there is a counterpart):

- boot-to-ready: a VM started from its kernel until its agent said hello (snapshots off), per runtime;
  Docker's counterpart is `docker run --rm python3 -c pass`;
- restore-to-ready: a VM restored from its shape's snapshot until the agent can take `init`;
- first call of a new function through the API: from a stem cell (restored and warmed ahead) and cold
  (restore + load on the request path), vs Docker's stem-cell and cold first calls;
- warm round trip: serial invoke frames to one loaded sandbox in-process (no HTTP), and warm HTTP
  through /fn with wrk at one connection;
- memory per idle VM: RSS and PSS of the QEMU process of warm idle instances (guest RAM the guest
  touched + QEMU's own), vs a Docker sandbox's memory cgroup + containerd shim; and the CPU those idle
  VMs use;
- a custom runtime in a VM (`provided`, a Go no-op bootstrap over the Runtime API, bench/runtime_noop):
  warm HTTP at one connection and the first call of a new function (a `provided` stem cell), each next
  to the built-in Python runtime on the microvm backend in the same server (`--provided-only` runs
  just these).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.backends import NOOP_PY, docker_run, first_calls, idle_memory, sandbox_round_trip
from bench.harness import hearth_server, summary_ms, wrk
from bench.provided import go_noop, zip_of
from hearth.engine.backends.vm.backend import MicroVMBackend
from hearth.engine.sandbox import Limits, Purpose, Runtime
from hearth.images import catalog

NOOP_JS = "exports.handler = async () => 1;\n"


def vm_starts(runtime: Runtime, trials: int, snapshots: bool) -> dict[str, Any]:
    """`trials` VMs created one after another: boot (snapshots off) or restore (on); ms until ready."""

    async def run() -> list[float]:
        backend = MicroVMBackend(
            run_dir=Path(tempfile.mkdtemp(prefix="hearth-bench-vm-")), owner="bench", snapshots=snapshots
        )
        limits = Limits(128, 1.0, backend.pids_limit, backend.tmpfs_mb)
        if snapshots:  # make sure the shape's snapshot exists: not part of the figure
            await (await backend.create(runtime, limits, Purpose.probe())).stop()
        times = []
        for _ in range(trials):
            started = time.perf_counter()
            sandbox = await backend.create(runtime, limits, Purpose.probe())
            times.append((time.perf_counter() - started) * 1000)
            await sandbox.stop()
        return times

    return summary_ms(asyncio.run(run()))


def snapshot_facts() -> dict[str, Any]:
    """Size and save time of the snapshots in the cache (one per runtime and VM shape)."""
    backend = MicroVMBackend(run_dir=Path(tempfile.mkdtemp(prefix="hearth-bench-vm-")), owner="bench")
    out = {}
    for entry in sorted(backend.snapshots.root.glob("*/meta.json")):
        meta = json.loads(entry.read_text())
        shape = meta.get("shape") or {}
        out[f"{shape.get('runtime')}-{shape.get('memory_mb')}MiB"] = {
            "mib": round(meta.get("bytes", 0) / 2**20, 1),
            "save_ms": meta.get("save_ms"),
        }
    return out


def _proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_vms(server: Any, vms: int) -> dict[str, Any]:
    """`vms` warm idle Python instances (a server without stem cells): PSS/RSS of each QEMU, their idle CPU."""
    from hearth.api.app import owner_id

    server.deploy("dense", NOOP_PY, min_warm=vms, max_instances=vms)
    run_dir = Path(tempfile.gettempdir()) / f"hearth-{owner_id(server.data_dir.resolve())}" / "microvm"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        instances = server.client.get("/api/functions/dense").json().get("instances") or {}
        if instances.get("warm", 0) >= vms:
            break
        time.sleep(1)
    time.sleep(5)
    pids = [int(p.read_text()) for p in run_dir.glob("*/qemu.pid")]
    pids = [pid for pid in pids if Path(f"/proc/{pid}/smaps_rollup").exists()]
    rss = [_proc_kib(pid, "Rss") for pid in pids]
    pss = [_proc_kib(pid, "Pss") for pid in pids]
    cpu_before = sum(_cpu_seconds(pid) for pid in pids)
    time.sleep(10)
    cpu_after = sum(_cpu_seconds(pid) for pid in pids)
    return {
        "vms": len(pids),
        "rss_mib_p50": round(statistics.median(rss) / 1024, 1),
        "pss_mib_p50": round(statistics.median(pss) / 1024, 1),
        "per_vm_mib": round(statistics.median(pss) / 1024, 1),
        "idle_cpu_percent_all_vms": round((cpu_after - cpu_before) / 10 * 100, 2),
    }


def stem_cell_ready(server: Any, runtime: str, timeout_s: float = 120) -> None:
    """Until a microvm stem cell of `runtime` waits (`provided` ones exist once a provided function started)."""
    deadline = time.monotonic() + timeout_s
    while server.client.get("/readyz").json()["stem_cells"].get(f"microvm/{runtime}", 0) < 1:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no microvm/{runtime} stem cell within {timeout_s} s")
        time.sleep(0.2)


def provided_in_vms(trials: int, seconds: float) -> dict[str, Any]:
    """A `provided` Go no-op and the built-in Python no-op, both in microVMs of one server: warm and first calls."""
    bootstrap = go_noop()
    out: dict[str, Any] = {"python": {}, "provided_go": {}}
    env = {"HEARTH_DEFAULT_BACKEND": "microvm", "HEARTH_STEM_CELLS": "1", "HEARTH_KEEP_ALIVE_S": "600"}
    server = hearth_server(env)
    try:
        server.deploy("noop-py", NOOP_PY)
        created = server.client.post(
            "/api/functions", json={"name": "noop-go", "language": "provided", "zip_base64": zip_of(bootstrap)}
        )
        assert created.status_code == 201, created.text
        for label, name in (("python", "noop-py"), ("provided_go", "noop-go")):
            warmed = server.invoke(name)  # the instance is started before the clock runs
            assert warmed.status_code == 200, warmed.text
            url = f"{server.base_url}/fn/{name}"
            wrk(url, 1, 2)
            out[label]["warm_http_c1"] = wrk(url, 1, seconds)
            assert out[label]["warm_http_c1"]["errors"] == 0, out[label]
        for label, body in (
            ("python", {"language": "python", "code": NOOP_PY}),
            ("provided_go", {"language": "provided", "zip_base64": zip_of(bootstrap)}),
        ):
            latencies = []
            for i in range(trials):
                stem_cell_ready(server, "provided" if label == "provided_go" else catalog.default_runtime("python"))
                name = f"first-{label.replace('_', '-')}-{i}"
                created = server.client.post("/api/functions", json={"name": name, **body})
                assert created.status_code == 201, created.text
                started = time.perf_counter()
                response = server.invoke(name)
                latencies.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text
                assert response.headers["X-Hearth-Path"] == "stem", response.headers
                server.client.delete(f"/api/functions/{name}")
            out[label]["stem_cell_first_call"] = summary_ms(latencies)
    finally:
        server.stop()
    go, py = out["provided_go"], out["python"]
    go["ratio_to_python"] = {
        "warm_http_c1_p50": round(go["warm_http_c1"]["p50_ms"] / py["warm_http_c1"]["p50_ms"], 2),
        "warm_http_c1_rps": round(go["warm_http_c1"]["rps"] / py["warm_http_c1"]["rps"], 2),
        "stem_cell_first_call_p50": round(
            go["stem_cell_first_call"]["p50_ms"] / py["stem_cell_first_call"]["p50_ms"], 2
        ),
    }
    return out


def provided_table(result: dict[str, Any]) -> str:
    go, py = result["provided_go"], result["python"]
    r = go["ratio_to_python"]
    return "\n".join(
        [
            "| in microVMs (p50) | provided, Go no-op | built-in Python | provided ÷ Python |",
            "| --- | --- | --- | --- |",
            f"| warm HTTP, 1 connection | {go['warm_http_c1']['p50_ms']:.2f} ms, {go['warm_http_c1']['rps']:.0f} rps "
            f"| {py['warm_http_c1']['p50_ms']:.2f} ms, {py['warm_http_c1']['rps']:.0f} rps "
            f"| {r['warm_http_c1_p50']} (rps {r['warm_http_c1_rps']}) |",
            f"| first call, stem cell | {go['stem_cell_first_call']['p50_ms']:.0f} ms "
            f"| {py['stem_cell_first_call']['p50_ms']:.0f} ms | {r['stem_cell_first_call_p50']} |",
        ]
    )


def bench_microvm(trials: int, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"microvm": {}, "docker": {}}
    vm, dk = out["microvm"], out["docker"]
    probe = MicroVMBackend(run_dir=Path(tempfile.mkdtemp(prefix="hearth-bench-vm-")), owner="bench")
    available, reason = probe.availability()
    if not available:
        return {"microvm": {"available": False, "reason": reason}}
    vm["accelerator"], vm["accelerator_reason"] = probe.accelerator()
    vm["boot_to_ready"] = {"python": vm_starts("python", 3, snapshots=False)}
    vm["boot_to_ready"]["javascript"] = vm_starts("javascript", 2, snapshots=False)
    vm["restore_to_ready"] = {"python": vm_starts("python", trials, snapshots=True)}
    vm["restore_to_ready"]["javascript"] = vm_starts("javascript", max(3, trials // 3), snapshots=True)
    vm["snapshots"] = snapshot_facts()
    dk["docker_run"] = docker_run(None, trials)

    for name, store in (("microvm", vm), ("docker", dk)):
        server = hearth_server({"HEARTH_DEFAULT_BACKEND": name, "HEARTH_STEM_CELLS": "1", "HEARTH_KEEP_ALIVE_S": "600"})
        try:
            store["stem_cell_first_call"] = first_calls(server, trials, "s", "stem", name)
            server.deploy("noop", NOOP_PY)
            wrk(f"{server.base_url}/fn/noop", 1, 2)
            store["warm_http_c1"] = wrk(f"{server.base_url}/fn/noop", 1, seconds)
        finally:
            server.stop()
        server = hearth_server({"HEARTH_DEFAULT_BACKEND": name, "HEARTH_STEM_CELLS": "0", "HEARTH_KEEP_ALIVE_S": "600"})
        try:
            store["cold_first_call"] = first_calls(server, max(3, trials // 2), "c", "cold", name)
            store["idle"] = idle_vms(server, 4) if name == "microvm" else idle_memory(server, 4)
        finally:
            server.stop()
        store["sandbox_round_trip"] = sandbox_round_trip(name, 500 if name == "microvm" else 2000)

    def ratio(a: float, b: float) -> float:
        return round(a / b, 2)

    vm["ratio_to_docker"] = {
        "boot_to_ready_python_vs_docker_run_p50": ratio(
            vm["boot_to_ready"]["python"]["p50_ms"], dk["docker_run"]["p50_ms"]
        ),
        "restore_to_ready_python_vs_docker_run_p50": ratio(
            vm["restore_to_ready"]["python"]["p50_ms"], dk["docker_run"]["p50_ms"]
        ),
        "stem_cell_first_call_p50": ratio(vm["stem_cell_first_call"]["p50_ms"], dk["stem_cell_first_call"]["p50_ms"]),
        "cold_first_call_p50": ratio(vm["cold_first_call"]["p50_ms"], dk["cold_first_call"]["p50_ms"]),
        "sandbox_round_trip_p50": ratio(vm["sandbox_round_trip"]["p50_ms"], dk["sandbox_round_trip"]["p50_ms"]),
        "warm_http_c1_rps": ratio(vm["warm_http_c1"]["rps"], dk["warm_http_c1"]["rps"]),
        "memory_per_idle_sandbox": ratio(vm["idle"]["per_vm_mib"], dk["idle"]["per_sandbox_mib"]),
    }
    vm["restore_vs_boot_python_p50"] = round(
        vm["restore_to_ready"]["python"]["p50_ms"] / vm["boot_to_ready"]["python"]["p50_ms"], 3
    )
    vm["provided"] = provided_in_vms(max(3, trials // 2), seconds)
    return out


def table(results: dict[str, Any]) -> str:
    vm, dk = results["microvm"], results.get("docker", {})
    if not vm.get("available", True):
        return f"microvm not available: {vm['reason']}"
    r = vm["ratio_to_docker"]
    b, s = vm["boot_to_ready"], vm["restore_to_ready"]
    rows = [
        "| figure (p50) | microvm | docker | microvm ÷ docker |",
        "| --- | --- | --- | --- |",
        f"| boot-to-ready Python / JS | {b['python']['p50_ms']:.0f} / {b['javascript']['p50_ms']:.0f} ms "
        f"| `docker run` {dk['docker_run']['p50_ms']:.0f} ms | {r['boot_to_ready_python_vs_docker_run_p50']} |",
        f"| restore-to-ready Python / JS | {s['python']['p50_ms']:.0f} / {s['javascript']['p50_ms']:.0f} ms "
        f"| `docker run` {dk['docker_run']['p50_ms']:.0f} ms | {r['restore_to_ready_python_vs_docker_run_p50']} |",
        f"| first call, stem cell | {vm['stem_cell_first_call']['p50_ms']:.0f} ms "
        f"| {dk['stem_cell_first_call']['p50_ms']:.0f} ms | {r['stem_cell_first_call_p50']} |",
        f"| first call, cold | {vm['cold_first_call']['p50_ms']:.0f} ms | {dk['cold_first_call']['p50_ms']:.0f} ms "
        f"| {r['cold_first_call_p50']} |",
        f"| warm round trip (in-process) | {vm['sandbox_round_trip']['p50_ms']:.2f} ms "
        f"| {dk['sandbox_round_trip']['p50_ms']:.2f} ms | {r['sandbox_round_trip_p50']} |",
        f"| warm HTTP, 1 connection | {vm['warm_http_c1']['rps']:.0f} rps | {dk['warm_http_c1']['rps']:.0f} rps "
        f"| {r['warm_http_c1_rps']} |",
        f"| memory per idle sandbox | {vm['idle']['per_vm_mib']} MiB PSS ({vm['idle']['rss_mib_p50']} RSS) "
        f"| {dk['idle']['per_sandbox_mib']} MiB | {r['memory_per_idle_sandbox']} |",
    ]
    if "provided" in vm:
        rows += ["", provided_table(vm["provided"])]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--provided-only", action="store_true", help="only the custom-runtime figures")
    args = parser.parse_args()
    if args.provided_only:
        provided = provided_in_vms(args.trials, args.seconds)
        print(json.dumps(provided, indent=1))
        print(provided_table(provided))
        return
    results = bench_microvm(args.trials, args.seconds)
    print(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
