"""Hearth's in-sandbox agent for Python functions (stdlib only; protocol in docs/protocol.md).

Connects to the host, loads the function once, then serves invoke and batch frames: sync handlers
in a thread pool sized by the function's concurrency, async handlers on this loop. Each
invocation's stdout/stderr is captured on its own, also when several run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib.util
import inspect
import io
import json
import os
import platform
import struct
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME = 128 * 1024 * 1024
AGENT_FILE = os.path.abspath(__file__)


class Capture:
    """One invocation's captured output: two capped buffers."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.sizes = {"stdout": 0, "stderr": 0}
        self.truncated = False
        self.lock = threading.Lock()

    def write(self, stream: str, text: str) -> None:
        with self.lock:
            room = self.limit - self.sizes[stream]
            if len(text) > room:
                text = text[: max(room, 0)]
                self.truncated = True
            if text:
                self.parts[stream].append(text)
                self.sizes[stream] += len(text)

    def text(self, stream: str) -> str:
        return "".join(self.parts[stream])


CURRENT: contextvars.ContextVar[Capture | None] = contextvars.ContextVar("hearth_capture", default=None)


class CapturingStream(io.TextIOBase):
    """Replaces sys.stdout/sys.stderr: writes go to the current invocation's capture."""

    def __init__(self, name: str, fallback: Any) -> None:
        self.name = name
        self.fallback = fallback

    def write(self, text: str) -> int:  # type: ignore[override]
        capture = CURRENT.get()
        if capture is None:
            return self.fallback.write(text)
        capture.write(self.name, str(text))
        return len(text)

    def flush(self) -> None:
        if CURRENT.get() is None:
            self.fallback.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.fallback.fileno()


class Context:
    """The Lambda-style context object handed to the handler."""

    def __init__(self, init: dict[str, Any], invocation_id: str, timeout_ms: int) -> None:
        self.function_name = init.get("function_name", "")
        self.function_version = str(init.get("function_version", ""))
        self.memory_limit_in_mb = init.get("memory_limit_in_mb", 0)
        self.invocation_id = self.aws_request_id = invocation_id
        self._deadline = time.monotonic() + timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def describe(exc: BaseException) -> dict[str, Any]:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) != AGENT_FILE]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(type(exc), exc)
    return {"type": type(exc).__name__, "message": str(exc), "traceback": "".join(lines)}


