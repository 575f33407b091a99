"""Soak: a bounded mixed load of normal and hostile functions (`make soak`, SOAK_SECONDS=120).

Normal Python and JavaScript functions are called by a fixed number of client threads for the
whole run while hostile ones (memory bomb, CPU spin past the timeout, fork bomb, output flood,
agent suicide, never-ending async handler) are called in a loop beside them. Every 10 s window
prints the normal calls' rate, errors and p50/p95/p99; at the end: error counts by class and
status, latency of the first window vs the last (the ratio is the degradation), and the growth
of the Hearth server's RSS and of the live sandbox count (a leak shows as steady growth).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.harness import hearth_server, summary_ms

NORMAL_PY = "def handler(event, context):\n    return {'n': event.get('n', 0) + 1}\n"
NORMAL_JS = "exports.handler = async (event) => ({ n: (event.n || 0) + 1 });\n"
HOSTILE: dict[str, tuple[str, str, dict[str, Any]]] = {
    "memory-bomb": (
        "python",
        "def handler(e, c):\n    x = []\n    while True:\n        x.append(bytearray(2**24))\n",
        {"memory_mb": 64},
    ),
    "cpu-spin": ("python", "def handler(e, c):\n    while True:\n        pass\n", {"timeout_s": 1}),
    "fork-bomb": (
        "python",
        "import os\ndef handler(e, c):\n    while True:\n        os.fork()\n",
        {"timeout_s": 2, "memory_mb": 64},
    ),
    "output-flood": (
        "python",
        "import os\ndef handler(e, c):\n    for _ in range(500):\n        os.write(1, b'z' * 100000)\n    return 1\n",
        {},
    ),
    "agent-suicide": (
        "python",
        "import os, signal\ndef handler(e, c):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
        {},
    ),
    "async-forever": (
        "python",
        "import asyncio\nasync def handler(e, c):\n    await asyncio.sleep(10**6)\n",
        {"timeout_s": 1},
    ),
}
WINDOW_S = 10.0


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Soak:
    def __init__(self, base_url: str, seconds: float, clients: int) -> None:
        self.base_url, self.seconds, self.clients = base_url, seconds, clients
        self.lock = threading.Lock()
        self.windows: list[list[float]] = []
        self.window_errors: list[int] = []
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.start = time.monotonic()

    def window(self) -> int:
        index = int((time.monotonic() - self.start) // WINDOW_S)
        while len(self.windows) <= index:
            self.windows.append([])
            self.window_errors.append(0)
        return index

    def normal_client(self, route: str) -> None:
        with httpx.Client(timeout=30) as client:
            n = 0
            while time.monotonic() - self.start < self.seconds:
                t0 = time.perf_counter()
                try:
                    status = client.post(f"{self.base_url}/fn/{route}", json={"n": n}).status_code
                except httpx.HTTPError:
                    status = 0
                elapsed = (time.perf_counter() - t0) * 1000
                n += 1
                with self.lock:
                    index = self.window()
                    self.statuses[("normal", status)] += 1
                    if status == 200:
                        self.windows[index].append(elapsed)
                    else:
                        self.window_errors[index] += 1

    def hostile_client(self) -> None:
        with httpx.Client(timeout=60) as client:
            while time.monotonic() - self.start < self.seconds:
                for name in HOSTILE:
                    try:
                        status = client.post(f"{self.base_url}/fn/{name}", json={}).status_code
                    except httpx.HTTPError:
                        status = 0
                    with self.lock:
                        self.statuses[(name, status)] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "120")))
    parser.add_argument("--clients", type=int, default=8, help="threads calling the normal functions")
    args = parser.parse_args()
    server = hearth_server({"HEARTH_METRICS_SAMPLE_INTERVAL_S": "2"})
    try:
        server.deploy("normal-py", NORMAL_PY, max_instances=2, concurrency=4)
        server.deploy("normal-js", NORMAL_JS, language="javascript", max_instances=2, concurrency=4)
        for name, (language, code, settings) in HOSTILE.items():
            server.deploy(name, code, language=language, **settings)
        for route in ("normal-py", "normal-js"):
            httpx.post(f"{server.base_url}/fn/{route}", json={}, timeout=60)
        assert server.proc is not None
        pid = server.proc.pid
        rss_start = rss_bytes(pid)
        soak = Soak(server.base_url, args.seconds, args.clients)
        threads = [
            threading.Thread(target=soak.normal_client, args=(("normal-py", "normal-js")[k % 2],))
            for k in range(args.clients)
        ]
        threads.append(threading.Thread(target=soak.hostile_client))
        for thread in threads:
            thread.start()
        samples: list[tuple[float, int, int]] = []
        printed = 0
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            summary = server.client.get("/api/metrics/summary", params={"window": "1m"}).json()
            platform = summary["platform"]
            samples.append(
                (time.monotonic() - soak.start, rss_bytes(pid), platform["warm_sandboxes"] + platform["busy_sandboxes"])
            )
            with soak.lock:
                done = len(soak.windows) - 1
                while printed < done:
                    window = soak.windows[printed]
                    s = summary_ms(window) if window else {}
                    print(
                        f"t={printed * WINDOW_S:>5.0f}s  {len(window) / WINDOW_S:>7.1f} rps  "
                        f"errors {soak.window_errors[printed]:>4}  p50 {s.get('p50_ms', 0):>7.2f}  "
                        f"p95 {s.get('p95_ms', 0):>7.2f}  p99 {s.get('p99_ms', 0):>7.2f} ms  "
                        f"rss {samples[-1][1] / 2**20:>6.1f} MiB  sandboxes {samples[-1][2]}",
                        flush=True,
                    )
                    printed += 1
        rss_end = rss_bytes(pid)
        ready = httpx.get(f"{server.base_url}/readyz", timeout=10).status_code
    finally:
        server.stop()
    full = [w for w in soak.windows if w]
    first, last = summary_ms(full[0]), summary_ms(full[-1])
    print("\nstatuses by function class:")
    for (name, status), count in sorted(soak.statuses.items()):
        print(f"  {name:<14} {status:>4}  {count:>7}")
    normal_total = sum(c for (n, _), c in soak.statuses.items() if n == "normal")
    normal_errors = sum(c for (n, s), c in soak.statuses.items() if n == "normal" and s != 200)
    print(
        f"\nnormal calls: {normal_total}, errors {normal_errors} ({100 * normal_errors / max(normal_total, 1):.3f} %)"
    )
    print(
        f"normal p95 first window {first['p95_ms']:.2f} ms, last {last['p95_ms']:.2f} ms "
        f"(ratio {last['p95_ms'] / max(first['p95_ms'], 1e-9):.2f})"
    )
    print(
        f"server RSS {rss_start / 2**20:.1f} -> {rss_end / 2**20:.1f} MiB "
        f"(+{(rss_end - rss_start) / 2**20:.1f} MiB over {args.seconds:.0f} s); /readyz at the end: {ready}"
    )
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "soak.txt").write_text(f"{normal_total} {normal_errors} {first} {last} {rss_start} {rss_end}\n")


if __name__ == "__main__":
    main()
