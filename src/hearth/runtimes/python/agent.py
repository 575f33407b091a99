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
import functools
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
from collections.abc import Callable
from typing import Any

# asyncio, concurrent.futures, inspect and traceback are imported where needed: asyncio alone
# costs ~40 ms of start-up, which every cold start would pay.
CO_COROUTINE = 0x80

HEADER = struct.Struct(">I")
MAX_FRAME = 128 * 1024 * 1024
READ_SIZE = 65536
AGENT_FILE = os.path.abspath(__file__)
# Captures are written to by the handler's threads: one lock for all of them is enough.
CAPTURE_LOCK = threading.Lock()


def compact_encoder(ensure_ascii: bool) -> Callable[[Any], str]:
    """`json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=ensure_ascii)`, made faster.

    json.dumps builds a new encoder for every call, which costs more than encoding a small reply: this C
    encoder is built once, without circular-reference marks so that it keeps no state and threads may share
    it. Whatever it fails on is encoded again by json.dumps, which raises what it always did (ValueError for
    a circular reference, where the fast encoder hits the recursion limit).
    """
    slow = functools.partial(json.dumps, separators=(",", ":"), allow_nan=False, ensure_ascii=ensure_ascii)
    from json import encoder as stdlib

    escape = stdlib.encode_basestring_ascii if ensure_ascii else stdlib.encode_basestring
    try:
        fast = stdlib.c_make_encoder(None, json.JSONEncoder().default, escape, None, ":", ",", False, False, False)
    except TypeError:  # no C accelerator (c_make_encoder is None), or a signature this does not know
        return slow

    def encode(value: Any) -> str:
        try:
            return "".join(fast(value, 0))
        except Exception:
            return slow(value)

    return encode


encode_frame = compact_encoder(ensure_ascii=True)
encode_value = compact_encoder(ensure_ascii=False)
SCAN = json.JSONDecoder().scan_once  # the C scanner json.loads ends up in, without json.loads' checks


def decode_frame(body: bytes) -> Any:
    """The JSON object that starts a frame's body (a newline and a payload may follow it), as json.loads reads it."""
    text = body.decode("utf-8", "surrogatepass").partition("\n")[0]
    try:
        value, end = SCAN(text, 0)
    except StopIteration:
        end = -1
    if end != len(text):  # whitespace around it, or not JSON: json.loads answers as it always did
        value = json.loads(text)
    return value


def cpu_seconds() -> float:
    """This process' CPU time, from the getrusage call that also gives its peak memory (docs/metrics.md)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Capture:
    """One invocation's captured output: two capped buffers."""

    __slots__ = ("limit", "parts", "sizes", "truncated")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # Made at the first write: most calls write nothing.
        self.parts: dict[str, list[str]] | None = None
        self.sizes: dict[str, int] = {}
        self.truncated = False

    def write(self, stream: str, text: str) -> None:
        with CAPTURE_LOCK:
            if self.parts is None:
                self.parts, self.sizes = {"stdout": [], "stderr": []}, {"stdout": 0, "stderr": 0}
            room = self.limit - self.sizes[stream]
            if len(text) > room:
                text = text[: max(room, 0)]
                self.truncated = True
            if text:
                self.parts[stream].append(text)
                self.sizes[stream] += len(text)

    def text(self, stream: str) -> str:
        return "" if self.parts is None else "".join(self.parts[stream])


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


class CognitoIdentity:
    """`context.identity` (as awslambdaric's lambda_context.py): Cognito ids, None unless Cognito called."""

    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]

    def __init__(self, identity: dict[str, Any] | None = None) -> None:
        identity = identity or {}
        self.cognito_identity_id = identity.get("cognitoIdentityId")
        self.cognito_identity_pool_id = identity.get("cognitoIdentityPoolId")

    def __repr__(self) -> str:
        return (
            f"CognitoIdentity([cognito_identity_id={self.cognito_identity_id},"
            f"cognito_identity_pool_id={self.cognito_identity_pool_id}])"
        )


class Client:
    __slots__ = ["app_package_name", "app_title", "app_version_code", "app_version_name", "installation_id"]


class ClientContext:
    __slots__ = ["client", "custom", "env"]


def _from_dict(cls: Any, values: dict[str, Any] | None) -> Any:
    if values is None:
        return None
    obj = cls()
    for name in cls.__slots__:
        setattr(obj, name, values.get(name))
    return obj


