"""Hearth's in-sandbox agent for Python functions (stdlib only; protocol in docs/protocol.md).

Connects to the host, loads the function once, then serves invoke and batch frames with blocking
I/O: a sync handler with concurrency 1 runs right in the read loop (no threads, no event loop: the
fastest path), sync handlers with concurrency > 1 in a thread pool, async handlers on an event loop
in a second thread. Each invocation's stdout/stderr is captured on its own, also when several run
at once.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import io
import json
import os
import resource
import socket
import struct
import sys
import threading
import time
from typing import Any

# asyncio, concurrent.futures, inspect and traceback are imported where needed: asyncio alone
# costs ~40 ms of start-up, which every cold start would pay.
CO_COROUTINE = 0x80

HEADER = struct.Struct(">I")
MAX_FRAME = 128 * 1024 * 1024
AGENT_FILE = os.path.abspath(__file__)


class Capture:
    """One invocation's captured output: two capped buffers."""

    def __init__(self, limit: int) -> None:
        # Process CPU time, so with concurrency > 1 it includes the neighbours' work (docs/metrics.md).
        self.cpu_started = time.process_time()
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
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) != AGENT_FILE]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(type(exc), exc)
    return {"type": type(exc).__name__, "message": str(exc), "traceback": "".join(lines)}


def is_coroutine_function(handler: Any) -> bool:
    code = getattr(handler, "__code__", None)
    if code is not None:
        return bool(code.co_flags & CO_COROUTINE)
    import inspect  # callable objects and partials: rare, so the slower check is fine

    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(type(handler).__call__)


