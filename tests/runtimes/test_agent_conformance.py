"""Every agent speaks the same protocol (docs/protocol.md): one suite, run against each, without Docker.

The Python and Node agents run as plain processes on this host, connected over a socket pair
(`HEARTH_AGENT_FD`, as in Firecracker guests); the custom runtimes' relay (Go) dials a Unix socket, as
in containers, and runs a Python `bootstrap` that speaks Lambda's Runtime API. Each is driven by the
host's own `AgentSandbox` (hearth.engine.agent_sandbox): the frames, the payload carrying encoded
results and the replies are the real ones. Only where the code is placed (a temporary directory
instead of /hearth/code) is this test's own. What a custom runtime leaves to its bootstrap (its
handler, serialising, logging its errors) is not asked of the relay.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hearth.engine import provided
from hearth.engine.agent_sandbox import AgentSandbox, SandboxHost
from hearth.engine.channel import AgentChannel
from hearth.engine.protocol import encode_frame, invoke_frame
from hearth.engine.sandbox import (
    Backend,
    Call,
    FunctionInitError,
    FunctionSpec,
    Limits,
    Purpose,
    Runtime,
    Sandbox,
    SandboxCrashed,
)

RUNTIMES_DIR = Path(__file__).resolve().parents[2] / "src" / "hearth" / "runtimes"

# One function, written for each runtime: what it does is chosen by the event's `kind`.
PYTHON_CODE = """
import sys

def handler(event, context):
    kind = event.get("kind")
    if kind == "echo":
        print("echo", event["n"])
        return {"n": event["n"], "text": "héllo ☃", "request_id": context.aws_request_id}
    if kind == "fail":
        raise ValueError("asked to fail")
    if kind == "none":
        return None
    if kind == "big":
        return "x" * 5000
    if kind == "unserializable":
        return {"f": float("nan")}
    if kind == "flood":
        sys.stdout.write("y" * 10000)
        return "flooded"
    if kind == "list":
        return [e["n"] * 10 for e in event["events"]] if "events" in event else None
    return event
"""
JAVASCRIPT_CODE = """
exports.handler = async (event, context) => {
  if (Array.isArray(event)) return event.map((e) => e.n * 10);
  switch (event.kind) {
    case 'echo':
      console.log('echo', event.n);
      return { n: event.n, text: 'héllo ☃', request_id: context.awsRequestId };
    case 'fail': throw new TypeError('asked to fail');
    case 'none': return undefined;
    case 'big': return 'x'.repeat(5000);
    case 'unserializable': return { n: 10n };
    case 'flood': process.stdout.write('y'.repeat(10000)); return 'flooded';
    default: return event;
  }
};
"""
# The custom runtimes' relay (Go) starts a `bootstrap` that speaks Lambda's Runtime API: this one, in Python.
BOOTSTRAP_CODE = """
import json, os, sys, urllib.error, urllib.request

API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"


def post(path, body):
    try:
        urllib.request.urlopen(urllib.request.Request(API + path, data=body, method="POST")).read()
    except urllib.error.HTTPError:  # e.g. 413: the relay has answered the call with ResultTooLarge
        pass


while True:
    with urllib.request.urlopen(API + "next") as answer:
        request_id = answer.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(answer.read())
    kind = event.get("kind") if isinstance(event, dict) else "list"
    if kind == "fail":
        post(request_id + "/error", json.dumps({"errorType": "ValueError", "errorMessage": "asked to fail"}).encode())
        continue
    if kind == "exit":  # the runtime dies mid-call
        os._exit(3)
    if kind == "echo":
        print("echo", event["n"], flush=True)
        result = {"n": event["n"], "text": "h\u00e9llo \u2603", "request_id": request_id}
    elif kind == "none":
        result = None
    elif kind == "big":
        result = "x" * 5000
    elif kind == "flood":
        sys.stdout.write("y" * 10000)
        sys.stdout.flush()
        result = "flooded"
    elif kind == "list":
        result = [e["n"] * 10 for e in event]
    else:
        result = event
    post(request_id + "/response", json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode())