class Agent:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.init: dict[str, Any] = {}
        self.handler: Any = None
        self.is_async = False
        self.pool: ThreadPoolExecutor | None = None
        self.inline = False
        self.tasks: set[asyncio.Task[None]] = set()

    async def read(self) -> dict[str, Any]:
        (length,) = HEADER.unpack(await self.reader.readexactly(HEADER.size))
        if length > MAX_FRAME:
            raise ValueError(f"frame of {length} bytes")
        frame = json.loads(await self.reader.readexactly(length))
        if not isinstance(frame, dict):
            raise ValueError("frame is not an object")
        return frame

    async def send(self, frame: dict[str, Any]) -> None:
        body = json.dumps(frame, separators=(",", ":"), allow_nan=False).encode()
        self.writer.write(HEADER.pack(len(body)) + body)
        await self.writer.drain()

    def load(self, init: dict[str, Any]) -> None:
        self.init = init
        os.environ.update({str(k): str(v) for k, v in (init.get("env") or {}).items()})
        os.environ["AWS_LAMBDA_FUNCTION_NAME"] = str(init.get("function_name", ""))
        os.environ["AWS_LAMBDA_FUNCTION_VERSION"] = str(init.get("function_version", ""))
        os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = str(init.get("memory_limit_in_mb", ""))
        code_dir = init["code_dir"]
        module_path = str(init["module"])
        if module_path.startswith("/") or ".." in module_path.split("/"):
            raise ImportError(f"invalid module path {module_path!r}")
        sys.path.insert(0, code_dir)
        dotted = module_path.replace("/", ".")
        spec = importlib.util.spec_from_file_location(dotted, os.path.join(code_dir, module_path + ".py"))
        if spec is None or spec.loader is None:
            raise ModuleNotFoundError(f"no module {module_path!r} in the function's code")
        module = importlib.util.module_from_spec(spec)
        sys.modules[dotted] = module
        try:
            spec.loader.exec_module(module)
        except FileNotFoundError:
            raise ModuleNotFoundError(f"no module {module_path!r} in the function's code") from None
        handler = getattr(module, init["function"], None)
        if handler is None:
            raise AttributeError(f"module {module_path!r} has no handler {init['function']!r}")
        if not callable(handler):
            raise TypeError(f"handler {init['function']!r} is not callable")
        self.handler = handler
        self.is_async = inspect.iscoroutinefunction(handler)
        concurrency = max(1, int(init.get("concurrency", 1)))
        self.inline = concurrency == 1 and not self.is_async
        if not self.is_async and not self.inline:
            self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="handler")

    async def call(self, event: Any, invocation_id: str, timeout_ms: int) -> tuple[bool, Any]:
        context = Context(self.init, invocation_id, timeout_ms)
        if self.is_async:
            return True, await self.handler(event, context)
        if self.inline:
            return True, self.handler(event, context)
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        return True, await loop.run_in_executor(self.pool, ctx.run, self.handler, event, context)

    async def run_one(self, item: dict[str, Any], timeout_ms: int) -> dict[str, Any]:
        """One invocation with its own capture; never raises."""
        capture = Capture(int(self.init.get("max_log_bytes", 65536)))
        token = CURRENT.set(capture)
        started = time.perf_counter()
        invocation_id = str(item.get("id", ""))
        try:
            _, result = await self.call(item.get("event"), invocation_id, timeout_ms)
            reply: dict[str, Any] = {"id": invocation_id, "ok": True, "result": result}
        except BaseException as exc:  # SystemExit and friends must not end the agent
            if isinstance(exc, asyncio.CancelledError):
                raise
            reply = {"id": invocation_id, "ok": False, "error": describe(exc)}
        finally:
            CURRENT.reset(token)
        reply["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        reply["stdout"] = capture.text("stdout")
        reply["stderr"] = capture.text("stderr")
        reply["logs_truncated"] = capture.truncated
        return self.checked(reply)

    def checked(self, reply: dict[str, Any]) -> dict[str, Any]:
        """Make sure the result encodes as JSON within the size limit."""
        if not reply["ok"]:
            return reply
        try:
            encoded = json.dumps(reply["result"], separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            reply.pop("result")
            reply.update(ok=False, error={"type": "ResultNotSerializable", "message": str(exc), "traceback": ""})
            return reply
        limit = int(self.init.get("max_result_bytes", 6 * 1024 * 1024))
        if len(encoded) > limit:
            reply.pop("result")
            message = f"result of {len(encoded)} bytes is over the limit of {limit} bytes"
            reply.update(ok=False, error={"type": "ResultTooLarge", "message": message, "traceback": ""})
        return reply

    async def run_batch(self, frame: dict[str, Any]) -> dict[str, Any]:
        items = frame.get("items") or []
        timeout_ms = int(frame.get("timeout_ms", 30000))
        if frame.get("batch_handler"):
            one = await self.run_one({"id": frame.get("id"), "event": [i.get("event") for i in items]}, timeout_ms)
            results = one.get("result") if one.get("ok") else None
            if isinstance(results, list) and len(results) == len(items):
                replies = [{"id": i.get("id"), "ok": True, "result": r} for i, r in zip(items, results, strict=True)]
            else:
                error = one.get("error") or {
                    "type": "BatchResultMismatch",
                    "message": f"batch handler must return a list of {len(items)} results",
                }
                replies = [{"id": i.get("id"), "ok": False, "error": error} for i in items]
            if replies:
                replies[0].update(stdout=one["stdout"], stderr=one["stderr"], logs_truncated=one["logs_truncated"])
            for reply in replies:
                reply.setdefault("duration_ms", one["duration_ms"])
            return {"type": "batch_result", "id": frame.get("id"), "results": replies}
        replies = [await self.run_one(item, timeout_ms) for item in items]
        return {"type": "batch_result", "id": frame.get("id"), "results": replies}

    async def serve_request(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "batch":
            reply = await self.run_batch(frame)
        else:
            reply = await self.run_one(frame, int(frame.get("timeout_ms", 30000)))
            reply["type"] = "result"
        await self.send(reply)

    async def serve(self) -> None:
        await self.send(
            {"type": "hello", "runtime": "python", "runtime_version": platform.python_version(), "pid": os.getpid()}
        )
        init = await self.read()
        started = time.perf_counter()
        try:
            self.load(init)
        except BaseException as exc:  # report every load failure, then wait
            await self.send({"type": "init_error", "error": describe(exc)})
            await self.reader.read()
            return
        await self.send({"type": "ready", "init_ms": round((time.perf_counter() - started) * 1000, 3)})
        while True:
            frame = await self.read()
            if self.inline and frame.get("type") == "invoke":
                await self.serve_request(frame)  # concurrency 1: the host sends one request at a time
                continue
            task = asyncio.create_task(self.serve_request(frame))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)


async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = os.environ.get("HEARTH_AGENT_PORT")
    if port:  # microVMs: a virtio-serial port
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0))
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(os.dup(fd), "wb", 0)
        )
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
    path = os.environ.get("HEARTH_AGENT_SOCKET", "/hearth/agent.sock")
    deadline = time.monotonic() + 5
    while True:
        try:
            return await asyncio.open_unix_connection(path, limit=2**20)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.005)


async def main() -> None:
    reader, writer = await connect()
    sys.stdout = CapturingStream("stdout", sys.__stdout__)
    sys.stderr = CapturingStream("stderr", sys.__stderr__)
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):  # the host closed the stream
        await Agent(reader, writer).serve()


if __name__ == "__main__":
    asyncio.run(main())
    os._exit(0)  # do not wait for handler threads or daemon children the function left behind
