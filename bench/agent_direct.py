"""The Python and Node agents without Docker or the engine (`python -m bench.agent_direct`).

Speaks the agent protocol (docs/protocol.md) to one agent process at a time over a Unix socket, as the
engine does, and times invoke -> result frames with a no-op handler and a function URL's event (what
/fn sends). Reports each agent's median latency and its CPU time per invocation, summed over its threads
from /proc/<pid>/task/*/schedstat (nanoseconds): unlike latency on a shared 2-core host, that barely
moves with the neighbours' load, and on a warm sandbox it is what competes with the host for the cores.
Rounds are interleaved so that the neighbours' load falls on each agent alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HEADER = struct.Struct(">I")
RUNTIMES = Path(__file__).resolve().parents[1] / "src" / "hearth" / "runtimes"
# The Python image is Debian's python3: use the same interpreter when the host has it.
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
HANDLERS = {
    "noop": ("def handler(event, context):\n    return 1\n", "exports.handler = async () => 1;\n"),
    "print": (
        "def handler(event, context):\n    print('hello', event['rawPath'])\n    return 1\n",
        "exports.handler = async (event) => { console.log('hello', event.rawPath); return 1; };\n",
    ),
}


# The floor: what one call costs an "agent" that only reads the request and writes a constant answer.
FLOOR_PYTHON = """import os, socket, struct
sock = socket.socket(socket.AF_UNIX)
sock.connect(os.environ["HEARTH_AGENT_SOCKET"])
fd = sock.detach()
def frame(body):
    return struct.pack(">I", len(body)) + body
os.write(fd, frame(b'{"type":"hello"}'))
os.read(fd, 1 << 20)
os.write(fd, frame(b'{"type":"ready"}'))
answer = frame(b'{"type":"result","id":"x","ok":true,"result_bytes":1}\\n1')
while os.read(fd, 1 << 20):
    os.write(fd, answer)
"""
FLOOR_NODE = """const net = require('net');
const socket = net.connect(process.env.HEARTH_AGENT_SOCKET);
const frame = (text) => {
  const out = Buffer.alloc(4 + Buffer.byteLength(text));
  out.writeUInt32BE(out.length - 4);
  out.write(text, 4);
  return out;
};
const answer = frame('{"type":"result","id":"x","ok":true,"result_bytes":1}\\n1');
let loaded = false;
socket.on('connect', () => socket.write(frame('{"type":"hello"}')));
socket.on('data', () => {
  socket.write(loaded ? answer : frame('{"type":"ready"}'));
  loaded = true;
});
socket.on('close', () => process.exit(0));
"""


def http_event(n: int) -> dict[str, Any]:
    """A function URL's event (payload format 2.0) for a GET as wrk sends it."""
    request_id = f"req_{n:020d}"
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": {
            "host": "127.0.0.1:8080",
            "x-forwarded-for": "127.0.0.1",
            "x-forwarded-port": "8080",
            "x-forwarded-proto": "http",
        },
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "noop",
            "domainName": "127.0.0.1:8080",
            "domainPrefix": "127",
            "http": {
                "method": "GET",
                "path": "/",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "",
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": "05/Dec/2026:05:00:00 +0000",
            "timeEpoch": 1796446800000,
        },
        "isBase64Encoded": False,
    }


def init_frame(code_dir: str, module: str) -> dict[str, Any]:
    """An init frame as hearth.engine.lambda_env makes it, with Lambda's environment variables."""
    env = {
        "AWS_LAMBDA_FUNCTION_NAME": "noop",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/noop",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/12/05/[$LATEST]0123456789abcdef",
        "AWS_REGION": "us-east-1",
        "LAMBDA_TASK_ROOT": code_dir,
        "TZ": ":UTC",
    }
    return {
        "type": "init",
        "code_dir": code_dir,
        "module": module,
        "function": "handler",
        "env": env,
        "function_name": "noop",
        "function_version": 1,
        "memory_limit_in_mb": 128,
        "invoked_function_arn": "arn:aws:lambda:us-east-1:000000000000:function:noop",
        "concurrency": 1,
        "max_log_bytes": 65536,
        "max_result_bytes": 6 * 1024 * 1024,
        "paths": [],
    }