"""
PYTHON_LIST_HANDLER = "def handler(event, context):\n    return [e['n'] * 10 for e in event]\n"
AGENTS: dict[str, tuple[list[str], str, str]] = {
    "python": ([sys.executable, "-I", str(RUNTIMES_DIR / "python" / "agent.py")], "main.py", PYTHON_CODE),
    "javascript": (["node", str(RUNTIMES_DIR / "javascript" / "agent.js")], "main.js", JAVASCRIPT_CODE),
    "provided": (["relay"], "bootstrap", BOOTSTRAP_CODE),
}


class ProcessHost(SandboxHost):
    """An agent running as a plain process here; its code goes to a temporary directory."""

    def __init__(self, process: subprocess.Popen[bytes], directory: Path, runtime_api: str = "") -> None:
        self.process = process
        self.directory = directory
        self.runtime_api = runtime_api  # the relay's Runtime API address

    async def apply_limits(self, current: Limits, wanted: Limits) -> None:
        return None

    async def place(self, spec: FunctionSpec, frame: dict[str, Any]) -> None:
        code = self.directory / "code"
        shutil.copytree(spec.code_dir, code)
        frame["code_dir"] = str(code)
        if spec.language == provided.LANGUAGE:  # what the relay starts: the bootstrap, here run by this Python
            frame.update(provided.init_fields(spec, frame, None))
            frame["command"] = [sys.executable, str(code / "bootstrap")]
            frame["working_dir"] = str(code)
            frame["env"]["AWS_LAMBDA_RUNTIME_API"] = self.runtime_api

    async def explain_crash(self, reason: str, limits: Limits) -> SandboxCrashed:
        return SandboxCrashed(f"{reason} (exit code {self.process.poll()})")

    async def destroy(self) -> None:
        self.process.kill()
        await asyncio.to_thread(self.process.wait)


class ProcessBackend(Backend):
    name = "process"

    def __init__(self, directory: Path, max_log_bytes: int = 4096, max_result_bytes: int = 4096) -> None:
        self.directory = directory
        self.max_log_bytes = max_log_bytes
        self.max_result_bytes = max_result_bytes
        self.start_timeout_s = 20.0

    def availability(self) -> tuple[bool, str]:
        return True, "ok"

    async def create(self, runtime: Runtime, limits: Limits, purpose: Purpose) -> Sandbox:
        if runtime == provided.LANGUAGE:
            return await self._relay(limits)
        command = AGENTS[runtime][0]
        host_end, agent_end = socket.socketpair()
        process = subprocess.Popen(
            command,
            pass_fds=[agent_end.fileno()],
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.directory), "HEARTH_AGENT_FD": str(agent_end.fileno())},
            cwd=self.directory,
        )
        agent_end.close()
        reader, writer = await asyncio.open_unix_connection(sock=host_end)
        channel = AgentChannel(reader, writer)
        await channel.handshake(self.start_timeout_s)
        return AgentSandbox(self, f"p{process.pid}", runtime, channel, ProcessHost(process, self.directory), limits)

    async def _relay(self, limits: Limits) -> Sandbox:
        """The relay dials a Unix socket (HEARTH_AGENT_SOCKET) and serves the Runtime API on a free port."""
        connected: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.get_running_loop().create_future()
        )
        path = self.directory / "agent.sock"
        server = await asyncio.start_unix_server(lambda r, w: connected.set_result((r, w)), path=str(path))
        with socket.socket() as probe:  # a free port for the Runtime API
            probe.bind(("127.0.0.1", 0))
            runtime_api = f"127.0.0.1:{probe.getsockname()[1]}"
        relay = provided.ensure_relay() / "relay"
        env = {"PATH": "/usr/bin:/bin", "HEARTH_AGENT_SOCKET": str(path), "HEARTH_RUNTIME_API": runtime_api}
        process = subprocess.Popen([str(relay)], env=env, cwd=self.directory)
        try:
            reader, writer = await asyncio.wait_for(connected, self.start_timeout_s)
        finally:
            server.close()
        channel = AgentChannel(reader, writer)
        await channel.handshake(self.start_timeout_s)
        host = ProcessHost(process, self.directory, runtime_api)
        return AgentSandbox(self, f"p{process.pid}", provided.LANGUAGE, channel, host, limits)


def spec_for(runtime: str, tmp_path: Path, code: str | None = None, handler: str = "main.handler") -> FunctionSpec:
    code_dir = tmp_path / "src"
    code_dir.mkdir()
    if runtime == provided.LANGUAGE:
        handler = "function.handler"  # the bootstrap's business; unused here
    (code_dir / AGENTS[runtime][1]).write_text(code if code is not None else AGENTS[runtime][2])
    return FunctionSpec(name="conformance", version=1, language=runtime, handler=handler, code_dir=code_dir)  # type: ignore[arg-type]


Scenario = Callable[[AgentSandbox], Awaitable[None]]


def needs(runtime: str) -> None:
    if runtime == "javascript" and shutil.which("node") is None:
        pytest.skip("node is not installed on this host")
    if runtime == provided.LANGUAGE and shutil.which("go") is None and not (provided.relay_cache_root()).exists():
        pytest.skip("no Go toolchain on this host to build the relay")


def run(runtime: str, tmp_path: Path, scenario: Scenario, code: str | None = None, **backend: Any) -> None:
    needs(runtime)

    async def main() -> None:
        backend_ = ProcessBackend(tmp_path, **backend)
        sandbox = await backend_.create(runtime, Limits(128, 1.0, 64, 64), Purpose.probe())
        assert isinstance(sandbox, AgentSandbox)
        try:
            await sandbox.load(spec_for(runtime, tmp_path, code))
            await scenario(sandbox)
        finally:
            await sandbox.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


@pytest.fixture(params=sorted(AGENTS))
def runtime(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_hello_names_the_runtime(runtime: str, tmp_path: Path) -> None:
    async def scenario(sandbox: AgentSandbox) -> None:
        assert sandbox.channel.hello["runtime"] == runtime
        assert isinstance(sandbox.channel.hello["pid"], int)

    run(runtime, tmp_path, scenario)


def test_result_arrives_as_the_agents_encoding(runtime: str, tmp_path: Path) -> None:
    """The same value comes back as the same bytes from every agent: compact UTF-8 JSON, never re-encoded."""

    async def scenario(sandbox: AgentSandbox) -> None:
        (reply,) = await sandbox.invoke([Call("inv-1", {"kind": "echo", "n": 7})], 5)
        assert reply.ok and reply.id == "inv-1"
        assert reply.result == '{"n":7,"text":"héllo ☃","request_id":"inv-1"}'.encode()
        assert reply.stdout.strip().endswith("echo 7")
        assert reply.duration_ms > 0
        if runtime != provided.LANGUAGE:  # optional in the protocol; the relay cannot measure its runtime
            assert reply.cpu_ms is not None and reply.max_rss_kb

    run(runtime, tmp_path, scenario)


def test_none_is_null(runtime: str, tmp_path: Path) -> None:
    async def scenario(sandbox: AgentSandbox) -> None:
        (reply,) = await sandbox.invoke([Call("inv-2", {"kind": "none"})], 5)
        assert reply.ok and reply.result == b"null"

    run(runtime, tmp_path, scenario)


def test_handler_error(runtime: str, tmp_path: Path) -> None:
    async def scenario(sandbox: AgentSandbox) -> None:
        (reply,) = await sandbox.invoke([Call("inv-3", {"kind": "fail"})], 5)
        assert not reply.ok and reply.result is None
        assert reply.error is not None
        assert reply.error["type"] == ("TypeError" if runtime == "javascript" else "ValueError")
        assert reply.error["message"] == "asked to fail"
        if runtime != provided.LANGUAGE:  # a custom runtime logs its errors itself
            assert "asked to fail" in reply.stdout  # the runtime's error record, as Lambda logs it

    run(runtime, tmp_path, scenario)


def test_a_runtime_that_exits_mid_call_leaves_its_sandbox_spent_at_once(tmp_path: Path) -> None:
    """The relay answers Runtime.ExitError, then exits: the sandbox must not take another call, even
    before the host has seen the agent stream's end (a VM's port stays open until QEMU is gone)."""

    async def scenario(sandbox: AgentSandbox) -> None:
        (reply,) = await sandbox.invoke([Call("inv-x", {"kind": "exit"})], 5)
        assert not reply.ok and reply.error is not None and reply.error["type"] == "Runtime.ExitError"
        assert not sandbox.healthy  # checked as the answer came in, not after the stream closed

    run(provided.LANGUAGE, tmp_path, scenario)


def test_result_limits(runtime: str, tmp_path: Path) -> None:
    async def scenario(sandbox: AgentSandbox) -> None:
        big, bad = await asyncio.gather(
            sandbox.invoke([Call("inv-4", {"kind": "big"})], 5), sandbox.invoke([Call("inv-5", {"kind": "x"})], 5)
        )
        assert not big[0].ok and big[0].error is not None and big[0].error["type"] == "ResultTooLarge"
        assert bad[0].ok
        if runtime == provided.LANGUAGE:  # a custom runtime posts bytes: serialising them is its business
            return
        (reply,) = await sandbox.invoke([Call("inv-6", {"kind": "unserializable"})], 5)
        assert not reply.ok and reply.error is not None and reply.error["type"] == "ResultNotSerializable"

    run(runtime, tmp_path, scenario)


def test_logs_are_capped_and_marked(runtime: str, tmp_path: Path) -> None:
    async def scenario(sandbox: AgentSandbox) -> None:
        (reply,) = await sandbox.invoke([Call("inv-7", {"kind": "flood"})], 5)
        assert reply.ok and reply.result == b'"flooded"'
        assert reply.logs_truncated
        assert len(reply.stdout.encode()) <= 4096 + 200  # the cap, and the runtime's truncation notice at most

    run(runtime, tmp_path, scenario)


def test_batch_items_run_in_order_each_with_its_own_reply(runtime: str, tmp_path: Path) -> None:
    """One batch frame; its results follow the reply as one payload, cut by each item's size."""

    async def scenario(sandbox: AgentSandbox) -> None:
        calls = [
            Call("b-1", {"kind": "echo", "n": 1}),
            Call("b-2", {"kind": "fail"}),
            Call("b-3", {"kind": "big"}),
            Call("b-4", {"kind": "echo", "n": 4}),
            Call("b-5", {"kind": "none"}),
        ]
        replies = {reply.id: reply for reply in await sandbox.invoke(calls, 5)}
        assert list(replies) == ["b-1", "b-2", "b-3", "b-4", "b-5"]
        assert replies["b-1"].result == '{"n":1,"text":"héllo ☃","request_id":"b-1"}'.encode()
        assert not replies["b-2"].ok and not replies["b-3"].ok
        assert replies["b-4"].result == '{"n":4,"text":"héllo ☃","request_id":"b-4"}'.encode()
        assert replies["b-5"].result == b"null"
        assert "echo 1" in replies["b-1"].stdout and "echo 1" not in replies["b-4"].stdout

    run(runtime, tmp_path, scenario)


