"""The invocation record: built once, by the engine, for every call whatever its entry point.

Callers tell the engine only what it cannot know (how the call arrived, how big its request was);
everything else comes from the result. The record goes to the engine's record sink (the
metrics recorder, which writes it behind the request and fans it out to Prometheus and the log stream).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from hearth.engine.engine import InvocationResult

# How a call arrived (the record's `mode`): the API's invoke and Lambda's Invoke, the HTTP trigger, the async queue.
Trigger = Literal["sync", "http", "async"]
# One row of the invocations table (hearth.store.models.Invocation), as the recorder inserts it.
InvocationRecord = dict[str, Any]
RecordSink = Callable[[InvocationRecord], None]


class CallSite(NamedTuple):
    """What only the caller of `Engine.invoke` knows about a call (a tuple: one is built per call, and a
    frozen dataclass' __init__ costs a setattr call per field)."""

    trigger: Trigger
    request_bytes: int = 0


def as_result(res: InvocationResult) -> InvocationResult:
    """The `answer` of a caller that wants the result itself."""
    return res


def result_bytes(res: InvocationResult) -> int:
    """The size of the function's answer: its result as JSON, or 0 when the call failed."""
    return len(res.result_json or b"") if res.status == "ok" else 0


def invocation_record(res: InvocationResult, call: CallSite) -> InvocationRecord:
    error = res.error or {}
    return {
        "id": res.invocation_id,
        "function_name": res.function,
        "version": res.version,
        "mode": call.trigger,
        "started_at": res.started_at,
        "duration_ms": res.duration_ms,
        "queue_ms": res.queue_ms,
        "status": res.status,
        "path": res.path,
        "backend": res.backend,
        "sandbox_id": res.sandbox_id,
        "error_type": error.get("type"),
        "error_message": (str(error.get("message")) if error else None),
        "stdout": res.stdout,
        "stderr": res.stderr,
        "logs_truncated": res.logs_truncated,
        "request_bytes": call.request_bytes,
        "response_bytes": result_bytes(res),
        "init_ms": res.init_ms,
        "cpu_ms": res.cpu_ms,
        "memory_peak_bytes": res.memory_peak_bytes,
    }
