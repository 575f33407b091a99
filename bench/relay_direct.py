"""The relay without Docker or the engine (`python -m bench.relay_direct`).

Speaks the agent protocol (docs/protocol.md) straight to one agent process over a Unix socket, as the
engine would, and times invoke -> result frames: the built-in Python agent with a no-op handler (the
baseline, same run), and the relay serving the Runtime API to the Go no-op bootstrap of bench/provided.py,
with GOMAXPROCS=1 (what Hearth sets for a 0.5-CPU sandbox) and with Go's default (the host's cores).
Besides latency it reports each process's CPU time per invocation (from /proc, utime + stime): unlike
latency on a shared 2-core host, that barely moves with the neighbours' load, and in a sandbox it is
what the CPU quota caps.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import free_port
from bench.provided import go_noop
from hearth.engine import protocol, provided

HEADER = struct.Struct(">I")
AGENT = Path(__file__).resolve().parents[1] / "src" / "hearth" / "runtimes" / "python" / "agent.py"
TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")


def send(sock: socket.socket, frame: dict[str, Any]) -> None:
    body = json.dumps(frame).encode()
    sock.sendall(HEADER.pack(len(body)) + body)


def receive(stream: Any) -> dict[str, Any]:
    (length,) = HEADER.unpack(stream.read(4))
    frame, _payload = protocol.decode_body(stream.read(length))  # a result's payload follows a newline
    return frame


def cpu_us(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_US


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return [int(child) for task in tasks for child in (task / "children").read_text().split()]


def run_agent(command: list[str], init: dict[str, Any], env: dict[str, str], invocations: int) -> dict[str, Any]:
    """Start `command` as the agent, load it with `init`, time `invocations` invokes."""
    with tempfile.TemporaryDirectory() as scratch:
        path = str(Path(scratch) / "agent.sock")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen(1)
        process = subprocess.Popen(command, env={**os.environ, **env, "HEARTH_AGENT_SOCKET": path})
        try:
            sock, _ = listener.accept()
            stream = sock.makefile("rb")
            receive(stream)  # hello
            send(sock, init)
            ready = receive(stream)
            assert ready["type"] == "ready", ready
            pids = [process.pid, *children(process.pid)]
            before = [cpu_us(pid) for pid in pids]
            latencies = []
            for i in range(invocations):
                started = time.perf_counter()
                send(sock, {"type": "invoke", "id": f"bench-{i}", "event": {}, "timeout_ms": 30000})
                result = receive(stream)
                latencies.append((time.perf_counter() - started) * 1e6)
                assert result["ok"], result
            cpu = [round((cpu_us(pid) - was) / invocations, 1) for pid, was in zip(pids, before, strict=True)]
            sock.close()
        finally:
            process.kill()
            process.wait()
    latencies.sort()
    return {
        "p50_us": round(latencies[len(latencies) // 2], 1),
        "p90_us": round(latencies[int(len(latencies) * 0.9)], 1),
        "cpu_us_per_invocation": cpu,  # the agent, then its children (the relay's bootstrap)
        "cpu_us_total": round(sum(cpu), 1),
    }


def bench_direct(invocations: int, rounds: int, other_relay: str | None = None) -> dict[str, Any]:
    """`other_relay`: another relay binary (e.g. built from an older commit) measured beside this one."""
    relay = str(provided.ensure_relay() / "relay")
    relays = {"relay": relay, **({"other_relay": other_relay} if other_relay else {})}
    bootstrap = Path(tempfile.mkdtemp(prefix="hearth-bench-")) / "bootstrap"
    bootstrap.write_bytes(go_noop())
    bootstrap.chmod(0o755)
    with tempfile.TemporaryDirectory() as code:
        (Path(code) / "app.py").write_text("def handler(event, context):\n    return 1\n")
        python_init = {"type": "init", "code_dir": code, "module": "app", "function": "handler"}
        rows: dict[str, list[dict[str, Any]]] = {"python": []}
        for _ in range(rounds):  # interleaved, so that the neighbours' load falls on each alike
            rows["python"].append(run_agent([sys.executable, str(AGENT)], python_init, {}, invocations))
            for name, binary in relays.items():
                for suffix, extra in (("go_gomaxprocs1", {"GOMAXPROCS": "1"}), ("go_default", {})):
                    address = f"127.0.0.1:{free_port()}"
                    init = {
                        "type": "init",
                        "command": [str(bootstrap)],
                        "working_dir": "/tmp",
                        "env": {"AWS_LAMBDA_RUNTIME_API": address, **extra},
                        "function_arn": "arn:aws:lambda:us-east-1:000000000000:function:bench",
                    }
                    run = run_agent([binary], init, {"HEARTH_RUNTIME_API": address}, invocations)
                    rows.setdefault(f"{name}_{suffix}", []).append(run)
    bootstrap.unlink()
    out: dict[str, Any] = {}
    for label, runs in rows.items():
        out[label] = {key: median([run[key] for run in runs]) for key in ("p50_us", "p90_us", "cpu_us_total")}
    for label in [label for label in out if label != "python"]:
        out[label]["p50_ratio_to_python"] = round(out[label]["p50_us"] / out["python"]["p50_us"], 2)
        out[label]["cpu_ratio_to_python"] = round(out[label]["cpu_us_total"] / out["python"]["cpu_us_total"], 2)
    return out


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--other-relay", help="another relay binary to measure beside this one")
    args = parser.parse_args()
    result = bench_direct(args.invocations, args.rounds, args.other_relay)
    print(json.dumps(result, indent=1))
    print(f"{'':28} {'p50 us':>8} {'p90 us':>8} {'cpu us/call':>12}")
    for label, row in result.items():
        print(f"{label:28} {row['p50_us']:>8.1f} {row['p90_us']:>8.1f} {row['cpu_us_total']:>12.1f}")


if __name__ == "__main__":
    main()