def test_a_list_handler_is_an_ordinary_call(runtime: str, tmp_path: Path) -> None:
    """Batch handlers need nothing of the agent: the host sends the events as one list (engine.batch_handler)."""

    async def scenario(sandbox: AgentSandbox) -> None:
        (reply,) = await sandbox.invoke([Call("l-1", [{"n": 1}, {"n": 2}])], 5)
        assert reply.ok and reply.result == b"[10,20]"

    run(runtime, tmp_path, scenario, code=PYTHON_LIST_HANDLER if runtime == "python" else None)


def test_concurrent_calls_are_matched_by_id(runtime: str, tmp_path: Path) -> None:
    async def scenario(sandbox: AgentSandbox) -> None:
        calls = [Call(f"c-{n}", {"kind": "echo", "n": n}) for n in range(8)]
        answers = await asyncio.gather(*(sandbox.invoke([call], 5) for call in calls))
        for n, (reply,) in enumerate(answers):
            assert reply.id == f"c-{n}" and reply.result is not None and f'"n":{n},'.encode() in reply.result

    run(runtime, tmp_path, scenario)


def test_missing_handler_is_an_init_error(runtime: str, tmp_path: Path) -> None:
    needs(runtime)
    if runtime == provided.LANGUAGE:
        pytest.skip("a custom runtime's handler is its bootstrap's business, not the relay's")

    async def main() -> None:
        backend = ProcessBackend(tmp_path)
        sandbox = await backend.create(runtime, Limits(128, 1.0, 64, 64), Purpose.probe())
        try:
            with pytest.raises(FunctionInitError) as failed:
                await sandbox.load(spec_for(runtime, tmp_path, handler="main.nothing"))
            assert failed.value.error["type"] == "Runtime.HandlerNotFound"
        finally:
            await sandbox.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_warm_before_init(runtime: str, tmp_path: Path) -> None:
    needs(runtime)

    async def main() -> None:
        backend = ProcessBackend(tmp_path)
        sandbox = await backend.create(runtime, Limits(128, 1.0, 64, 64), Purpose.probe())
        assert isinstance(sandbox, AgentSandbox)
        try:
            await sandbox.warm_up(30)
            await sandbox.load(spec_for(runtime, tmp_path))
            (reply,) = await sandbox.invoke([Call("w-1", {"kind": "echo", "n": 3})], 5)
            assert reply.ok and reply.result is not None and b'"n":3' in reply.result
        finally:
            await sandbox.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_frame_is_json_then_an_optional_payload(runtime: str, tmp_path: Path) -> None:
    """On the wire: length, the JSON object, a newline, the result's bytes (`result_bytes` of them)."""

    async def raw_scenario(sandbox: AgentSandbox) -> None:
        channel = sandbox.channel  # the next frame's body comes here, as split from the stream, unparsed
        delivered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        channel._deliver = delivered.set_result  # type: ignore[method-assign]
        channel._writer.write(encode_frame(invoke_frame(Call("raw-1", {"kind": "echo", "n": 5}), 5000)))
        body = await delivered
        head, separator, payload = body.partition(b"\n")
        assert separator == b"\n"
        assert payload == '{"n":5,"text":"héllo ☃","request_id":"raw-1"}'.encode()
        frame = json.loads(head)
        assert frame["type"] == "result" and frame["ok"] is True and "result" not in frame
        assert frame["result_bytes"] == len(payload)

    run(runtime, tmp_path, raw_scenario)