class Frames:
    """Blocking length-prefixed JSON frames over a file descriptor (Unix socket or virtio-serial port)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def _exact(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = os.read(self.fd, size - len(chunks))
            if not chunk:
                raise EOFError("host closed the stream")
            chunks += chunk
        return bytes(chunks)

    def read(self) -> dict[str, Any]:
        (length,) = HEADER.unpack(self._exact(HEADER.size))
        if length > MAX_FRAME:
            raise EOFError(f"frame of {length} bytes")
        frame = json.loads(self._exact(length))
        if not isinstance(frame, dict):
            raise EOFError("frame is not an object")
        return frame

    def send(self, frame: dict[str, Any], raw_result: str | None = None) -> None:
        """Send `frame`; `raw_result` is an already-encoded JSON result spliced in as "result"."""
        text = json.dumps(frame, separators=(",", ":"), allow_nan=False)
        if raw_result is not None:
            text = text[:-1] + ',"result":' + raw_result + "}"
        body = text.encode()
        data = memoryview(HEADER.pack(len(body)) + body)
        with self.lock:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]


def write_files(files: Any) -> None:
    """Write the files an init frame carries (microVMs share no directory with the host).

    `files`: [{"path": absolute path, "data": base64, "mode": 0o644}], written before the code loads.
    """
    if not files:
        return
    import base64

    for item in files:
        path = str(item["path"])
        if not path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"invalid file path {path!r}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, int(item.get("mode", 0o644)) & 0o755)
        with os.fdopen(fd, "wb") as handle:
            handle.write(base64.b64decode(item["data"]))


class Agent:
    def __init__(self, frames: Frames) -> None:
        self.frames = frames
        self.init: dict[str, Any] = {}
        self.handler: Any = None
        self.is_async = False
        self.concurrency = 1

    def load(self, init: dict[str, Any]) -> None:
        self.init = init
        write_files(init.get("files"))
        os.environ.update({str(k): str(v) for k, v in (init.get("env") or {}).items()})
        os.environ["AWS_LAMBDA_FUNCTION_NAME"] = str(init.get("function_name", ""))
        os.environ["AWS_LAMBDA_FUNCTION_VERSION"] = str(init.get("function_version", ""))
        os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = str(init.get("memory_limit_in_mb", ""))
        code_dir = init["code_dir"]
        for extra in init.get("paths") or []:  # dependency layers; code_dir goes before them
            sys.path.insert(0, str(extra))
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
        self.is_async = is_coroutine_function(handler)
        self.concurrency = max(1, int(init.get("concurrency", 1)))

    # ----- one invocation: start capturing, call, finish into a reply (never raises)
    def _begin(self) -> tuple[Capture, contextvars.Token[Capture | None], float]:
        capture = Capture(int(self.init.get("max_log_bytes", 65536)))
        return capture, CURRENT.set(capture), time.perf_counter()

    def _reply(
        self, item_id: str, outcome: tuple[bool, Any], capture: Capture, started: float
    ) -> tuple[dict[str, Any], str | None]:
        """(reply without its result, the result encoded as JSON or None)."""
        ok, value = outcome
        reply: dict[str, Any] = {"id": item_id, "ok": ok}
        encoded: str | None = None
        if ok:
            encoded, error = self.encode_result(value)
            if error is not None:
                reply.update(ok=False, error=error)
        else:
            reply["error"] = describe(value)
        reply["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        reply["cpu_ms"] = round((time.process_time() - capture.cpu_started) * 1000, 3)
        reply["max_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        reply["stdout"] = capture.text("stdout")
        reply["stderr"] = capture.text("stderr")
        reply["logs_truncated"] = capture.truncated
        return reply, encoded

    def encode_result(self, value: Any) -> tuple[str | None, dict[str, Any] | None]:
        try:
            encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            return None, {"type": "ResultNotSerializable", "message": str(exc), "traceback": ""}
        limit = int(self.init.get("max_result_bytes", 6 * 1024 * 1024))
        if len(encoded) > limit:
            message = f"result of {len(encoded)} bytes is over the limit of {limit} bytes"
            return None, {"type": "ResultTooLarge", "message": message, "traceback": ""}
        return encoded, None

    def run_sync(self, item_id: str, event: Any, timeout_ms: int) -> tuple[dict[str, Any], str | None]:
        capture, token, started = self._begin()
        try:
            outcome: tuple[bool, Any] = (True, self.handler(event, Context(self.init, item_id, timeout_ms)))
        except BaseException as exc:  # SystemExit and friends must not end the agent
            outcome = (False, exc)
        finally:
            CURRENT.reset(token)
        return self._reply(item_id, outcome, capture, started)

    async def run_async(self, item_id: str, event: Any, timeout_ms: int) -> tuple[dict[str, Any], str | None]:
        capture, token, started = self._begin()
        try:
            outcome: tuple[bool, Any] = (True, await self.handler(event, Context(self.init, item_id, timeout_ms)))
        except BaseException as exc:  # SystemExit and friends must not end the agent
            if type(exc).__name__ == "CancelledError":
                raise
            outcome = (False, exc)
        finally:
            CURRENT.reset(token)
        return self._reply(item_id, outcome, capture, started)

    # ----- frames
    def respond_invoke(self, frame: dict[str, Any], done: tuple[dict[str, Any], str | None]) -> None:
        reply, encoded = done
        reply["type"] = "result"
        self.frames.send(reply, encoded)

    def respond_batch(self, frame: dict[str, Any], replies: list[tuple[dict[str, Any], str | None]]) -> None:
        results = []
        for reply, encoded in replies:
            if encoded is not None:
                reply["result"] = json.loads(encoded)
            results.append(reply)
        self.frames.send({"type": "batch_result", "id": frame.get("id"), "results": results})

    def batch_from_handler(
        self, frame: dict[str, Any], one: tuple[dict[str, Any], str | None]
    ) -> list[tuple[dict[str, Any], str | None]]:
        """Split one call of a batch handler (a list in, a list out) into per-item replies."""
        items = frame.get("items") or []
        reply, encoded = one
        results = json.loads(encoded) if encoded is not None else None
        if isinstance(results, list) and len(results) == len(items):
            replies = [({"id": i.get("id"), "ok": True}, json.dumps(r)) for i, r in zip(items, results, strict=True)]
        else:
            error = reply.get("error") or {
                "type": "BatchResultMismatch",
                "message": f"batch handler must return a list of {len(items)} results",
                "traceback": "",
            }
            replies = [({"id": i.get("id"), "ok": False, "error": error}, None) for i in items]
        for k, (item_reply, _) in enumerate(replies):
            item_reply["duration_ms"] = reply["duration_ms"]
            item_reply["stdout"] = reply["stdout"] if k == 0 else ""
            item_reply["stderr"] = reply["stderr"] if k == 0 else ""
            item_reply["logs_truncated"] = reply["logs_truncated"] if k == 0 else False
        return replies

    def handle_sync(self, frame: dict[str, Any]) -> None:
        timeout_ms = int(frame.get("timeout_ms", 30000))
        if frame.get("type") == "batch":
            items = frame.get("items") or []
            if frame.get("batch_handler"):
                one = self.run_sync(str(frame.get("id")), [i.get("event") for i in items], timeout_ms)
                replies = self.batch_from_handler(frame, one)
            else:
                replies = [self.run_sync(str(i.get("id")), i.get("event"), timeout_ms) for i in items]
            self.respond_batch(frame, replies)
        else:
            self.respond_invoke(frame, self.run_sync(str(frame.get("id")), frame.get("event"), timeout_ms))

    async def handle_async(self, frame: dict[str, Any]) -> None:
        timeout_ms = int(frame.get("timeout_ms", 30000))
        if frame.get("type") == "batch":
            items = frame.get("items") or []
            if frame.get("batch_handler"):
                one = await self.run_async(str(frame.get("id")), [i.get("event") for i in items], timeout_ms)
                replies = self.batch_from_handler(frame, one)
            else:
                replies = [await self.run_async(str(i.get("id")), i.get("event"), timeout_ms) for i in items]
            self.respond_batch(frame, replies)
        else:
            self.respond_invoke(frame, await self.run_async(str(frame.get("id")), frame.get("event"), timeout_ms))

    def serve(self) -> None:
        frames = self.frames
        frames.send(
            {"type": "hello", "runtime": "python", "runtime_version": sys.version.split()[0], "pid": os.getpid()}
        )
        init = frames.read()
        while init.get("type") == "warm":  # optional, before init (microVMs)
            started = time.perf_counter()
            try:
                warm()
                frames.send({"type": "warmed", "ms": round((time.perf_counter() - started) * 1000, 3)})
            except Exception as exc:  # a failed warm-up is not fatal: the function loads as it would anyway
                frames.send({"type": "warmed", "error": describe(exc)})
            init = frames.read()
        started = time.perf_counter()
        try:
            self.load(init)
        except BaseException as exc:  # report every load failure, then wait for the host to close
            frames.send({"type": "init_error", "error": describe(exc)})
            while os.read(frames.fd, 65536):
                pass
            return
        frames.send({"type": "ready", "init_ms": round((time.perf_counter() - started) * 1000, 3)})
        if self.is_async:
            import asyncio

            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="handlers", daemon=True).start()
            while True:
                asyncio.run_coroutine_threadsafe(self.handle_async(frames.read()), loop)
        elif self.concurrency > 1:
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="handler")
            while True:
                pool.submit(self.handle_sync, frames.read())
        else:
            while True:  # the host sends one request at a time to a concurrency-1 sandbox
                self.handle_sync(frames.read())


def connect() -> int:
    """A file descriptor connected to the host."""
    inherited = os.environ.get("HEARTH_AGENT_FD")
    if inherited:  # Firecracker microVMs: a vsock connection the guest's supervisor accepted
        return int(inherited)
    port = os.environ.get("HEARTH_AGENT_PORT")
    if port:  # microVMs: a virtio-serial port
        return os.open(port, os.O_RDWR | os.O_NOCTTY)
    path = os.environ.get("HEARTH_AGENT_SOCKET", "/hearth/agent.sock")
    deadline = time.monotonic() + 5
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock.detach()
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def warm() -> None:
    """Load a throwaway function in a nested agent and serve it a few calls over a socket pair.

    Answers the host's optional `warm` frame (sent before `init`, docs/protocol.md): a microVM restored
    under TCG has translated none of the guest's code yet, and this runs the agent's load and invoke
    paths once so that the real function's first load and call do not pay for it. Leaves no trace
    (module, sys.path entry, environment, files).
    """
    import base64
    import shutil

    saved_env, saved_path = dict(os.environ), list(sys.path)
    directory = f"/tmp/.hearth-warm-{os.getpid()}"
    code = b"def handler(event, context):\n    print(event)\n    return {'echo': event}\n"
    host, guest = socket.socketpair()

    def serve() -> None:
        with contextlib.suppress(EOFError, OSError):
            Agent(Frames(guest.fileno())).serve()

    server = threading.Thread(target=serve, name="warm", daemon=True)
    server.start()
    try:
        frames = Frames(host.fileno())
        frames.read()  # hello
        files = [{"path": f"{directory}/hearth_warm.py", "data": base64.b64encode(code).decode()}]
        init = {"type": "init", "code_dir": directory, "module": "hearth_warm", "function": "handler"}
        frames.send({**init, "files": files})
        frames.read()
        for n in range(3):
            frames.send({"type": "invoke", "id": str(n), "event": {"n": n, "s": "x" * 100}, "timeout_ms": 1000})
            frames.read()
    finally:
        host.close()
        server.join(5)
        guest.close()
        sys.modules.pop("hearth_warm", None)
        sys.path[:] = saved_path
        os.environ.clear()
        os.environ.update(saved_env)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    frames = Frames(connect())
    sys.stdout = CapturingStream("stdout", sys.__stdout__)
    sys.stderr = CapturingStream("stderr", sys.__stderr__)
    with contextlib.suppress(EOFError, OSError):  # the host closed the stream: we are done
        Agent(frames).serve()


if __name__ == "__main__":
    main()
    os._exit(0)  # do not wait for handler threads or daemon children the function left behind