# What a context reads from the environment, in the order of Context's attributes.
CONTEXT_ENV = (
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
)


class ContextEnv:
    """`os.environ.get` of CONTEXT_ENV, as every call reads them, decoded again only when they changed.

    Five os.environ.get calls cost more than the rest of a context. os.environ keeps the encoded values in
    its `_data` dict and stores a new bytes object on every change, so comparing those finds any change.
    """

    def __init__(self) -> None:
        self.environ = os.environ
        data = getattr(os.environ, "_data", None)
        self.data: dict[Any, Any] | None = data if isinstance(data, dict) else None
        encodekey = getattr(os.environ, "encodekey", None)
        self.keys = tuple(map(encodekey, CONTEXT_ENV)) if encodekey is not None else ()
        self.raw: tuple[Any, ...] | None = None
        self.values: tuple[str | None, ...] = ()

    def current(self) -> tuple[str | None, ...]:
        if self.data is None or not self.keys or os.environ is not self.environ:
            return tuple(map(os.environ.get, CONTEXT_ENV))
        raw = tuple(map(self.data.get, self.keys))
        if raw != self.raw:
            self.raw, self.values = raw, tuple(map(os.environ.get, CONTEXT_ENV))
        return self.values


CONTEXT_ENV_VALUES = ContextEnv()


class Context:
    """The context object handed to the handler: the attributes of Lambda's (awslambdaric's LambdaContext).

    As there, `function_name`, `function_version`, `memory_limit_in_mb`, `log_group_name` and
    `log_stream_name` come from the environment variables Lambda defines (so they are strings).
    """

    def __init__(self, init: dict[str, Any], invocation_id: str, timeout_ms: int, frame: dict[str, Any]) -> None:
        self.aws_request_id = self.invocation_id = invocation_id
        (
            self.log_group_name,
            self.log_stream_name,
            self.function_name,
            self.memory_limit_in_mb,
            self.function_version,
        ) = CONTEXT_ENV_VALUES.current()
        self.invoked_function_arn = frame.get("invoked_function_arn") or init.get("invoked_function_arn")
        self.tenant_id = frame.get("tenant_id")
        self.client_context = _from_dict(ClientContext, frame.get("client_context"))
        if self.client_context is not None:
            self.client_context.client = _from_dict(Client, self.client_context.client)
        self.identity = CognitoIdentity(frame.get("identity"))
        self._deadline = time.monotonic() + timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def log(self, msg: Any) -> None:
        sys.stdout.write(str(msg))

    def __repr__(self) -> str:
        fields = ("aws_request_id", "log_group_name", "log_stream_name", "function_name", "memory_limit_in_mb")
        fields += ("function_version", "invoked_function_arn", "client_context", "identity", "tenant_id")
        return f"LambdaContext([{','.join(f'{name}={getattr(self, name)}' for name in fields)}])"


# ----- Lambda's error shapes and log lines (awslambdaric's bootstrap.py)
ERROR_LOG_IDENT = "\u00a0"  # Lambda indents traceback lines in the log with no-break spaces


class FaultError(Exception):
    """A load failure Lambda names itself: Runtime.ImportModuleError, Runtime.HandlerNotFound, ..."""

    def __init__(self, error_type: str, message: str, trace: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type, self.message, self.trace = error_type, message, trace or []


def describe(exc: BaseException) -> dict[str, Any]:
    """Hearth's error (`type`, `message`, `traceback`) plus Lambda's `stack_trace` (its stackTrace list)."""
    import traceback

    if isinstance(exc, FaultError):
        trace = exc.trace
        return {"type": exc.error_type, "message": exc.message, "traceback": "".join(trace), "stack_trace": trace}
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if os.path.abspath(f.filename) != AGENT_FILE and not f.filename.startswith("<frozen importlib")
    ]
    listed = traceback.format_list(frames)
    lines = ["Traceback (most recent call last):\n", *listed, *traceback.format_exception_only(type(exc), exc)]
    return {"type": type(exc).__name__, "message": str(exc), "traceback": "".join(lines), "stack_trace": listed}


