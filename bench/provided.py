"""Custom runtimes and image functions (`python -m bench.run --only provided`).

In one run: warm no-op round trip (wrk, 1 connection) and throughput (4 connections, 4 instances) of
a `provided` function (a Go bootstrap, standard library only) and of an awslambdaric image function,
next to the built-in Python runtime; the same awslambdaric image under AWS's Runtime Interface
Emulator (RIE, from the aws-sam-cli wheel: a bench-only dependency), at 1 connection and as 4
containers with one connection each (RIE serves one invocation at a time) against 4 Hearth instances;
and the cold first call of each (Hearth: deploy, then the first call; RIE: `docker run` to first answer).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx

from bench.harness import free_port, hearth_server, summary_ms, wrk
from hearth.api.app import owner_id
from hearth.engine import provided
from hearth.images import provided as provided_images

BENCH_DIR = Path(__file__).resolve().parent
NOOP_PY = "def handler(event, context):\n    return 1\n"
NOOP_RIC = "def handler(event, context):\n    return 1\n"
RIE_INVOKE = "/2015-03-31/functions/function/invocations"
CACHE = provided.relay_cache_root().parent / "bench"


def start_rie(rie: Path, image: str, name: str, port: int, api_port: int) -> None:
    """The awslambdaric image under AWS's emulator, with the limits and user Hearth gives a sandbox."""
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, "--network", "host", "--user", "65534:65534",
         "--read-only", "--tmpfs", "/tmp", "--memory", "128m", "--cpus", "0.5",
         "-v", f"{rie.parent}:/rie:ro", "--entrypoint", "/rie/aws-lambda-rie", image,
         "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
         "--runtime-api-address", f"127.0.0.1:{api_port}", "python3", "-m", "awslambdaric", "app.handler"],
        check=True, capture_output=True,
    )  # fmt: skip


def go_noop() -> bytes:
    out = CACHE / "noop-bootstrap"
    env = {**os.environ, "CGO_ENABLED": "0", "GOPROXY": "off", "GOFLAGS": "-mod=mod"}
    env.setdefault("GOCACHE", str(provided.relay_cache_root() / "gocache"))
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=BENCH_DIR / "runtime_noop", env=env, check=True)
    return out.read_bytes()


def ric_image(client: docker.DockerClient) -> str:
    """A no-op awslambdaric image (awslambdaric installed from PyPI on the host; built with --network none)."""
    base = provided_images.ensure_base_image(client, "provided-python")
    tag = f"hearth-bench-ric:{base.rsplit(':', 1)[1]}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(tag)
        return tag
    with tempfile.TemporaryDirectory() as context:
        root = Path(context)
        subprocess.run(
            [
                sys.executable, "-m", "pip", "install", "-q", "--target", str(root / "ric"), "--only-binary=:all:",
                "--python-version", "3.11", "--platform", "manylinux2014_x86_64", "awslambdaric",
            ],
            check=True,
        )  # fmt: skip
        (root / "app.py").write_text(NOOP_RIC)
        (root / "Dockerfile").write_text(provided.AWSLAMBDARIC_DOCKERFILE.format(base=base))
        subprocess.run(["docker", "build", "-q", "--network", "none", "-t", tag, context], check=True)
    return tag