def frame_bytes(frame: dict[str, Any]) -> bytes:
    body = json.dumps(frame, separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


class Reader:
    """Frames from a socket, one recv for a whole small frame."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def read(self) -> dict[str, Any]:
        while len(self.buffer) < 4 or len(self.buffer) < 4 + HEADER.unpack_from(self.buffer)[0]:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("agent closed the stream")
            self.buffer += chunk
        (length,) = HEADER.unpack_from(self.buffer)
        body, self.buffer = self.buffer[4 : 4 + length], self.buffer[4 + length :]
        frame: dict[str, Any] = json.loads(body.partition(b"\n")[0])
        return frame


def cpu_ns(pid: int) -> int:
    """CPU time of all of `pid`'s threads so far (those that ended are in the process' own counters)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def run_agent(command: list[str], init: dict[str, Any], invocations: int, warmup: int) -> dict[str, float]:
    """Start `command` as the agent, load it with `init`, time `invocations` invokes after `warmup` ones."""
    frames = [
        frame_bytes({"type": "invoke", "id": f"inv_{i:026d}", "event": http_event(i), "timeout_ms": 30000})
        for i in range(warmup + invocations)
    ]
    with tempfile.TemporaryDirectory() as scratch:
        path = str(Path(scratch) / "agent.sock")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen(1)
        process = subprocess.Popen(command, env={**os.environ, "HEARTH_AGENT_SOCKET": path})
        try:
            sock, _ = listener.accept()
            reader = Reader(sock)
            reader.read()  # hello
            sock.sendall(frame_bytes(init))
            ready = reader.read()
            assert ready["type"] == "ready", ready
            for frame in frames[:warmup]:
                sock.sendall(frame)
                reader.read()
            before = cpu_ns(process.pid)
            latencies = []
            for frame in frames[warmup:]:
                started = time.perf_counter_ns()
                sock.sendall(frame)
                result = reader.read()
                latencies.append(time.perf_counter_ns() - started)
                assert result["ok"], result
            cpu = (cpu_ns(process.pid) - before) / invocations / 1000
            sock.close()  # the agent exits at the stream's end
            process.wait(5)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    latencies.sort()
    return {
        "p50_us": latencies[len(latencies) // 2] / 1000,
        "p90_us": latencies[int(len(latencies) * 0.9)] / 1000,
        "cpu_us": cpu,
    }


def commands(runtimes: Path, suffix: str = "") -> dict[str, list[str]]:
    out = {"python" + suffix: [PYTHON, "-I", str(runtimes / "python" / "agent.py")]}
    node = shutil.which("node")
    if node:
        out["javascript" + suffix] = [node, str(runtimes / "javascript" / "agent.js")]
    return out


def checkout(revision: str, into: Path) -> Path:
    """The agents as they were at git `revision`, written under `into`."""
    for name in ("python/agent.py", "javascript/agent.js"):
        source = subprocess.run(
            ["git", "show", f"{revision}:src/hearth/runtimes/{name}"],
            cwd=RUNTIMES,
            check=True,
            capture_output=True,
        ).stdout
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        (into / name).write_bytes(source)
    return into


def floors(into: Path) -> Path:
    """The floor 'agents' (FLOOR_PYTHON, FLOOR_NODE) written under `into`."""
    for name, source in (("python/agent.py", FLOOR_PYTHON), ("javascript/agent.js", FLOOR_NODE)):
        (into / "floor" / name).parent.mkdir(parents=True, exist_ok=True)
        (into / "floor" / name).write_text(source)
    return into / "floor"


def bench(
    handler: str, invocations: int, warmup: int, rounds: int, only: list[str], against: str | None, floor: bool
) -> dict[str, dict[str, float]]:
    """`against`: a git revision whose agents run beside the work tree's (as `python@<revision>`, ...);
    `floor`: also the least an agent can do per call (`python@floor`, ...)."""
    python_code, node_code = HANDLERS[handler]
    rows: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as code, tempfile.TemporaryDirectory() as old:
        (Path(code) / "app.py").write_text(python_code)
        (Path(code) / "app.js").write_text(node_code)
        agents = commands(RUNTIMES)
        if against:
            agents |= commands(checkout(against, Path(old)), f"@{against}")
        if floor:
            agents |= commands(floors(Path(old)), "@floor")
        agents = {name: command for name, command in agents.items() if name.split("@")[0] in only}
        for _ in range(rounds):
            for name, command in agents.items():
                rows.setdefault(name, []).append(run_agent(command, init_frame(code, "app"), invocations, warmup))
    return {
        name: {key: round(statistics.median(run[key] for run in runs), 1) for key in ("p50_us", "p90_us", "cpu_us")}
        | {"cpu_us_runs": [round(run["cpu_us"], 1) for run in runs]}  # type: ignore[dict-item]
        for name, runs in rows.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--handler", choices=sorted(HANDLERS), default="noop")
    parser.add_argument("--invocations", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="python,javascript")
    parser.add_argument("--against", help="a git revision whose agents to measure beside the work tree's")
    parser.add_argument("--floor", action="store_true", help="also the least an agent can do per call")
    args = parser.parse_args()
    only = args.only.split(",")
    result = bench(args.handler, args.invocations, args.warmup, args.rounds, only, args.against, args.floor)
    print(f"handler={args.handler} invocations={args.invocations} rounds={args.rounds} python={PYTHON}")
    print(f"{'':20} {'p50 us':>8} {'p90 us':>8} {'cpu us/call':>12}  cpu per round")
    for name, row in result.items():
        print(f"{name:20} {row['p50_us']:>8.1f} {row['p90_us']:>8.1f} {row['cpu_us']:>12.1f}  {row['cpu_us_runs']}")


if __name__ == "__main__":
    main()