def error_log(error: dict[str, Any]) -> str:
    """The `[ERROR] Type: message` record Lambda's runtime writes to the function's log for an unhandled error."""
    line = "[ERROR]"
    if error.get("type"):
        line += " " + str(error["type"]) + (":" if error.get("message") else "")
    if error.get("message"):
        line += " " + str(error["message"])
    lines = [line]
    if error.get("stack_trace") is not None:
        lines.append("Traceback (most recent call last):")
        for element in error["stack_trace"]:
            for text in element.splitlines() or [""]:
                stripped = text.lstrip(" ")
                lines.append(ERROR_LOG_IDENT * (len(text) - len(stripped)) + stripped)
    return "\n".join(lines) + "\n"


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("hearth_request_id", default="")


def setup_logging() -> None:
    """The root logger as Lambda's Python runtime sets it up: its handler and format, UTC, AWS_LAMBDA_LOG_LEVEL.

    Records go to stdout, so they land in the current invocation's log.
    """
    import logging

    class RequestIdFilter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.aws_request_id = REQUEST_ID.get()
            return True

    class LambdaLoggerHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                sys.stdout.write(self.format(record))
            except Exception:
                self.handleError(record)

    logging.Formatter.converter = time.gmtime
    root = logging.getLogger()
    for old in [h for h in root.handlers if type(h).__name__ == "LambdaLoggerHandler"]:
        root.removeHandler(old)
    handler = LambdaLoggerHandler()
    fmt = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n"
    handler.setFormatter(logging.Formatter(fmt, "%Y-%m-%dT%H:%M:%S"))
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    wanted = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
    level = {"TRACE": "DEBUG"}.get(wanted, wanted)
    if level in ("DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL", "FATAL"):
        root.setLevel(level)


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
        self.pending = b""  # read past the last frame: usually nothing, as the host sends one frame at a time

    def _chunk(self) -> bytes:
        chunk = os.read(self.fd, READ_SIZE)
        if not chunk:
            raise EOFError("host closed the stream")
        return chunk

    def _body(self, data: bytes, end: int) -> bytes:
        """The rest of a frame longer than what was read: read into place, no more than the frame."""
        buffer = bytearray(end)
        buffer[: len(data)] = data
        view, filled = memoryview(buffer), len(data)
        while filled < end:
            count = os.readv(self.fd, [view[filled:]])
            if not count:
                raise EOFError("host closed the stream")
            filled += count
        return bytes(view[HEADER.size :])

    def read(self) -> dict[str, Any]:
        """The next frame, with one read call when it is small (most are)."""
        data = self.pending or self._chunk()
        while len(data) < HEADER.size:
            data += self._chunk()
        (length,) = HEADER.unpack_from(data)
        if length > MAX_FRAME:
            raise EOFError(f"frame of {length} bytes")
        end = HEADER.size + length
        if len(data) >= end:
            body, self.pending = data[HEADER.size : end], data[end:]
        else:
            body, self.pending = self._body(data, end), b""
        frame = decode_frame(body)
        if not isinstance(frame, dict):
            raise EOFError("frame is not an object")
        return frame

    def send(self, frame: dict[str, Any], payload: bytes | None = None) -> None:
        """Send `frame`, followed by a newline and `payload` (encoded results) if there is one: one write call."""
        body = encode_frame(frame).encode()
        if payload is None:
            data = HEADER.pack(len(body)) + body
        else:
            data = b"".join((HEADER.pack(len(body) + 1 + len(payload)), body, b"\n", payload))
        with self.lock:
            written = os.write(self.fd, data)
            if written < len(data):
                rest = memoryview(data)[written:]
                while rest:
                    rest = rest[os.write(self.fd, rest) :]


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