def rie_binary() -> Path:
    """AWS's Runtime Interface Emulator, from the aws-sam-cli wheel on PyPI (bench-only)."""
    target = CACHE / "rie" / "aws-lambda-rie"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "aws-sam-cli", "-d", download], check=True
        )
        wheel = next(Path(download).glob("aws_sam_cli-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            target.write_bytes(archive.read("samcli/local/rapid/aws-lambda-rie-x86_64"))
    target.chmod(0o755)
    return target


@contextlib.contextmanager
def rie_containers(image: str, count: int) -> Iterator[list[str]]:
    """`count` RIE containers of `image` (host network: dockerd here has no bridge), same user and read-only root."""
    rie = rie_binary()
    names, urls = [], []
    try:
        for _ in range(count):
            port, api_port = free_port(), free_port()
            name = f"hearth-bench-rie-{port}"
            start_rie(rie, image, name, port, api_port)
            names.append(name)
            url = f"http://127.0.0.1:{port}{RIE_INVOKE}"
            first_answer(url, time.monotonic() + 30)
            urls.append(url)
        yield urls
    finally:
        for name in names:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def first_answer(url: str, deadline: float) -> None:
    while True:
        try:
            if httpx.post(url, content=b"{}", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer")
        time.sleep(0.005)


def rie_cold(image: str, trials: int) -> dict[str, float]:
    """`docker run` of an RIE container to its first answer."""
    rie = rie_binary()
    latencies = []
    for _ in range(trials):
        port, api_port = free_port(), free_port()
        name = f"hearth-bench-rie-cold-{port}"
        started = time.perf_counter()
        start_rie(rie, image, name, port, api_port)
        first_answer(f"http://127.0.0.1:{port}{RIE_INVOKE}", time.monotonic() + 30)
        latencies.append((time.perf_counter() - started) * 1000)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    return summary_ms(latencies)


def container_cpu_us(ids: list[str]) -> dict[str, float]:
    """CPU time each container used so far (cgroup v1 cpuacct, as Hearth's docker backend runs them), in µs."""
    used = {}
    for container_id in ids:
        with contextlib.suppress(OSError):
            cpuacct = Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage")
            used[container_id] = int(cpuacct.read_text()) / 1000
    return used


def container_ids(client: docker.DockerClient, filters: dict[str, str]) -> Callable[[], list[str]]:
    return lambda: [container.id for container in client.containers.list(filters=filters)]


def wrk_with_cpu(url: str, seconds: float, containers: Callable[[], list[str]]) -> dict[str, Any]:
    """wrk at 1 connection, and the CPU the sandboxes (`containers()`: their ids) spent per request meanwhile
    (sandbox CPU is what the function's CPU quota caps; unlike latency it barely moves with the neighbours'
    load). A container that appears during the run (a replaced sandbox) counts from its start."""
    before = container_cpu_us(containers())
    result = wrk(url, 1, seconds)
    after = container_cpu_us(containers())
    requests = result["rps"] * max(1, round(seconds))
    spent = sum(used - before.get(container_id, 0.0) for container_id, used in after.items())
    result["sandbox_cpu_us_per_request"] = round(spent / requests, 1) if requests else None
    return result


def parallel_wrk(urls: list[str], seconds: float) -> dict[str, Any]:
    """One wrk with one connection per URL, at the same time; rps summed, latencies of the first."""
    results: list[dict[str, Any]] = [{} for _ in urls]

    def run(i: int) -> None:
        results[i] = wrk(urls[i], 1, seconds)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "connections": len(urls),
        "rps": round(sum(r["rps"] for r in results), 1),
        "errors": sum(r["errors"] for r in results),
        "p50_ms": results[0]["p50_ms"],
        "p99_ms": results[0]["p99_ms"],
    }


def zip_of(binary: bytes) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bootstrap", binary)
    return base64.b64encode(buffer.getvalue()).decode()


def bench_provided(seconds: float, trials: int) -> dict[str, Any]:
    if shutil.which("go") is None:
        return {"skipped": "Debian's golang-go is not installed"}
    client = docker.from_env()
    provided.ensure_relay()
    provided_images.ensure_base_image(client)
    bootstrap, image = go_noop(), ric_image(client)
    out: dict[str, Any] = {"warm": {}, "cold": {}}
    server = hearth_server({"HEARTH_KEEP_ALIVE_S": "600"})
    try:
        server.deploy("noop-py", NOOP_PY, max_instances=4)
        created = server.client.post(
            "/api/functions",
            json={"name": "noop-go", "language": "provided", "zip_base64": zip_of(bootstrap), "max_instances": 4},
        )
        assert created.status_code == 201, created.text
        created = server.client.post(
            "/api/functions", json={"name": "noop-ric", "language": "provided", "image": image, "max_instances": 4}
        )
        assert created.status_code == 201, created.text
        owner = {"label": f"hearth.owner={owner_id(server.data_dir)}"}
        for label, name in (("python", "noop-py"), ("provided_go", "noop-go"), ("image_awslambdaric", "noop-ric")):
            url = f"{server.base_url}/fn/{name}"
            wrk(url, 4, 2)  # four warm instances
            ids = container_ids(client, owner)  # this server's sandboxes: the other functions' idle meanwhile
            out["warm"][label] = {"c1": wrk_with_cpu(url, seconds, ids), "c4": wrk(url, 4, seconds)}
        for label, language_settings in (
            ("provided_go", {"language": "provided", "zip_base64": zip_of(bootstrap)}),
            ("image_awslambdaric", {"language": "provided", "image": image}),
        ):
            latencies = []
            for i in range(trials):
                name = f"cold-{label.replace('_', '-')}-{i}"
                created = server.client.post("/api/functions", json={"name": name, **language_settings})
                assert created.status_code == 201, created.text
                started = time.perf_counter()
                response = server.invoke(name)
                latencies.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text
                server.client.delete(f"/api/functions/{name}")
                time.sleep(0.6)  # a provided stem cell refills between deploys (image functions have none)
            out["cold"][label] = summary_ms(latencies)
    finally:
        server.stop()
    with rie_containers(image, 4) as urls:
        wrk(urls[0], 1, 1)
        c1 = wrk_with_cpu(urls[0], seconds, container_ids(client, {"name": "hearth-bench-rie-"}))
        out["warm"]["rie_awslambdaric"] = {"c1": c1, "c4": parallel_wrk(urls, seconds)}
    out["cold"]["rie_awslambdaric"] = rie_cold(image, trials)
    python = out["warm"]["python"]["c1"]["p50_ms"]
    rie = out["warm"]["rie_awslambdaric"]
    for label in ("provided_go", "image_awslambdaric"):
        row = out["warm"][label]
        row["p50_ratio_to_python"] = round(row["c1"]["p50_ms"] / python, 2)
        row["cpu_ratio_to_python"] = round(
            row["c1"]["sandbox_cpu_us_per_request"] / out["warm"]["python"]["c1"]["sandbox_cpu_us_per_request"], 2
        )
        row["rps_c1_ratio_to_rie"] = round(row["c1"]["rps"] / rie["c1"]["rps"], 2)
        row["rps_c4_ratio_to_rie"] = round(row["c4"]["rps"] / rie["c4"]["rps"], 2)
    return out


def table(result: dict[str, Any]) -> str:
    if "warm" not in result:
        return str(result)
    lines = [f"{'':22} {'p50 c1 ms':>10} {'rps c1':>8} {'rps c4':>8} {'cpu us/req':>11} {'cold p50 ms':>12}"]
    for label, row in result["warm"].items():
        cold = result["cold"].get(label, {}).get("p50_ms", float("nan"))
        cpu = row["c1"].get("sandbox_cpu_us_per_request") or float("nan")
        lines.append(
            f"{label:22} {row['c1']['p50_ms']:>10.3f} {row['c1']['rps']:>8.0f} {row['c4']['rps']:>8.0f} {cpu:>11.1f}"
            f" {cold:>12.1f}"
        )
    return "\n".join(lines)