def import_handler(code_dir: str, module_path: str, function: str) -> Any:
    """The handler `function` of `module_path` (`pkg/module`), as awslambdaric's `_get_handler` reports failures."""
    if not module_path or module_path.startswith("/") or ".." in module_path.split("/"):
        raise FaultError("Runtime.MalformedHandlerName", f"Bad handler '{module_path}.{function}'")
    dotted = module_path.replace("/", ".")
    if dotted.split(".")[0] in sys.builtin_module_names:
        raise FaultError("Runtime.BuiltInModuleConflict", f"Cannot use built-in module {dotted} as a handler module")
    path = os.path.join(code_dir, module_path + ".py")
    if not os.path.isfile(path):
        package_init = os.path.join(code_dir, module_path, "__init__.py")
        if not os.path.isfile(package_init):
            message = f"Unable to import module '{module_path}': No module named '{dotted}'"
            raise FaultError("Runtime.ImportModuleError", message)
        path = package_init
    spec = importlib.util.spec_from_file_location(dotted, path)
    if spec is None or spec.loader is None:
        raise FaultError("Runtime.ImportModuleError", f"Unable to import module '{module_path}': cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[dotted] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        sys.modules.pop(dotted, None)
        raise FaultError("Runtime.ImportModuleError", f"Unable to import module '{module_path}': {exc}") from None
    except SyntaxError as exc:
        sys.modules.pop(dotted, None)
        trace = [f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}']
        message = f"Syntax error in module '{module_path}': {exc}"
        raise FaultError("Runtime.UserCodeSyntaxError", message, trace) from None
    try:
        return getattr(module, function)
    except AttributeError:
        raise FaultError("Runtime.HandlerNotFound", f"Handler '{function}' missing on module '{module_path}'") from None


class Agent:
    def __init__(self, frames: Frames) -> None:
        self.frames = frames
        self.init: dict[str, Any] = {}
        self.handler: Any = None
        self.is_async = False
        self.concurrency = 1
        self.max_log_bytes = 65536
        self.max_result_bytes = 6 * 1024 * 1024

    def load(self, init: dict[str, Any]) -> None:
        """Load the function as Lambda's runtime does: its environment, cwd = its code, root logger, handler.

        Raises FaultError (Runtime.ImportModuleError, Runtime.UserCodeSyntaxError, Runtime.HandlerNotFound,
        Runtime.MalformedHandlerName) or whatever the module's own code raised while it was imported.
        """
        self.init = init
        write_files(init.get("files"))
        os.environ.update({str(k): str(v) for k, v in (init.get("env") or {}).items()})
        if os.environ.get("TZ") and hasattr(time, "tzset"):
            time.tzset()
        code_dir = str(init["code_dir"])
        for extra in init.get("paths") or []:  # dependency layers; code_dir goes before them
            sys.path.insert(0, str(extra))
        sys.path.insert(0, code_dir)
        with contextlib.suppress(OSError):  # open("data.json") at import finds the function's files
            os.chdir(code_dir)
        setup_logging()
        self.handler = import_handler(code_dir, str(init["module"]), str(init["function"]))
        self.is_async = is_coroutine_function(self.handler)
        self.concurrency = max(1, int(init.get("concurrency", 1)))
        self.max_log_bytes = int(init.get("max_log_bytes", 65536))
        self.max_result_bytes = int(init.get("max_result_bytes", 6 * 1024 * 1024))

    # ----- one invocation: start capturing, call, finish into a reply (never raises)
    def _begin(self, item_id: str) -> tuple[Capture, contextvars.Token[Capture | None], float, float]:
        """(capture, its token, start time, CPU time at the start)."""
        capture = Capture(self.max_log_bytes)
        REQUEST_ID.set(item_id)  # the logging filter's aws_request_id (per thread / task)
        # Process CPU time, so with concurrency > 1 it includes the neighbours' work (docs/metrics.md).
        return capture, CURRENT.set(capture), time.perf_counter(), cpu_seconds()

    def _reply(
        self, item_id: str, outcome: tuple[bool, Any], capture: Capture, started: float, cpu_started: float
    ) -> tuple[dict[str, Any], bytes | None]:
        """(reply without its result, the result encoded as JSON or None)."""
        ok, value = outcome
        reply: dict[str, Any] = {"id": item_id, "ok": ok}
        encoded: bytes | None = None
        if ok:
            encoded, error = self.encode_result(value)
            if error is not None:
                reply.update(ok=False, error=error)
            else:
                reply["result_bytes"] = len(encoded or b"")
        else:
            reply["error"] = describe(value)
        if not reply["ok"]:  # Lambda's runtime logs every unhandled error with its traceback
            capture.write("stdout", error_log(reply["error"]))
        reply["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        reply["cpu_ms"] = round((usage.ru_utime + usage.ru_stime - cpu_started) * 1000, 3)
        reply["max_rss_kb"] = usage.ru_maxrss
        reply["stdout"] = capture.text("stdout")
        reply["stderr"] = capture.text("stderr")
        reply["logs_truncated"] = capture.truncated
        return reply, encoded

    def encode_result(self, value: Any) -> tuple[bytes | None, dict[str, Any] | None]:
        """The result as JSON in UTF-8 (encoded once: the host passes these bytes on), or why it cannot be."""
        try:
            text = encode_value(value)
            try:
                encoded = text.encode()
            except UnicodeEncodeError:  # a lone surrogate: only its \u escape is valid JSON
                encoded = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            return None, {"type": "ResultNotSerializable", "message": str(exc), "traceback": ""}
        limit = self.max_result_bytes
        if len(encoded) > limit:
            message = f"result of {len(encoded)} bytes is over the limit of {limit} bytes"
            return None, {"type": "ResultTooLarge", "message": message, "traceback": ""}
        return encoded, None

    def run_sync(
        self, item_id: str, event: Any, timeout_ms: int, frame: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], bytes | None]:
        capture, token, started, cpu_started = self._begin(item_id)
        try:
            context = Context(self.init, item_id, timeout_ms, frame or {})
            outcome: tuple[bool, Any] = (True, self.handler(event, context))
        except BaseException as exc:  # SystemExit and friends must not end the agent
            outcome = (False, exc)
        finally:
            CURRENT.reset(token)
        return self._reply(item_id, outcome, capture, started, cpu_started)

    async def run_async(
        self, item_id: str, event: Any, timeout_ms: int, frame: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], bytes | None]:
        capture, token, started, cpu_started = self._begin(item_id)
        try:
            context = Context(self.init, item_id, timeout_ms, frame or {})
            outcome: tuple[bool, Any] = (True, await self.handler(event, context))
        except BaseException as exc:  # SystemExit and friends must not end the agent
            if type(exc).__name__ == "CancelledError":
                raise
            outcome = (False, exc)
        finally:
            CURRENT.reset(token)
        return self._reply(item_id, outcome, capture, started, cpu_started)

    # ----- frames
    def respond_invoke(self, frame: dict[str, Any], done: tuple[dict[str, Any], bytes | None]) -> None:
        reply, encoded = done
        reply["type"] = "result"
        self.frames.send(reply, encoded)

    def respond_batch(self, frame: dict[str, Any], replies: list[tuple[dict[str, Any], bytes | None]]) -> None:
        """One frame for the batch: the replies, then their results in order as the payload."""
        payload = b"".join(encoded for _, encoded in replies if encoded is not None)
        self.frames.send({"type": "batch_result", "id": frame.get("id"), "results": [r for r, _ in replies]}, payload)

    def handle_sync(self, frame: dict[str, Any]) -> None:
        timeout_ms = int(frame.get("timeout_ms", 30000))
        if frame.get("type") == "batch":
            items = frame.get("items") or []
            self.respond_batch(frame, [self.run_sync(str(i.get("id")), i.get("event"), timeout_ms, i) for i in items])
        else:
            self.respond_invoke(frame, self.run_sync(str(frame.get("id")), frame.get("event"), timeout_ms, frame))

    async def handle_async(self, frame: dict[str, Any]) -> None:
        timeout_ms = int(frame.get("timeout_ms", 30000))
        if frame.get("type") == "batch":
            items = frame.get("items") or []
            replies = [await self.run_async(str(i.get("id")), i.get("event"), timeout_ms, i) for i in items]
            self.respond_batch(frame, replies)
        else:
            self.respond_invoke(
                frame, await self.run_async(str(frame.get("id")), frame.get("event"), timeout_ms, frame)
            )

    def serve(self) -> None:
        frames = self.frames
        frames.send(
            {"type": "hello", "runtime": "python", "runtime_version": sys.version.split()[0], "pid": os.getpid()}
        )
        # Lambda's root logger is set up at load (setup_logging): importing logging takes tens of ms, paid
        # here while a stem cell waits for its function rather than on the first call's path.
        import logging  # noqa: F401

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
        capture = Capture(int(init.get("max_log_bytes", 65536)))  # what the code printed while it loaded
        token = CURRENT.set(capture)
        try:
            self.load(init)
        except BaseException as exc:  # report every load failure, then wait for the host to close
            error = describe(exc)
            capture.write("stdout", error_log(error))
            error["log"] = capture.text("stdout") + capture.text("stderr")
            CURRENT.reset(token)
            frames.send({"type": "init_error", "error": error})
            while os.read(frames.fd, 65536):
                pass
            return
        CURRENT.reset(token)
        init_log = capture.text("stdout") + capture.text("stderr")
        frames.send({"type": "ready", "init_ms": round((time.perf_counter() - started) * 1000, 3), "log": init_log})
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
